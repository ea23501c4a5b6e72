//! One frame on the signer's socket, answered by a real signer over a throwaway CA.
fn main() {
    // A panic ends the run (it is the finding); nothing is shared across one.
    let signer = std::panic::AssertUnwindSafe(inkan_fuzz::signer());
    afl::fuzz!(|data: &[u8]| {
        let signer = &signer;
        let _ = ca::remote::answer(signer.0, data);
    });
}
