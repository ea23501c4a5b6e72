//! AFL++ target: [`inkan_fuzz::csr`] (what it parses is documented there).
fn main() {
    afl::fuzz!(|data: &[u8]| inkan_fuzz::csr(data));
}
