//! Mail notices: token issued, token revoked, OTP use stopped, and certificate expiry, to the
//! mail address the user gave for its token. Each notice is queued once under a key of its own
//! in a durable outbox ([`MailStore`]) and sent by [`deliver`] over SMTP (lettre), retried with
//! backoff while the server fails; a sent notice stays recorded, so it is never sent twice.
//! Unset `[mail]`: no notices are queued.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{Message, SmtpTransport, Transport};
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};

use crate::state::Shared;
use crate::stores::{MailStore, NoticeStore, OutboxMail, StoreError};

/// `[mail]`: where notices go out.
#[derive(Clone, PartialEq, Eq)]
pub struct MailSettings {
    /// `smtp://HOST:PORT` (`?tls=required` for STARTTLS) or `smtps://HOST:PORT`, with
    /// `USER:PASSWORD@` when the server wants them. Never logged.
    pub smtp_url: String,
    /// The From address, `inkan <noreply@example.jp>`.
    pub from: String,
    /// Expiry notices at these thresholds, in days.
    pub expiry_thresholds_days: Vec<u32>,
    /// How often certificates are checked for expiry notices.
    pub scan_interval: Duration,
}

impl std::fmt::Debug for MailSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailSettings").field("from", &self.from).finish_non_exhaustive()
    }
}

/// Checks `[mail]` without connecting; the error never repeats the URL (it may hold a password).
pub fn check(settings: &MailSettings) -> Result<(), String> {
    SmtpTransport::from_url(&settings.smtp_url)
        .map_err(|_| "[mail] smtp_url is not smtp://HOST:PORT or smtps://HOST:PORT".to_owned())?;
    settings.from.parse::<Mailbox>().map_err(|e| format!("[mail] from {:?}: {e}", settings.from))?;
    Ok(())
}

/// Queues notices: the outbox and a wake-up for the sender.
#[derive(Clone)]
pub struct MailQueue {
    store: Arc<dyn MailStore>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for MailQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MailQueue")
    }
}

impl MailQueue {
    /// A queue over `store`.
    pub fn new(store: Arc<dyn MailStore>) -> Self {
        Self { store, wake: Arc::new(Notify::new()) }
    }

    /// Queues a notice under `key` (once) and wakes the sender. A failure is logged: a notice
    /// never fails the action it tells of.
    pub fn send(&self, key: &str, to: &str, subject: &str, body: String) {
        let mail = OutboxMail {
            to: to.to_owned(),
            subject: subject.to_owned(),
            body,
            queued_at: OffsetDateTime::now_utc(),
            sent_at: None,
        };
        match self.store.enqueue(key, &mail) {
            Ok(_) => self.wake.notify_one(),
            Err(e) => tracing::error!(%key, error = %e, "mail: queueing a notice failed"),
        }
    }
}

/// The notices' words: Japanese first, then English.
pub fn body(lines_ja: &[String], lines_en: &[String]) -> String {
    format!(
        "{}\n\n----\n\n{}\n\n-- \ninkan 電子証明書認証局 / inkan certificate authority\n(このメールは送信専用です / this address takes no replies)\n",
        lines_ja.join("\n"),
        lines_en.join("\n")
    )
}

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
    for notice in crate::notify::due(state, &ByOutbox, thresholds, now) {
        let Ok(Some(token)) = state.otp.token(&notice.account) else { continue };
        let Some(to) = token.mail else { continue };
        let key = format!("expiry:{}:{}", notice.serial, notice.threshold);
        let body = body(
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

/// Sends what the outbox holds, until `stop`: at once when woken, every 30 s otherwise, with
/// backoff (2 s doubling to 5 min) while the server fails; scans for expiry notices every
/// `scan_interval`.
pub async fn deliver(state: Shared, queue: MailQueue, settings: MailSettings, mut stop: watch::Receiver<bool>) {
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
        if tokio::time::Instant::now() >= next_scan {
            let (scan_state, scan_queue, thresholds) =
                (state.clone(), queue.clone(), settings.expiry_thresholds_days.clone());
            let _ = tokio::task::spawn_blocking(move || {
                queue_expiry(&scan_state, &scan_queue, &thresholds, OffsetDateTime::now_utc());
            })
            .await;
            next_scan = tokio::time::Instant::now() + settings.scan_interval;
        }
        let (store, transport, from) = (queue.store.clone(), transport.clone(), from.clone());
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
            _ = queue.wake.notified(), if failures == 0 => {}
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
        }
    }
}
