//! AFL++ target: [`inkan_fuzz::pem_input`] (what it parses is documented there).
fn main() {
    afl::fuzz!(|data: &[u8]| inkan_fuzz::pem_input(data));
}
