//! `inkan est enroll` and `inkan est renew`: an EST client (RFC 7030) for machines. The key is
//! made here and never sent; the server is trusted by the CA file given; files are written
//! whole (a temporary file, then a rename), the key 0600.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use zeroize::Zeroizing;

use super::Exit;
use super::registry::parse_period;
use crate::args::{EstEnrollArgs, EstRenewArgs, EstServerArgs, KeyType};

/// The exit code when the CA stayed unavailable for the whole wait (EX_TEMPFAIL).
const TRY_LATER: u8 = 75;
/// One request may take this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest answer read.
const MAX_ANSWER: usize = 1 << 20;

/// The EST server: where, and the TLS configuration to reach it.
struct Server {
    host: String,
    port: u16,
    /// `/.well-known/est/` or `/.well-known/est/LABEL/`.
    base: String,
    tls: Arc<rustls::ClientConfig>,
    wait: Duration,
}

/// A client identity for the TLS handshake: the certificate chain and its key.
type Identity = (Vec<CertificateDer<'static>>, PrivatePkcs8KeyDer<'static>);

impl Server {
    fn new(args: &EstServerArgs, identity: Option<Identity>) -> anyhow::Result<Self> {
        let url = args.server.trim_end_matches('/');
        let Some(rest) = url.strip_prefix("https://") else {
            bail!("--server {url:?}: EST is served over https://HOST:PORT");
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let base = match path {
            "" | "/.well-known/est" => "/.well-known/est/".to_owned(),
            label if label.starts_with("/.well-known/est/") && !label["/.well-known/est/".len()..].contains('/') => {
                format!("{label}/")
            }
            other => bail!("--server: the path {other:?} is not /.well-known/est[/LABEL]"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() => (
                host.trim_start_matches('[').trim_end_matches(']').to_owned(),
                port.parse().with_context(|| format!("--server: port {port:?}"))?,
            ),
            _ => (authority.to_owned(), 443),
        };
        let pem = std::fs::read(&args.ca_file).with_context(|| format!("reading {}", args.ca_file.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for block in pem::parse_many(&pem).with_context(|| format!("{}: not PEM", args.ca_file.display()))? {
            if block.tag() == "CERTIFICATE" {
                roots.add(CertificateDer::from(block.into_contents())).context("a CA certificate rustls refuses")?;
            }
        }
        if roots.is_empty() {
            bail!("{}: no CERTIFICATE in it", args.ca_file.display());
        }
        let builder =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots);
        let tls = match identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, PrivateKeyDer::Pkcs8(key))
                .context("the certificate and key do not go together")?,
            None => builder.with_no_client_auth(),
        };
        let wait = parse_period(&args.wait)?.try_into().context("--wait")?;
        Ok(Self { host, port, base, tls: Arc::new(tls), wait })
    }

    /// One request; the status, the Retry-After header, and the body.
    async fn request(
        &self,
        method: hyper::Method,
        op: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> anyhow::Result<(u16, Option<u64>, Vec<u8>)> {
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{op}", self.base))
            .header("host", format!("{}:{}", self.host, self.port))
            .header("user-agent", concat!("inkan-est/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        let request = request.body(Full::new(Bytes::from(body)))?;
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                .await
                .with_context(|| format!("connecting to {}:{}", self.host, self.port))?;
            let name = ServerName::try_from(self.host.clone()).context("the server's name")?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .context("the TLS handshake with the EST server")?;
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
            tokio::spawn(conn);
            let response = send.send_request(request).await?;
            let status = response.status().as_u16();
            let retry = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?
                .to_bytes();
            anyhow::Ok((status, retry, body.to_vec()))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange).await.context("the EST server did not answer in time")?
    }

    /// POSTs a CSR to `op`, asking again while the server answers 202 (within the wait);
    /// returns the certificate.
    fn enroll(&self, op: &str, csr_der: &[u8], auth: Option<String>) -> anyhow::Result<Vec<u8>> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let mut headers = vec![("content-type", "application/pkcs10".to_owned())];
        if let Some(auth) = auth {
            headers.push(("authorization", auth));
        }
        let body = pki::encoding::base64_lines(csr_der).into_bytes();
        let started = Instant::now();
        loop {
            let (status, retry, answer) =
                runtime.block_on(self.request(hyper::Method::POST, op, &headers, body.clone()))?;
            match status {
                200 => {
                    let der = base64_answer(&answer)?;
                    let certs = pki::encoding::pkcs7_certificates(&der).context("the server's answer")?;
                    let [cert] = <[Vec<u8>; 1]>::try_from(certs)
                        .map_err(|certs| anyhow::anyhow!("the answer holds {} certificates, not one", certs.len()))?;
                    return Ok(cert);
                }
                202 => {
                    let seconds = retry.unwrap_or(10).clamp(1, 300);
                    if started.elapsed() + Duration::from_secs(seconds) > self.wait {
                        return Err(Exit(
                            TRY_LATER,
                            format!(
                                "the CA is still unavailable after {}s (it says: {}); nothing was issued, try again later",
                                started.elapsed().as_secs(),
                                String::from_utf8_lossy(&answer).trim()
                            ),
                        )
                        .into());
                    }
                    eprintln!("The CA is unavailable; asking again in {seconds}s ...");
                    std::thread::sleep(Duration::from_secs(seconds));
                }
                status => bail!("the EST server refused ({status}): {}", String::from_utf8_lossy(&answer).trim()),
            }
        }
    }

    /// The CA certificates (`cacerts`).
    fn ca_certificates(&self) -> anyhow::Result<Vec<Vec<u8>>> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (status, _, answer) = runtime.block_on(self.request(hyper::Method::GET, "cacerts", &[], Vec::new()))?;
        if status != 200 {
            bail!("cacerts: the EST server answered {status}: {}", String::from_utf8_lossy(&answer).trim());
        }
        pki::encoding::pkcs7_certificates(&base64_answer(&answer)?).context("cacerts")
    }
}

fn base64_answer(answer: &[u8]) -> anyhow::Result<Vec<u8>> {
    std::str::from_utf8(answer)
        .ok()
        .and_then(pki::encoding::base64_decode)
        .context("the EST server's answer is not base64")
}

/// A new key of `kind`.
fn new_key(kind: KeyType) -> anyhow::Result<rcgen::KeyPair> {
    let key = match kind {
        KeyType::EcdsaP256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
        KeyType::EcdsaP384 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?,
        KeyType::Ed25519 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?,
        KeyType::Rsa3072 => {
            use aws_lc_rs::encoding::AsDer;
            let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa3072)
                .map_err(|_| anyhow::anyhow!("making an RSA key failed"))?;
            let pkcs8 = rsa.as_der().map_err(|_| anyhow::anyhow!("encoding the RSA key failed"))?;
            let der = PrivatePkcs8KeyDer::from(pkcs8.as_ref().to_vec());
            rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_RSA_SHA256)?
        }
    };
    Ok(key)
}

