//! The shared state of all listeners, in one `Arc`: settings, stores, the CA port, the audit
//! trail and the in-memory parts (tickets, sessions, limits, the OCSP cache, counters). It
//! imports the leaf modules only; features import it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use pki::Serial;
use pki::registry::Registry;
use pki::request::Issuer;

use crate::accounts::{AccountError, Accounts};
use crate::csrf::CsrfKey;
use crate::error::WebError;
use crate::metrics::Metrics;
use crate::ocsp::OcspCache;
use crate::otp::Otp;
use crate::ports::{Audit, Events};
use crate::settings::ServerSettings;
use crate::stores::NoticeStore;
use crate::tokens::{RateLimiter, Sessions, Tickets};

/// Everything a handler may need.
pub struct AppState {
    /// Settings.
    pub settings: ServerSettings,
    /// Accounts.
    pub accounts: Accounts,
    /// One-time-password tokens.
    pub otp: Otp,
    /// The mail outbox, when `[mail]` is set.
    pub mail: Option<crate::mail::MailQueue>,
    /// Which expiry notices were delivered.
    pub notices: Arc<dyn NoticeStore>,
    /// The OAuth authorization server (API連携認証).
    pub oauth: crate::oauth::OAuth,
    /// The certificate registry.
    pub registry: Arc<dyn Registry>,
    /// The CA.
    pub issuer: Arc<dyn Issuer>,
    /// The audit trail.
    pub audit: Arc<dyn Audit>,
    /// Enrollment tickets.
    pub tickets: Tickets,
    /// Login sessions.
    pub sessions: Sessions,
    /// Per-client limits on login and enrollment.
    pub limiter: RateLimiter,
    /// Whether this instance does the background duties (always, when it is alone).
    pub duty: Arc<crate::duty::Duty>,
    /// The public listener's base URL, for links (`https://localhost:8443`).
    pub public_url: String,
    /// The certificate-login listener's base URL (`https://localhost:8444`).
    pub login_url: String,
    /// Signed OCSP answers.
    pub ocsp: OcspCache,
    /// Signs the tokens of the forms that come before a session.
    pub csrf: CsrfKey,
    /// Wakes the CRL publisher after revocations.
    pub crl_wake: tokio::sync::Notify,
    /// Wakes the OCSP refresher to sign answers for [`AppState::take_presign`] ahead of requests.
    pub ocsp_wake: tokio::sync::Notify,
    /// Serials (just issued or revoked) whose fresh OCSP answers are still to be signed.
    presign_queue: Mutex<Vec<Serial>>,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
    /// Exports the stores for `inkan backup`, set by the process that opened them.
    snapshotter: std::sync::OnceLock<Box<crate::ports::Snapshotter>>,
}

/// The parts of an [`AppState`] that are not made here.
pub struct Parts {
    /// Settings.
    pub settings: ServerSettings,
    /// Accounts.
    pub accounts: Accounts,
    /// One-time-password tokens.
    pub otp: Otp,
    /// The mail outbox, when `[mail]` is set.
    pub mail: Option<crate::mail::MailQueue>,
    /// Which expiry notices were delivered.
    pub notices: Arc<dyn NoticeStore>,
    /// The OAuth authorization server.
    pub oauth: crate::oauth::OAuth,
    /// The certificate registry.
    pub registry: Arc<dyn Registry>,
    /// The CA.
    pub issuer: Arc<dyn Issuer>,
    /// The audit trail.
    pub audit: Arc<dyn Audit>,
    /// The public listener's base URL.
    pub public_url: String,
    /// The certificate-login listener's base URL.
    pub login_url: String,
    /// Where sessions and enrollment tickets live (memory, or the database the instances share).
    pub sessions: Arc<dyn crate::stores::sessions::SessionStore>,
    /// The background duties' lease and the shared CRLs.
    pub leases: Arc<dyn crate::stores::shared::LeaseStore>,
}

impl AppState {
    /// The state of a service made of `parts`.
    pub fn new(parts: Parts) -> Result<Self, pki::Error> {
        let generations: Vec<_> = parts
            .issuer
            .ca_generations()
            .into_iter()
            .map(|(n, der)| (n, der, parts.settings.crl_dir.join(pki::published::ca_ocsp(n))))
            .collect();
        let ocsp = OcspCache::for_generations(&generations, parts.issuer.root_certificate())?;
        Ok(Self {
            limiter: RateLimiter::new(parts.settings.rate_limit_per_minute),
            settings: parts.settings,
            accounts: parts.accounts,
            otp: parts.otp,
            mail: parts.mail,
            notices: parts.notices,
            oauth: parts.oauth,
            registry: parts.registry,
            issuer: parts.issuer,
            audit: parts.audit,
            duty: Arc::new(crate::duty::Duty::new(parts.leases)),
            tickets: Tickets::new(parts.sessions.clone()),
            sessions: Sessions::new(parts.sessions),
            public_url: parts.public_url,
            login_url: parts.login_url,
            ocsp,
            csrf: CsrfKey::default(),
            crl_wake: tokio::sync::Notify::new(),
            ocsp_wake: tokio::sync::Notify::new(),
            presign_queue: Mutex::new(Vec::new()),
            metrics: Metrics::default(),
            snapshotter: std::sync::OnceLock::new(),
        })
    }

