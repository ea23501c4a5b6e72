//! What the CLI reads from files: PEM or DER certificates (CA certificates, a chain) and CRLs.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok(der) = pki::encoding::decode_one(data, "certificate", &["CERTIFICATE"]) {
            let _ = pki::certificate::Summary::from_der(&der);
            let _ = pki::IssuerInfo::from_der(&der);
        }
        let _ = pki::certificate::Summary::from_der(data);
        let _ = pki::crl::validity(data);
        let _ = pki::encoding::check_der_lengths(data, "input");
    });
}
