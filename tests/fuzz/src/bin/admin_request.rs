//! AFL++ target: [`inkan_fuzz::admin_request`] (what it parses is documented there).
fn main() {
    afl::fuzz!(|data: &[u8]| inkan_fuzz::admin_request(data));
}