    /// Sets what exports the stores for a backup (once).
    pub fn set_snapshotter(&self, snapshotter: Box<crate::ports::Snapshotter>) {
        let _ = self.snapshotter.set(snapshotter);
    }

    /// What exports the stores, once set.
    pub fn snapshotter(&self) -> Option<&crate::ports::Snapshotter> {
        self.snapshotter.get().map(AsRef::as_ref)
    }

    /// The serials (just issued or revoked) whose OCSP answers are to be signed ahead of
    /// requests.
    pub fn take_presign(&self) -> Vec<Serial> {
        std::mem::take(&mut *self.presign_queue.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Appends to the audit trail (durable) off the async threads.
    pub async fn audit(self: &Arc<Self>, event: &'static str, details: serde_json::Value) {
        let state = self.clone();
        let _ = tokio::task::spawn_blocking(move || state.audit.record(event, details)).await;
    }

    /// Checks `login_id`'s password off the async threads (wrong ones count towards the
    /// lockout) and audits a failure, naming the path it came by (`via`).
    pub async fn authenticate(
        self: &Arc<Self>,
        login_id: &str,
        password: crate::accounts::Password,
        via: &str,
    ) -> Result<crate::accounts::Account, WebError> {
        let (state, id) = (self.clone(), login_id.to_owned());
        match blocking(move || state.accounts.authenticate(&id, &password)).await? {
            Ok(account) => Ok(account),
            Err(e) => {
                self.audit_auth_failure(login_id, via, &e).await;
                Err(e.into())
            }
        }
    }

    /// Audits a failed password check, and the lockout it may have caused.
    async fn audit_auth_failure(self: &Arc<Self>, login_id: &str, via: &str, e: &AccountError) {
        let code = WebError::from(e.clone()).code.as_str();
        self.audit("login.failure", serde_json::json!({ "login_id": login_id, "via": via, "code": code })).await;
        if let AccountError::WrongPasswordLocked = e {
            self.audit("account.locked", serde_json::json!({ "login_id": login_id })).await;
            self.mail_locked(login_id);
        }
    }

    /// Tells the account's mail address (its token's) that it was locked, when mail is on.
    fn mail_locked(&self, login_id: &str) {
        let Some(queue) = &self.mail else { return };
        let Ok(Some(token)) = self.otp.token(login_id) else { return };
        let Some(to) = token.mail else { return };
        let now = time::OffsetDateTime::now_utc();
        let body = crate::mail::body(
            &[
                format!("ログインID {login_id} は、ログインパスワードを続けて間違えたためロックされました。"),
                "お心当たりがない場合は、管理者（マスターユーザ）または運用担当者にご連絡ください。".into(),
            ],
            &[
                format!("Login ID {login_id} was locked after too many wrong passwords."),
                "If this was not you, tell your master user or the operator.".into(),
            ],
        );
        let key = format!("account.locked:{login_id}:{}", now.unix_timestamp());
        queue.send(&key, &to, "【inkan】ログインIDがロックされました / Your login ID was locked", body);
    }

    /// Counts one request from `remote` against its per-minute limit.
    pub fn rate_limit(&self, remote: SocketAddr) -> Result<(), WebError> {
        self.limiter.check(remote.ip()).map_err(WebError::rate_limited)
    }
}

impl Events for AppState {
    /// Cached OCSP answers go (and fresh ones are signed ahead of requests), a new CRL is due.
    fn revoked(&self, serials: &[Serial]) {
        if serials.is_empty() {
            return;
        }
        self.ocsp.forget(serials);
        self.presign_queue.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(serials);
        self.ocsp_wake.notify_one();
        self.metrics.revoked.fetch_add(serials.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.crl_wake.notify_one();
    }

    fn issued(&self, serial: &Serial) {
        self.metrics.issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.presign_queue.lock().unwrap_or_else(PoisonError::into_inner).push(*serial);
        self.ocsp_wake.notify_one();
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("public_url", &self.public_url).finish_non_exhaustive()
    }
}

/// The state as handlers receive it.
pub type Shared = Arc<AppState>;

/// Runs blocking work (password hashing, durable writes, signing) off the async threads.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, WebError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| WebError::internal("blocking task", e))
}

/// What the listener knows about the connection a request came on.
#[derive(Clone, Debug)]
pub struct Connection {
    /// The client's address.
    pub remote: SocketAddr,
    /// The client certificate (DER) from the TLS handshake, on the login listener.
    pub client_certificate: Option<Arc<Vec<u8>>>,
}
