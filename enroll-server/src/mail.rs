//! Mail notices: token issued, token revoked, OTP use stopped, an account locked, and
//! certificate expiry, to the mail address the user gave for its token. Each notice is queued
//! once under a key of its own in a durable outbox ([`MailStore`]); `notify::mail_deliverer`
//! sends it over SMTP. Unset `[mail]`: no notices are queued.

use std::sync::Arc;

use lettre::SmtpTransport;
use lettre::message::Mailbox;
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::stores::{MailStore, OutboxMail};

pub use crate::settings::MailSettings;

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
    /// The outbox.
    pub(crate) fn store(&self) -> &Arc<dyn MailStore> {
        &self.store
    }

    /// Woken when a notice is queued.
    pub(crate) fn woken(&self) -> &Notify {
        &self.wake
    }

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
