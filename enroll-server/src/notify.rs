//! Expiry notices: a webhook receives one JSON POST per certificate per threshold it enters
//! (`[notify] thresholds_days`; entering several at once, one notice for the nearest),
//! exactly once across restarts (delivery is recorded in the account store), retried with
//! backoff while the receiver fails. Revoked and superseded certificates get none.
//!
//! The same scan, and every other notice, also goes by mail ([`mail_deliverer`]): the outbox
//! of `mail` is sent over SMTP (lettre), retried with backoff while the server fails.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use pki::Serial;
use pki::registry::Status;
use rustls_pki_types::ServerName;
use time::OffsetDateTime;
use tokio::net::TcpStream;
use tokio::sync::watch;

use pki::encoding::rfc3339;

use crate::mail::{MailQueue, MailSettings};
use crate::settings::NotifySettings;
use crate::state::Shared;
use crate::stores::{NoticeStore, OutboxMail, StoreError};
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{Message, SmtpTransport, Transport};

/// One notice.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Notice {
    /// Always `certificate.expiring`.
    pub event: &'static str,
    /// The account (login ID).
    pub account: String,
    /// The certificate.
    pub serial: Serial,
    /// Its notAfter, RFC 3339.
    pub not_after: String,
    /// The threshold entered, in days.
    pub threshold: u32,
    /// Whole days left.
    pub days_left: i64,
}

/// The notices due now: for each valid certificate inside the largest threshold, the nearest
/// threshold it has entered, unless that (or a nearer one) was already delivered.
pub fn due(state: &Shared, log: &dyn NoticeStore, thresholds: &[u32], now: OffsetDateTime) -> Vec<Notice> {
    let Some(&largest) = thresholds.iter().max() else { return Vec::new() };
    let Ok(records) = state.registry.expiring_between(now, now + time::Duration::days(i64::from(largest))) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for record in records {
        if record.status(now) != Status::Valid {
            continue;
        }
        let left = record.not_after - now;
        let Some(nearest) = thresholds.iter().copied().filter(|t| left <= time::Duration::days(i64::from(*t))).min()
        else {
            continue;
        };
        match log.last(&record.serial) {
            Ok(Some(done)) if done <= nearest => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "notice log");
                continue;
            }
        }
        out.push(Notice {
            event: "certificate.expiring",
            account: record.account.clone(),
            serial: record.serial,
            not_after: rfc3339(record.not_after),
            threshold: nearest,
            days_left: left.whole_days(),
        });
    }
    out
}

