//! Login sessions and enrollment tickets: short-lived state that several service instances
//! share when they run over one database (a login on one instance goes on on another), and that
//! an embedded service keeps in memory ([`MemorySessions`]: lost at a restart, which only means
//! logging in or pre-processing again).
//!
//! Both are stored under the SHA-256 of their token (hex), never the token itself; times are
//! wall-clock, so every instance reads them alike.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use pki::Serial;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::StoreError;

/// How far a login got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Certificate, password and (when the user has a token) a one-time password: logged in.
    Complete,
    /// Certificate and password; the one-time password is still to come.
    OtpPending,
    /// Certificate and password of a user who must use OTP and has no token: setting one up is
    /// all it may do.
    SetupOnly,
}

/// A logged-in session on the certificate-login listener.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The account.
    pub login_id: String,
    /// The client certificate the session was made with; other certificates cannot use it.
    pub certificate: Serial,
    /// The token forms must carry.
    pub csrf: String,
    /// How far the login got.
    pub stage: Stage,
    /// The customer-card cells asked for the next confirmation.
    pub challenge: Option<[String; 2]>,
    /// When it was last used.
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The form token is a secret of the session.
        f.debug_struct("Session")
            .field("login_id", &self.login_id)
            .field("certificate", &self.certificate)
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}

/// Where an enrollment ticket is in the pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketState {
    /// Pre-processing passed; a CSR may be sent once.
    Preprocessed,
    /// A CSR is being issued now.
    Issuing,
    /// The certificate was issued.
    Issued(Serial),
    /// The browser reported the certificate installed (downloaded).
    Installed(Serial),
    /// Used up without a certificate to show: the issuance failed after the CA may have
    /// signed, or the request was cut off. The user starts again (a new ticket).
    Spent,
}

impl TicketState {
    /// Its name in a database column.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Preprocessed => "preprocessed",
            Self::Issuing => "issuing",
            Self::Issued(_) => "issued",
            Self::Installed(_) => "installed",
            Self::Spent => "spent",
        }
    }
}

/// A single-use enrollment ticket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// The account it was made for.
    pub login_id: String,
    /// Its state.
    pub state: TicketState,
    /// When it stops being usable.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// Why a ticket cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketError {
    /// Never existed, or expired and forgotten.
    Unknown,
    /// Past its lifetime.
    Expired,
    /// Already used for an issuance (or one is in progress).
    Used,
    /// Another ticket of the same account is being issued now: one issuance at a time.
    Busy,
    /// The store did not answer (logged where it happened); try again.
    Unavailable,
}

/// Sessions and tickets, keyed by the hex SHA-256 of their token.
pub trait SessionStore: Send + Sync {
    /// Stores a new session, ending every other session of the same account and certificate.
    fn start_session(&self, key: &str, session: &Session) -> Result<(), StoreError>;

    /// The session if it was used within `idle` before `now` (its last use becomes `now`); a
    /// session idle for longer is removed.
    fn touch_session(&self, key: &str, now: OffsetDateTime, idle: Duration) -> Result<Option<Session>, StoreError>;

    /// Changes a session (nothing when it is gone).
    fn update_session(&self, key: &str, change: &mut dyn FnMut(&mut Session)) -> Result<(), StoreError>;

    /// Ends a session.
    fn end_session(&self, key: &str) -> Result<(), StoreError>;

    /// Stores a new ticket.
    fn put_ticket(&self, key: &str, ticket: &Ticket) -> Result<(), StoreError>;

    /// Moves a pre-processed, unexpired ticket to [`TicketState::Issuing`] when no other ticket
    /// of its account is issuing; of concurrent callers (on any instance) at most one wins.
    fn claim_ticket(&self, key: &str, now: OffsetDateTime) -> Result<Result<Ticket, TicketError>, StoreError>;

    /// Sets a ticket's state.
    fn set_ticket(&self, key: &str, state: &TicketState) -> Result<(), StoreError>;

    /// Marks an issued ticket installed; its serial.
    fn install_ticket(&self, key: &str) -> Result<Result<Serial, TicketError>, StoreError>;

    /// Removes sessions idle for `idle` and tickets expired an hour before `now`; how many.
    fn purge_short_lived(&self, now: OffsetDateTime, idle: Duration) -> Result<u64, StoreError>;
}

/// The claim rules both backends share: may `ticket` be claimed at `now`, with `busy` telling
/// whether another ticket of its account is issuing.
pub fn check_claim(ticket: &Ticket, now: OffsetDateTime, busy: bool) -> Result<(), TicketError> {
    if ticket.state != TicketState::Preprocessed {
        return Err(TicketError::Used);
    }
    if ticket.expires_at <= now {
        return Err(TicketError::Expired);
    }
    if busy {
        return Err(TicketError::Busy);
    }
    Ok(())
}

