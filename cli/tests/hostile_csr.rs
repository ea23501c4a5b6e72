//! Hostile and greedy certificate signing requests against the real `inkan issue`: every
//! hostile one is refused with a message that says why, and leaves the registry as it was;
//! greedy ones get only what the profile gives. CSRs come from openssl, some then edited byte
//! by byte or assembled here from parts and signed by openssl.

mod common;

use std::path::Path;

use common::{TestCa, genpkey, openssl, openssl_env, p256_csr, req, s};

/// A DER TLV with a definite length.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// The length of the TLV header at `der[at..]`.
fn header_len(der: &[u8], at: usize) -> usize {
    match der[at + 1] {
        n if n < 0x80 => 2,
        n => 2 + usize::from(n & 0x7f),
    }
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const NULL: &[u8] = &[0x05, 0x00];

/// A CSR assembled here: subject CN=mallory, the given SubjectPublicKeyInfo, no attributes,
/// signed by `key` with openssl (`sign` picks ECDSA-SHA256 or Ed25519), under the given
/// signature AlgorithmIdentifier and BIT STRING unused-bits byte.
struct Assembled<'a> {
    spki: Vec<u8>,
    key: &'a Path,
    ed25519: bool,
    signature_algorithm: Vec<u8>,
    unused_bits: u8,
}

impl Assembled<'_> {
    fn der(&self, work: &Path) -> Vec<u8> {
        let name = tlv(0x30, &tlv(0x31, &tlv(0x30, &cat(&[&tlv(0x06, &[0x55, 0x04, 0x03]), &tlv(0x0c, b"mallory")]))));
        let info = tlv(0x30, &cat(&[&[0x02, 0x01, 0x00], &name, &self.spki, &[0xa0, 0x00]]));
        let tbs = work.join("tbs.bin");
        std::fs::write(&tbs, &info).expect("write");
        let sign = || {
            if self.ed25519 {
                openssl(["pkeyutl", "-sign", "-rawin", "-inkey", s(self.key), "-in", s(&tbs)])
            } else {
                openssl(["dgst", "-sha256", "-sign", s(self.key), s(&tbs)])
            }
            .ok()
            .raw_stdout
        };
        // DER wants the unused bits to be zero: with unused bits announced, draw ECDSA
        // signatures until the last bit is zero, so the BIT STRING itself is valid DER and
        // what is tested is the announcement alone.
        let mut signature = sign();
        while self.unused_bits != 0 && signature.last().is_some_and(|b| b & 1 != 0) {
            signature = sign();
        }
        let bits = tlv(0x03, &cat(&[&[self.unused_bits], &signature]));
        tlv(0x30, &cat(&[&info, &self.signature_algorithm, &bits]))
    }

    fn ec(spki: Vec<u8>, key: &Path) -> Assembled<'_> {
        Assembled {
            spki,
            key,
            ed25519: false,
            signature_algorithm: tlv(0x30, &tlv(0x06, OID_ECDSA_SHA256)),
            unused_bits: 0,
        }
    }

    fn ed25519(spki: Vec<u8>, key: &Path) -> Assembled<'_> {
        Assembled { spki, key, ed25519: true, signature_algorithm: tlv(0x30, &tlv(0x06, OID_ED25519)), unused_bits: 0 }
    }
}

/// The subjectPublicKey bytes of a key, as openssl writes the public key in DER: the last
/// `len` bytes of the SubjectPublicKeyInfo.
fn public_key_bytes(key: &Path, len: usize) -> Vec<u8> {
    let spki = openssl(["pkey", "-in", s(key), "-pubout", "-outform", "DER"]).ok().raw_stdout;
    spki[spki.len() - len..].to_vec()
}

fn ec_spki(parameters: Option<&[u8]>, point: &[u8]) -> Vec<u8> {
    let algorithm = match parameters {
        Some(p) => tlv(0x30, &cat(&[&tlv(0x06, OID_EC_PUBLIC_KEY), p])),
        None => tlv(0x30, &tlv(0x06, OID_EC_PUBLIC_KEY)),
    };
    tlv(0x30, &cat(&[&algorithm, &tlv(0x03, &cat(&[&[0], point]))]))
}

