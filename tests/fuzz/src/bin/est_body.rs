//! An EST enrollment request as the server decodes it: the `Authorization: Basic` header and
//! the base64 `application/pkcs10` body. The input is the header value, a NUL byte, the body.
use axum::http::{HeaderMap, HeaderValue, header};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let (authorization, body) = match data.iter().position(|&b| b == 0) {
            Some(at) => (&data[..at], &data[at + 1..]),
            None => (&data[..0], data),
        };
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/pkcs10"));
        if let Ok(value) = HeaderValue::from_bytes(authorization) {
            headers.insert(header::AUTHORIZATION, value);
        }
        let _ = enroll_server::est::basic_credentials(&headers);
        let _ = enroll_server::est::csr_of(&headers, body);
    });
}