/// The key as PKCS#8 PEM that OpenSSL 3.0 reads too: an Ed25519 key in version 1 (without the
/// public key: aws-lc writes version 2, which OpenSSL 3.0 refuses).
fn key_pem(key: &rcgen::KeyPair) -> Zeroizing<String> {
    const ED25519_V2: &[u8] =
        &[0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    const ED25519_V1: &[u8] =
        &[0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    let der = Zeroizing::new(key.serialize_der());
    match der.strip_prefix(ED25519_V2) {
        Some(rest) if rest.len() == 32 + 35 => {
            let v1 = Zeroizing::new([ED25519_V1, &rest[..32]].concat());
            Zeroizing::new(pki::encoding::pem_encode("PRIVATE KEY", &v1))
        }
        _ => Zeroizing::new(key.serialize_pem()),
    }
}

/// A CSR for `key` with the common name `cn` (the CA sets the subject from the account anyway)
/// asking for the names `sans` (DNS names and IP addresses).
fn csr(key: &rcgen::KeyPair, cn: &str, sans: &[String]) -> anyhow::Result<Vec<u8>> {
    let mut params = rcgen::CertificateParams::new(sans.to_vec())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    Ok(params.serialize_request(key)?.der().to_vec())
}

/// Writes `contents` to `path` whole: a temporary file beside it (mode `mode`), synced, then
/// renamed over it.
fn write_whole(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = path.file_name().context("a file name")?.to_string_lossy();
    let temp = path.with_file_name(format!(".{name}.new"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temp)
        .with_context(|| format!("writing {}", temp.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(temp)
}

fn rename(temp: &Path, path: &Path) -> anyhow::Result<()> {
    std::fs::rename(temp, path).with_context(|| format!("replacing {}", path.display()))
}

/// The certificate file: the certificate, then its issuing CA (what TLS clients send).
fn certificate_file(cert: &[u8], ca_certs: &[Vec<u8>]) -> anyhow::Result<String> {
    let mut pem = pki::encoding::pem_encode("CERTIFICATE", cert);
    let issuer = pki::certificate::Summary::from_der(cert)?.issuer;
    for ca in ca_certs {
        if pki::certificate::Summary::from_der(ca)?.subject == issuer {
            pem.push_str(&pki::encoding::pem_encode("CERTIFICATE", ca));
        }
    }
    Ok(pem)
}

/// `inkan est enroll`.
pub fn enroll(args: &EstEnrollArgs) -> anyhow::Result<()> {
    for path in [&args.key_out, &args.cert_out] {
        if path.exists() {
            bail!(
                "{} exists: enroll makes a new key and certificate; renew one with `inkan est renew`",
                path.display()
            );
        }
    }
    let Some(secret_file) = args.password_file.as_ref().or(args.token_file.as_ref()) else {
        bail!("give --password-file or --token-file");
    };
    let secret = Zeroizing::new(
        std::fs::read_to_string(secret_file).with_context(|| format!("reading {}", secret_file.display()))?,
    );
    let password = secret.lines().next().unwrap_or_default();
    if password.is_empty() {
        bail!("{}: the first line is empty", secret_file.display());
    }
    for name in &args.san {
        name.parse::<pki::San>().with_context(|| format!("--san {name}"))?;
    }
    let server = Server::new(&args.server, None)?;
    let key = new_key(args.key_type)?;
    let request = csr(&key, &args.user, &args.san)?;
    let credentials = Zeroizing::new(format!("{}:{password}", args.user));
    let encoded: String = pki::encoding::base64_lines(credentials.as_bytes()).split('\n').collect();
    let auth = format!("Basic {encoded}");
    let cert = server.enroll("simpleenroll", &request, Some(auth))?;
    let ca_certs = server.ca_certificates()?;
    let key_temp = write_whole(&args.key_out, key_pem(&key).as_bytes(), 0o600)?;
    let cert_temp = write_whole(&args.cert_out, certificate_file(&cert, &ca_certs)?.as_bytes(), 0o644)?;
    rename(&key_temp, &args.key_out)?;
    rename(&cert_temp, &args.cert_out)?;
    let summary = pki::certificate::Summary::from_der(&cert)?;
    println!(
        "Enrolled {}: certificate {} valid until {}, in {}; key in {}.",
        args.user,
        summary.serial,
        pki::encoding::rfc3339(summary.not_after),
        args.cert_out.display(),
        args.key_out.display()
    );
    Ok(())
}

/// `inkan est renew`.
pub fn renew(args: &EstRenewArgs) -> anyhow::Result<()> {
    let cert_pem = std::fs::read(&args.cert).with_context(|| format!("reading {}", args.cert.display()))?;
    let chain: Vec<CertificateDer<'static>> = pem::parse_many(&cert_pem)
        .with_context(|| format!("{}: not PEM", args.cert.display()))?
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| CertificateDer::from(b.into_contents()))
        .collect();
    let Some(current) = chain.first() else { bail!("{}: no certificate in it", args.cert.display()) };
    let summary = pki::certificate::Summary::from_der(current)?;
    let within = parse_period(&args.renew_within)?;
    let left = summary.not_after - time::OffsetDateTime::now_utc();
    if left > within {
        println!(
            "{} (serial {}) has {} days left; it is renewed within {} days of its end. Nothing to do.",
            args.cert.display(),
            summary.serial,
            left.whole_days(),
            within.whole_days()
        );
        return Ok(());
    }
    let current_pem =
        Zeroizing::new(std::fs::read_to_string(&args.key).with_context(|| format!("reading {}", args.key.display()))?);
    let current_key =
        rcgen::KeyPair::from_pem(&current_pem).with_context(|| format!("{}: not a key", args.key.display()))?;
    let identity = (chain.clone(), PrivatePkcs8KeyDer::from(current_key.serialize_der()));
    let server = Server::new(&args.server, Some(identity))?;
    let key = if args.new_key { new_key(args.key_type)? } else { current_key };
    let cn = summary.subject.rsplit("CN=").next().unwrap_or("inkan").to_owned();
    // The same names as the current certificate (none for a client certificate).
    let cert = server.enroll("simplereenroll", &csr(&key, &cn, &summary.sans)?, None)?;
    let ca_certs = server.ca_certificates()?;
    // The new pair is in hand: now the files are replaced, the key first.
    let cert_temp = write_whole(&args.cert, certificate_file(&cert, &ca_certs)?.as_bytes(), 0o644)?;
    if args.new_key {
        let key_temp = write_whole(&args.key, key_pem(&key).as_bytes(), 0o600)?;
        rename(&key_temp, &args.key)?;
    }
    rename(&cert_temp, &args.cert)?;
    let renewed = pki::certificate::Summary::from_der(&cert)?;
    println!(
        "Renewed: certificate {} valid until {} in {} (it replaces {}){}.",
        renewed.serial,
        pki::encoding::rfc3339(renewed.not_after),
        args.cert.display(),
        summary.serial,
        if args.new_key { format!("; a new key in {}", args.key.display()) } else { String::new() }
    );
    Ok(())
}
