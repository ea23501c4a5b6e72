//! One line on the admin socket: the operator's request as the service decodes it.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let _ = serde_json::from_slice::<enroll_server::admin::AdminRequest>(data);
    });
}