fn ed25519_spki(parameters: Option<&[u8]>, key: &[u8]) -> Vec<u8> {
    let algorithm = tlv(0x30, &cat(&[&tlv(0x06, OID_ED25519), parameters.unwrap_or(&[])]));
    tlv(0x30, &cat(&[&algorithm, &tlv(0x03, &cat(&[&[0], key]))]))
}

/// The DER of a PEM CSR file.
fn der_of(csr: &Path) -> Vec<u8> {
    openssl(["req", "-in", s(csr), "-outform", "DER"]).ok().raw_stdout
}

/// A key from `genpkey ARGS` and a CSR for it with `req EXTRA`, as PEM bytes.
fn openssl_csr(work: &Path, name: &str, genpkey_args: &[&str], extra: &[&str]) -> Vec<u8> {
    let key = genpkey(work, name, genpkey_args);
    std::fs::read(req(work, name, &key, extra)).expect("read csr")
}

/// Deterministic noise (xorshift64), so a failure can be replayed.
fn garbage(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Does openssl accept the CSR's self-signature? (`openssl req -verify` exits 0 either way in
/// OpenSSL 3.0: what it prints is the answer.)
fn openssl_accepts(work: &Path, der: &[u8]) -> bool {
    let file = work.join("check.der");
    std::fs::write(&file, der).expect("write");
    let out = openssl(["req", "-inform", "DER", "-in", s(&file), "-noout", "-verify"]);
    out.status.success() && out.text().contains("self-signature verify OK")
}

#[test]
fn hostile_csrs_are_refused_with_a_reason_and_leave_the_registry_unchanged() {
    let ca = TestCa::init(&[]);
    let w = ca.work();
    let p256 = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
    let rsa2048 = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"];

    // The assembler makes CSRs that openssl and inkan accept: the variants below differ from
    // these in one thing only.
    let good_ec = genpkey(w, "good-ec", &p256);
    let good_ed = genpkey(w, "good-ed", &["-algorithm", "ED25519"]);
    for (name, der) in [
        (
            "assembled-ec",
            Assembled::ec(ec_spki(Some(&tlv(0x06, OID_P256)), &public_key_bytes(&good_ec, 65)), &good_ec).der(w),
        ),
        ("assembled-ed25519", Assembled::ed25519(ed25519_spki(None, &public_key_bytes(&good_ed, 32)), &good_ed).der(w)),
    ] {
        assert!(openssl_accepts(w, &der), "{name}: openssl refuses it");
        let file = w.join(format!("{name}.der"));
        std::fs::write(&file, &der).expect("write");
        ca.issue(&file, "good", name, &[]);
    }
    let snapshot = ca.list_text();
    assert_eq!(ca.list(&[]).len(), 2);

    let base_pem = {
        let key = genpkey(w, "base", &p256);
        std::fs::read(req(w, "base", &key, &["-subj", "/CN=hostile"])).expect("read")
    };
    let base = der_of(&w.join("base.csr"));
    assert!(openssl_accepts(w, &base));
    let other_pem = p256_csr(w, "other");
    let other_pem = std::fs::read(other_pem).expect("read");
    let h_ec = genpkey(w, "h-ec", &p256);
    let h_point = public_key_bytes(&h_ec, 65);
    let h_ed = genpkey(w, "h-ed", &["-algorithm", "ED25519"]);
    let p256_oid = tlv(0x06, OID_P256);

    let mut flipped_signature = base.clone();
    *flipped_signature.last_mut().expect("not empty") ^= 0x01;
    let mut flipped_subject = base.clone();
    let at = flipped_subject.windows(7).position(|w| w == b"hostile").expect("the subject is in the DER");
    flipped_subject[at] ^= 0x20; // "Hostile"
    let mut version_1 = base.clone();
    let version = header_len(&version_1, 0) + header_len(&version_1, header_len(&version_1, 0));
    assert_eq!(&version_1[version..version + 3], [0x02, 0x01, 0x00]);
    version_1[version + 2] = 1;
    // openssl agrees that the edited requests no longer carry a valid self-signature.
    assert!(!openssl_accepts(w, &flipped_signature));
    assert!(!openssl_accepts(w, &flipped_subject));
    let mut off_curve = h_point.clone();
    off_curve[64] ^= 0x01;
    let ca_key = w.join("ca-own.key");
    openssl_env(
        ["pkey", "-in", s(&ca.file("ca/ca.key")), "-passin", "env:INKAN_CA_PASSPHRASE", "-out", s(&ca_key)],
        &TestCa::env(),
    )
    .ok();
    let dsa_params = w.join("dsa.params");
    openssl([
        "genpkey",
        "-genparam",
        "-algorithm",
        "DSA",
        "-pkeyopt",
        "dsa_paramgen_bits:1024",
        "-out",
        s(&dsa_params),
    ])
    .ok();
    let explicit_key = w.join("explicit.key");
    openssl(["ecparam", "-name", "prime256v1", "-param_enc", "explicit", "-genkey", "-out", s(&explicit_key)]).ok();
    let compressed_key = w.join("compressed.key");
    openssl(["ec", "-in", s(&w.join("base.key")), "-conv_form", "compressed", "-out", s(&compressed_key)]).ok();

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty file", vec![], "the CSR is empty"),
        ("only whitespace", b" \n\t\r\n  \n".to_vec(), "the CSR is empty"),
        ("70 KiB of A", vec![b'A'; 70 * 1024], "at most 65536 bytes are accepted"),
        ("random bytes", garbage(512), "is not a valid DER CSR"),
        (
            "PEM with invalid base64",
            b"-----BEGIN CERTIFICATE REQUEST-----\nMIIB!!not*base64@@\n-----END CERTIFICATE REQUEST-----\n".to_vec(),
            "is not valid PEM",
        ),
        ("PEM without an END line", base_pem[..base_pem.len() / 2].to_vec(), "is not valid PEM"),
        (
            "a certificate instead of a CSR",
            std::fs::read(ca.ca_crt()).expect("read"),
            "expected a PEM block labelled \"CERTIFICATE REQUEST\", found \"CERTIFICATE\"",
        ),
        (
            "valid PEM then junk",
            cat(&[&base_pem, b"and one more thing\n"]),
            "followed by 19 more bytes; send exactly one CSR",
        ),
        ("two PEM CSRs", cat(&[&base_pem, &other_pem]), "send exactly one CSR"),
        ("DER plus one byte", cat(&[&base, &[0]]), "followed by 1 more bytes"),
        ("flipped bit in the signature", flipped_signature, "does not verify with its public key"),
        ("flipped byte in the subject", flipped_subject, "does not verify with its public key"),
        ("version 1 (encoded)", version_1, "only version 1 (encoded 0) exists"),
        (
            "RSA-1024",
            openssl_csr(w, "rsa1024", &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"], &[]),
            "RSA key of 1024 bits; accepted: RSA keys of 2048 to 8192 bits",
        ),
        (
            "ECDSA P-521",
            openssl_csr(w, "p521", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521"], &[]),
            "unsupported key: ECDSA key on curve P-521",
        ),
        (
            "secp256k1",
            openssl_csr(w, "k1", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:secp256k1"], &[]),
            "unsupported key: ECDSA key on curve secp256k1",
        ),
        (
            "RSA exponent 3",
            openssl_csr(
                w,
                "e3",
                &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-pkeyopt", "rsa_keygen_pubexp:3"],
                &[],
            ),
            "RSA public exponent 3; accepted: 65537",
        ),
        (
            "P-256 signed with SHA-1",
            openssl_csr(w, "p256sha1", &p256, &["-sha1"]),
            "unsupported signature algorithm ecdsa-with-SHA1",
        ),
        (
            "RSA signed with SHA-1",
            openssl_csr(w, "rsasha1", &rsa2048, &["-sha1"]),
            "unsupported signature algorithm sha1WithRSAEncryption",
        ),
        (
            "RSASSA-PSS key",
            openssl_csr(w, "pss", &["-algorithm", "RSA-PSS", "-pkeyopt", "rsa_keygen_bits:2048"], &[]),
            "unsupported key: RSASSA-PSS key",
        ),
        ("Ed448", openssl_csr(w, "ed448", &["-algorithm", "ED448"], &[]), "unsupported key: Ed448"),
        ("DSA", openssl_csr(w, "dsa", &["-paramfile", s(&dsa_params)], &[]), "unsupported key: DSA"),
        (
            "EC key with explicit curve parameters",
            std::fs::read(req(w, "explicit", &explicit_key, &[])).expect("read"),
            "ECDSA key with explicit or missing curve parameters",
        ),
        (
            "EC key with a compressed point",
            std::fs::read(req(w, "compressed", &compressed_key, &[])).expect("read"),
            "expected an uncompressed point of 65 bytes, found 33 bytes",
        ),
        (
            "the CA's own key",
            std::fs::read(req(w, "ca-own", &ca_key, &[])).expect("read"),
            "the CSR's public key is the CA's own key",
        ),
        (
            "EC key without curve parameters",
            Assembled::ec(ec_spki(None, &h_point), &h_ec).der(w),
            "ECDSA key with explicit or missing curve parameters",
        ),
        (
            "P-256 OID as an OCTET STRING instead of an OID",
            Assembled::ec(ec_spki(Some(&tlv(0x04, OID_P256)), &h_point), &h_ec).der(w),
            "ECDSA key with explicit or missing curve parameters",
        ),
        (
            "P-256 point not on the curve",
            Assembled::ec(ec_spki(Some(&p256_oid), &off_curve), &h_ec).der(w),
            "invalid ECDSA P-256 public key",
        ),
        (
            "Ed25519 key with NULL parameters",
            Assembled::ed25519(ed25519_spki(Some(NULL), &public_key_bytes(&h_ed, 32)), &h_ed).der(w),
            "invalid Ed25519 public key: algorithm parameters must be absent",
        ),
        (
            "ecdsa-with-SHA256 with NULL parameters",
            Assembled {
                signature_algorithm: tlv(0x30, &cat(&[&tlv(0x06, OID_ECDSA_SHA256), NULL])),
                ..Assembled::ec(ec_spki(Some(&p256_oid), &h_point), &h_ec)
            }
            .der(w),
            "ecdsa-with-SHA256 (with parameters, which must be absent)",
        ),
        (
            "signature BIT STRING with unused bits",
            Assembled { unused_bits: 1, ..Assembled::ec(ec_spki(Some(&p256_oid), &h_point), &h_ec) }.der(w),
            "does not verify with its public key",
        ),
    ];

    let file = w.join("hostile.csr");
    let mut problems = Vec::new();
    for (name, csr, expected) in &cases {
        std::fs::write(&file, csr).expect("write");
        let out = ca.inkan(["issue", "--csr", s(&file), "--account", "mallory"]);
        if out.status.code() != Some(1) {
            problems.push(format!("{name}: exit {} (expected 1)\n{}", out.status, out.stderr));
        } else if !out.stderr.contains(expected) {
            problems.push(format!("{name}: expected {expected:?} in\n{}", out.stderr));
        }
        if ca.list_text() != snapshot {
            problems.push(format!("{name}: the registry changed"));
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} hostile CSRs not handled as expected:\n\n{}",
        problems.len(),
        cases.len(),
        problems.join("\n\n")
    );
}

#[test]
fn greedy_csr_gets_a_plain_client_certificate() {
    let ca = TestCa::init(&["--org", "Example Org"]);
    let w = ca.work();
    let key = genpkey(w, "greedy", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    let csr = req(
        w,
        "greedy",
        &key,
        &[
            "-subj",
            "/CN=admin/O=Evil Corp/OU=Root CAs",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-addext",
            "subjectAltName=DNS:evil.test,IP:10.0.0.1,email:admin@evil.test",
            "-addext",
            "extendedKeyUsage=serverAuth,codeSigning",
        ],
    );
    let requested = openssl(["req", "-in", s(&csr), "-noout", "-text"]).ok().stdout;
    assert!(requested.contains("CA:TRUE"), "{requested}");

    let (cert, _) = ca.issue(&csr, "mallory", "greedy", &[]);
    let text = openssl(["x509", "-in", s(&cert), "-noout", "-text"]).ok().stdout;
    let subject = openssl(["x509", "-in", s(&cert), "-noout", "-subject"]).ok().stdout;
    assert_eq!(subject.trim(), "subject=O = Example Org, CN = mallory");
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(!text.contains("CA:TRUE"), "{text}");
    assert!(!text.contains("Subject Alternative Name"), "{text}");
    assert!(!text.contains("evil"), "{text}");
    assert!(!text.contains("Certificate Sign"), "{text}");
    assert!(!text.contains("Code Signing"), "{text}");
    assert!(!text.contains("TLS Web Server Authentication"), "{text}");
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    ca.openssl_verify(&cert, &["-purpose", "sslclient"]).ok();
    ca.openssl_verify(&cert, &["-purpose", "sslserver"]).failed();
    // A certificate that says CA:FALSE cannot sign another one.
    let leaf_key = genpkey(w, "under", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    let under_csr = req(w, "under", &leaf_key, &[]);
    let under = w.join("under.crt");
    openssl(["x509", "-req", "-in", s(&under_csr), "-CA", s(&cert), "-CAkey", s(&key), "-out", s(&under)]).ok();
    let chain = w.join("chain.pem");
    let ca_pem = std::fs::read_to_string(ca.ca_crt()).expect("read");
    let greedy_pem = std::fs::read_to_string(&cert).expect("read");
    std::fs::write(&chain, format!("{ca_pem}{greedy_pem}")).expect("write");
    openssl(["verify", "-CAfile", s(&ca.root_crt()), "-untrusted", s(&chain), s(&under)]).failed();
}

#[test]
fn every_accepted_key_type_is_certified_with_the_key_sent() {
    let ca = TestCa::init(&[]);
    let w = ca.work();
    for (name, genpkey_args, req_args) in [
        ("p256", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"][..], &[][..]),
        // rcgen issue #448: the key type comes from the key, not the CSR's signature algorithm.
        ("p384-sha256", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"], &["-sha256"]),
        ("p384", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"], &["-sha384"]),
        ("ed25519", &["-algorithm", "ED25519"], &[]),
        ("rsa2048", &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"], &["-sha256"]),
        ("rsa3072-sha512", &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072"], &["-sha512"]),
    ] {
        let key = genpkey(w, name, genpkey_args);
        let csr = req(w, name, &key, req_args);
        if name == "p384-sha256" {
            let text = openssl(["req", "-in", s(&csr), "-noout", "-text"]).ok().stdout;
            assert!(text.contains("Signature Algorithm: ecdsa-with-SHA256"), "{text}");
            assert!(text.contains("secp384r1"), "{text}");
        }
        let (cert, serial) = ca.issue(&csr, name, name, &[]);
        let certified = openssl(["x509", "-in", s(&cert), "-noout", "-pubkey"]).ok().stdout;
        let requested = openssl(["req", "-in", s(&csr), "-noout", "-pubkey"]).ok().stdout;
        assert_eq!(certified, requested, "{name}: the certificate has another key");
        let verified = ca.openssl_verify(&cert, &["-purpose", "sslclient"]).ok();
        assert!(verified.stdout.contains(": OK"), "{name}: {}", verified.stdout);
        let listed = ca.list(&["--account", name]);
        assert_eq!(listed.len(), 1, "{name}: {listed:?}");
        assert_eq!(listed[0]["serial"], serial.as_str());
    }
}
