//! A CSR as PEM or DER: strict parsing, key policy, proof of possession.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let _ = pki::csr::validate(data);
        let _ = pki::csr::public_key_sha256(data);
    });
}
