//! What the fuzz targets share: a CA made once per process in a temporary directory.

use std::sync::OnceLock;

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
