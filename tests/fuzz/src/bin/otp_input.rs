//! AFL++ target: [`inkan_fuzz::otp_input`] (what it parses is documented there).
fn main() {
    afl::fuzz!(|data: &[u8]| inkan_fuzz::otp_input(data));
}
