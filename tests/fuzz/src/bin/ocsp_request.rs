//! An OCSP request (POST body or decoded GET path), and a response read back.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let _ = pki::ocsp::parse_request(data);
        let _ = pki::ocsp::response_validity(data);
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = pki::encoding::base64_decode(text);
        }
    });
}