struct Target {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

fn parse_url(url: &str) -> Option<Target> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else {
        (false, url.strip_prefix("http://")?)
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (h, p.parse().ok()?),
        _ => (authority, if tls { 443 } else { 80 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    (!host.is_empty()).then(|| Target { tls, host, port, path: path.to_owned() })
}

/// Checks a webhook URL's form.
pub fn check_url(url: &str) -> Result<(), String> {
    parse_url(url)
        .map(drop)
        .ok_or_else(|| format!("webhook_url {url:?} must be http://HOST[:PORT]/PATH or https://..."))
}

fn tls_config(ca_file: Option<&std::path::Path>) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for file in ["/etc/ssl/certs/ca-certificates.crt"].iter().map(std::path::Path::new).chain(ca_file) {
        if let Ok(certs) = rustls_pki_types::CertificateDer::pem_file_iter(file) {
            for cert in certs.flatten() {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth())
            .unwrap_or_else(|_| {
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth()
            }),
    )
}

async fn post(target: &Target, tls: &Arc<rustls::ClientConfig>, notice: &Notice) -> Result<u16, String> {
    let body = serde_json::to_vec(notice).map_err(|e| e.to_string())?;
    let request = hyper::Request::post(&target.path)
        .header("host", format!("{}:{}", target.host, target.port))
        .header("content-type", "application/json")
        .header("user-agent", "inkan-notifier")
        .header("idempotency-key", format!("{}-{}", notice.serial, notice.threshold))
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let attempt = async {
        let tcp = TcpStream::connect((target.host.as_str(), target.port)).await.map_err(|e| e.to_string())?;
        let status = if target.tls {
            let name = ServerName::try_from(target.host.clone()).map_err(|e| e.to_string())?;
            let stream =
                tokio_rustls::TlsConnector::from(tls.clone()).connect(name, tcp).await.map_err(|e| e.to_string())?;
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let response = send.send_request(request).await.map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let _ = response.into_body().collect().await;
            status
        } else {
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let response = send.send_request(request).await.map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let _ = response.into_body().collect().await;
            status
        };
        Ok::<u16, String>(status)
    };
    tokio::time::timeout(Duration::from_secs(10), attempt).await.map_err(|_| "timed out".to_owned())?
}

/// Scans every `scan_interval`, delivers what is due, retries failures with exponential
/// backoff (1 s doubling up to 5 min) until `stop`.
pub async fn notifier(state: Shared, settings: NotifySettings, mut stop: watch::Receiver<bool>) {
    let Some(target) = parse_url(&settings.webhook_url) else {
        tracing::error!(url = %settings.webhook_url, "notify: bad webhook URL; notices are off");
        return;
    };
    let log = state.notices.clone();
    let tls = tls_config(settings.ca_file.as_deref());
    // serial → (notice, failed attempts, next attempt)
    let mut pending: HashMap<Serial, (Notice, u32, tokio::time::Instant)> = HashMap::new();
    let mut next_scan = tokio::time::Instant::now();
    loop {
        let now = tokio::time::Instant::now();
        // One instance scans (the duties' lease); the log of delivered notices is shared.
        if now >= next_scan && state.duty.held() {
            let (scan_state, scan_log, thresholds) = (state.clone(), log.clone(), settings.thresholds_days.clone());
            let found = tokio::task::spawn_blocking(move || {
                due(&scan_state, scan_log.as_ref(), &thresholds, OffsetDateTime::now_utc())
            })
            .await
            .unwrap_or_default();
            for notice in found {
                // A notice already waiting keeps its backoff; a nearer threshold replaces it.
                match pending.get(&notice.serial) {
                    Some((waiting, _, _)) if waiting.threshold <= notice.threshold => {}
                    _ => {
                        pending.insert(notice.serial, (notice, 0, now));
                    }
                }
            }
            next_scan = now + settings.scan_interval;
        } else if now >= next_scan {
            // Not this instance's turn: ask again when the lease may have come here.
            next_scan = now + crate::duty::RENEW;
        }
        let ready: Vec<Serial> = pending.iter().filter(|(_, (_, _, at))| *at <= now).map(|(s, _)| *s).collect();
        for serial in ready {
            let Some((notice, attempts, _)) = pending.remove(&serial) else { continue };
            match post(&target, &tls, &notice).await {
                Ok(status) if (200..300).contains(&status) => {
                    state.metrics.notices_sent.fetch_add(1, Ordering::Relaxed);
                    let record_log = log.clone();
                    let recorded =
                        tokio::task::spawn_blocking(move || record_log.record(&serial, notice.threshold)).await;
                    if !matches!(recorded, Ok(Ok(()))) {
                        tracing::error!(%serial, "notify: delivered, but recording the delivery failed");
                    }
                    tracing::info!(%serial, threshold = notice.threshold, "expiry notice delivered");
                }
                result => {
                    state.metrics.notices_failed.fetch_add(1, Ordering::Relaxed);
                    let wait = Duration::from_secs(1u64 << attempts.min(8)).min(Duration::from_secs(300));
                    tracing::warn!(%serial, ?result, retry_in = ?wait, "expiry notice not delivered");
                    pending.insert(serial, (notice, attempts + 1, tokio::time::Instant::now() + wait));
                }
            }
        }
        let wake = pending.values().map(|(_, _, at)| *at).min().unwrap_or(next_scan).min(next_scan);
        tokio::select! {
            _ = tokio::time::sleep_until(wake.max(tokio::time::Instant::now() + Duration::from_millis(50))) => {}
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
        }
    }
}

// ---- Mail ----------------------------------------------------------------------------------

fn message(from: &Mailbox, mail: &OutboxMail) -> Result<Message, String> {
    let to: Mailbox = mail.to.parse().map_err(|e| format!("recipient: {e}"))?;
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(mail.subject.clone())
        .header(ContentType::TEXT_PLAIN)
        .body(mail.body.clone())
        .map_err(|e| e.to_string())
}

/// No expiry notice recorded: the outbox's keys keep each one to once.
struct ByOutbox;

impl NoticeStore for ByOutbox {
    fn last(&self, _: &pki::Serial) -> Result<Option<u32>, StoreError> {
        Ok(None)
    }

    fn record(&self, _: &pki::Serial, _: u32) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Queues the expiry notices due now for accounts with a token mail address.
fn queue_expiry(state: &Shared, queue: &MailQueue, thresholds: &[u32], now: OffsetDateTime) {
    for notice in due(state, &ByOutbox, thresholds, now) {
        let Ok(Some(token)) = state.otp.token(&notice.account) else { continue };
        let Some(to) = token.mail else { continue };
        let key = format!("expiry:{}:{}", notice.serial, notice.threshold);
        let body = crate::mail::body(
            &[
                format!(
                    "ログインID {} の電子証明書（シリアル番号 {}）の有効期限が近づいています。",
                    notice.account, notice.serial
                ),
                format!("有効期限: {}（残り {} 日）", notice.not_after, notice.days_left),
                "有効期限が切れる前に、電子証明書再取得の画面から取得し直してください。".into(),
            ],
            &[
                format!("The certificate {} of login ID {} expires soon.", notice.serial, notice.account),
                format!("It ends at {} ({} days left).", notice.not_after, notice.days_left),
                "Obtain it again (reissue) before it expires.".into(),
            ],
        );
        queue.send(&key, &to, "【inkan】電子証明書の有効期限のお知らせ / Your certificate expires soon", body);
    }
}

/// Sends what the mail outbox holds, until `stop`: at once when woken, every 30 s otherwise, with
/// backoff (2 s doubling to 5 min) while the server fails; scans for expiry notices every
/// `scan_interval`.
pub async fn mail_deliverer(state: Shared, queue: MailQueue, settings: MailSettings, mut stop: watch::Receiver<bool>) {
    let Ok(from) = settings.from.parse::<Mailbox>() else {
        tracing::error!("mail: [mail] from is not a mail address; notices are off");
        return;
    };
    let transport = match SmtpTransport::from_url(&settings.smtp_url) {
        Ok(builder) => Arc::new(builder.timeout(Some(Duration::from_secs(20))).build()),
        Err(_) => {
            tracing::error!("mail: [mail] smtp_url is not usable; notices are off");
            return;
        }
    };
    let mut failures = 0u32;
    let mut next_scan = tokio::time::Instant::now();
    loop {
        if !state.duty.held() {
            // Another instance delivers the shared outbox.
            tokio::select! {
                () = tokio::time::sleep(crate::duty::RENEW) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            continue;
        }
        if tokio::time::Instant::now() >= next_scan {
            let (scan_state, scan_queue, thresholds) =
                (state.clone(), queue.clone(), settings.expiry_thresholds_days.clone());
            let _ = tokio::task::spawn_blocking(move || {
                queue_expiry(&scan_state, &scan_queue, &thresholds, OffsetDateTime::now_utc());
            })
            .await;
            next_scan = tokio::time::Instant::now() + settings.scan_interval;
        }
        let (store, transport, from) = (queue.store().clone(), transport.clone(), from.clone());
        let sent = tokio::task::spawn_blocking(move || -> Result<usize, String> {
            let mut sent = 0;
            for (key, mail) in store.pending().map_err(|e| e.to_string())? {
                let message = match message(&from, &mail) {
                    Ok(message) => message,
                    Err(e) => {
                        // A mail that can never be built is recorded as done, not retried.
                        tracing::error!(%key, error = %e, "mail: a notice cannot be built; dropped");
                        store.mark_sent(&key, OffsetDateTime::now_utc()).map_err(|e| e.to_string())?;
                        continue;
                    }
                };
                transport.send(&message).map_err(|e| format!("SMTP: {e}"))?;
                store.mark_sent(&key, OffsetDateTime::now_utc()).map_err(|e| e.to_string())?;
                tracing::info!(%key, "mail notice sent");
                sent += 1;
            }
            Ok(sent)
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        let wait = match sent {
            Ok(n) => {
                state.metrics.mails_sent.fetch_add(n as u64, Ordering::Relaxed);
                failures = 0;
                Duration::from_secs(30)
            }
            Err(e) => {
                state.metrics.mails_failed.fetch_add(1, Ordering::Relaxed);
                failures += 1;
                let wait = Duration::from_secs(1u64 << failures.min(8)).min(Duration::from_secs(300));
                tracing::warn!(error = %e, retry_in = ?wait, "mail: notices not sent");
                wait
            }
        };
        let until = (tokio::time::Instant::now() + wait).min(next_scan);
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = queue.woken().notified(), if failures == 0 => {}
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = parse_url("http://127.0.0.1:9000/hook").expect("url");
        assert!(!t.tls && t.host == "127.0.0.1" && t.port == 9000 && t.path == "/hook");
        let t = parse_url("https://hooks.example.com").expect("url");
        assert!(t.tls && t.port == 443 && t.path == "/");
        let t = parse_url("http://[::1]:8080/x").expect("url");
        assert_eq!((t.host.as_str(), t.port), ("::1", 8080));
        assert!(parse_url("ftp://x").is_none());
        assert!(parse_url("http://").is_none());
    }
}
