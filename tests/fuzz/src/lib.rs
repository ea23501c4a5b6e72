//! The fuzz targets' bodies, one function per target: what inkan parses from outside.
//!
//! Each `src/bin/TARGET.rs` hands AFL++'s inputs to its function here (`tests/fuzz/run.sh`);
//! the workspace's test `inkan-tests::fuzz_corpus` includes this file and runs every function
//! over its seed corpus and mutations of it on every test run. A function may refuse its input
//! in any way but must not panic, hang or abort.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::http::{HeaderMap, HeaderValue, header};

/// A target: its name (its corpus is `corpus/NAME`) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("csr", csr),
    ("ocsp_request", ocsp_request),
    ("signer_frame", signer_frame),
    ("admin_request", admin_request),
    ("pem_input", pem_input),
    ("est_body", est_body),
    ("otp_input", otp_input),
];

/// A CSR as PEM or DER: strict parsing, key policy, proof of possession.
pub fn csr(data: &[u8]) {
    let _ = pki::csr::validate(data);
    let _ = pki::csr::public_key_sha256(data);
}

/// An OCSP request (POST body or decoded GET path), and a response read back.
pub fn ocsp_request(data: &[u8]) {
    let _ = pki::ocsp::parse_request(data);
    let _ = pki::ocsp::response_validity(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = pki::encoding::base64_decode(text);
    }
}

/// One frame on the signer's socket, answered by a real signer over a throwaway CA.
pub fn signer_frame(data: &[u8]) {
    let _ = ca::remote::answer(signer(), data);
}

/// One line on the admin socket: the operator's request as the service decodes it.
pub fn admin_request(data: &[u8]) {
    let _ = serde_json::from_slice::<enroll_server::admin::AdminRequest>(data);
}

/// What the CLI reads from files: PEM or DER certificates (CA certificates, a chain) and CRLs.
pub fn pem_input(data: &[u8]) {
    if let Ok(der) = pki::encoding::decode_one(data, "certificate", &["CERTIFICATE"]) {
        let _ = pki::certificate::Summary::from_der(&der);
        let _ = pki::IssuerInfo::from_der(&der);
    }
    let _ = pki::certificate::Summary::from_der(data);
    let _ = pki::crl::validity(data);
    let _ = pki::encoding::check_der_lengths(data, "input");
}

/// An EST enrollment request as the server decodes it: the `Authorization: Basic` header and
/// the base64 `application/pkcs10` body. The input is the header value, a NUL byte, the body.
pub fn est_body(data: &[u8]) {
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
}

/// The pre-shared key of the encrypted PSKC inputs.
const PSK: [u8; 16] = *b"inkan fuzz psk!!";

/// What the OTP features parse from outside: a PSKC file of hardware-token seeds (plain, or
/// encrypted with a known pre-shared key), a typed code, customer-card answers and an
/// allowed-names entry. The first byte picks which; the rest is the input.
pub fn otp_input(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    match kind % 4 {
        0 => {
            let _ = enroll_server::pskc::parse(text, Some(&PSK));
            let _ = enroll_server::pskc::parse(text, None);
        }
        1 => {
            let _ = enroll_server::otp::parse_code(text, 6);
            let _ = enroll_server::otp::parse_code(text, 8);
        }
        2 => {
            let card = enroll_server::card::Card::from_bytes(&[7; 40]).expect("a card");
            let answers: BTreeMap<String, String> = text
                .split('&')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            let cells: Vec<String> = answers.keys().cloned().collect();
            let _ = card.check(&cells, &answers);
            for cell in &cells {
                let _ = enroll_server::card::label_ja(cell);
            }
        }
        _ => {
            let _ = text.parse::<pki::names::AllowedName>();
        }
    }
}

/// A signer service over a throwaway CA (no fsync: nothing here must survive), made once.
pub fn signer() -> &'static ca::remote::SignerService {
    static SIGNER: OnceLock<(tempfile::TempDir, ca::remote::SignerService)> = OnceLock::new();
    &SIGNER
        .get_or_init(|| {
            let tmp = tempfile::tempdir().expect("tempdir");
            let dir = ca::layout::DataDir::new(tmp.path().join("data"));
            let root = ca::Passphrase::new("fuzz root passphrase".into());
            let pass = ca::Passphrase::new("fuzz issuing passphrase".into());
            let options = ca::ceremony::InitOptions {
                key_type: ca::CaKeyType::EcdsaP256,
                organization: "inkan fuzz".into(),
                root_days: 3650,
                ca_days: 1825,
                root_crl_url: None,
                root_cert_url: None,
                ca_ocsp_url: None,
                config_toml: String::new(),
                token: None,
            };
            ca::ceremony::init(&dir, &options, &root, &pass, time::OffsetDateTime::now_utc()).expect("init");
            let settings = pki::ProfileSettings {
                organization: "inkan fuzz".into(),
                crl_url: None,
                ca_issuers_url: None,
                ocsp_url: None,
                default_days: 365,
                max_days: 825,
                crl_shards: 1,
            };
            let authorities =
                ca::service::local_authority(&dir, settings, &pass, ca::sled_store::Durability::Unsafe).expect("CA");
            let root_der = ca::layout::read_certificate(&dir.root_cert()).expect("root");
            let ocsp = Some(vec![ca::responder::OcspSigner::new(&dir)]);
            (
                tmp,
                ca::remote::SignerService {
                    authorities,
                    root_der,
                    server_names: vec!["localhost".parse().expect("name")],
                    ocsp,
                    audit: None,
                    ledger: None,
                },
            )
        })
        .1
}
