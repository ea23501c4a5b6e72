//! AFL++ target: [`inkan_fuzz::signer_frame`] (what it parses is documented there).
fn main() {
    afl::fuzz!(|data: &[u8]| inkan_fuzz::signer_frame(data));
}
