//! AFL++ target: [`inkan_fuzz::est_body`] (what it parses is documented there).
fn main() {
    afl::fuzz!(|data: &[u8]| inkan_fuzz::est_body(data));
}