/// The move an installed-report makes.
pub fn install(ticket: &mut Ticket) -> Result<Serial, TicketError> {
    match ticket.state {
        TicketState::Issued(serial) | TicketState::Installed(serial) => {
            ticket.state = TicketState::Installed(serial);
            Ok(serial)
        }
        _ => Err(TicketError::Used),
    }
}

/// Whether a session last seen at `last_seen` is still alive at `now`.
pub fn alive(last_seen: OffsetDateTime, now: OffsetDateTime, idle: Duration) -> bool {
    now - last_seen < idle
}

/// Sessions and tickets in this process's memory: the embedded default.
#[derive(Debug, Default)]
pub struct MemorySessions {
    sessions: Mutex<HashMap<String, Session>>,
    tickets: Mutex<HashMap<String, Ticket>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SessionStore for MemorySessions {
    fn start_session(&self, key: &str, session: &Session) -> Result<(), StoreError> {
        let mut map = lock(&self.sessions);
        map.retain(|_, s| !(s.login_id == session.login_id && s.certificate == session.certificate));
        map.insert(key.to_owned(), session.clone());
        Ok(())
    }

    fn touch_session(&self, key: &str, now: OffsetDateTime, idle: Duration) -> Result<Option<Session>, StoreError> {
        let mut map = lock(&self.sessions);
        map.retain(|_, s| alive(s.last_seen, now, idle));
        Ok(map.get_mut(key).map(|session| {
            session.last_seen = now;
            session.clone()
        }))
    }

    fn update_session(&self, key: &str, change: &mut dyn FnMut(&mut Session)) -> Result<(), StoreError> {
        if let Some(session) = lock(&self.sessions).get_mut(key) {
            change(session);
        }
        Ok(())
    }

    fn end_session(&self, key: &str) -> Result<(), StoreError> {
        lock(&self.sessions).remove(key);
        Ok(())
    }

    fn put_ticket(&self, key: &str, ticket: &Ticket) -> Result<(), StoreError> {
        let mut map = lock(&self.tickets);
        // Forget tickets expired for a while, so the map cannot grow without bound.
        let now = OffsetDateTime::now_utc();
        map.retain(|_, t| t.expires_at + Duration::from_secs(3600) > now);
        map.insert(key.to_owned(), ticket.clone());
        Ok(())
    }

    fn claim_ticket(&self, key: &str, now: OffsetDateTime) -> Result<Result<Ticket, TicketError>, StoreError> {
        let mut map = lock(&self.tickets);
        let Some(ticket) = map.get(key) else { return Ok(Err(TicketError::Unknown)) };
        let busy =
            map.iter().any(|(k, t)| k != key && t.login_id == ticket.login_id && t.state == TicketState::Issuing);
        if let Err(e) = check_claim(ticket, now, busy) {
            return Ok(Err(e));
        }
        let Some(ticket) = map.get_mut(key) else { return Ok(Err(TicketError::Unknown)) };
        ticket.state = TicketState::Issuing;
        Ok(Ok(ticket.clone()))
    }

    fn set_ticket(&self, key: &str, state: &TicketState) -> Result<(), StoreError> {
        if let Some(ticket) = lock(&self.tickets).get_mut(key) {
            ticket.state = state.clone();
        }
        Ok(())
    }

    fn install_ticket(&self, key: &str) -> Result<Result<Serial, TicketError>, StoreError> {
        Ok(lock(&self.tickets).get_mut(key).map_or(Err(TicketError::Unknown), install))
    }

    fn purge_short_lived(&self, now: OffsetDateTime, idle: Duration) -> Result<u64, StoreError> {
        let mut removed = 0;
        {
            let mut map = lock(&self.sessions);
            let before = map.len();
            map.retain(|_, s| alive(s.last_seen, now, idle));
            removed += before - map.len();
        }
        let mut map = lock(&self.tickets);
        let before = map.len();
        map.retain(|_, t| t.expires_at + Duration::from_secs(3600) > now);
        removed += before - map.len();
        Ok(removed as u64)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{MemorySessions, SessionStore};

    #[test]
    fn memory_passes_the_conformance_suite() {
        // One process's memory: "reopening" finds the same store.
        let store: Arc<dyn SessionStore> = Arc::new(MemorySessions::default());
        super::super::conformance::sessions(&|| store.clone());
    }
}
