//! Short-lived state: enrollment tickets and sessions (in a [`SessionStore`]: memory for the
//! embedded service, the database when several instances share them), per-client rate limits
//! (in memory, per instance).
//!
//! None of it needs to survive a restart of an embedded service: a ticket lost to a restart
//! means pre-processing again, a session lost means logging in again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use pki::Serial;

/// 32 random bytes as 64 hex digits: tickets, session IDs, CSRF tokens.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // Without a working system RNG no token is safe to hand out.
    aws_lc_rs::rand::fill(&mut bytes).unwrap_or_else(|_| std::process::abort());
    pki::encoding::hex(&bytes)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

use crate::stores::StoreError;
use crate::stores::sessions::{MemorySessions, SessionStore};
pub use crate::stores::sessions::{Session, Stage, Ticket, TicketError, TicketState};

/// The store key of a token: its SHA-256 in hex (the token itself is never stored).
fn key(token: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    pki::encoding::hex(digest.as_ref())
}

fn now() -> time::OffsetDateTime {
    let at = time::OffsetDateTime::now_utc();
    at.replace_nanosecond(0).unwrap_or(at)
}

/// A store failure behind a ticket operation: logged here, [`TicketError::Unavailable`] to the
/// caller.
fn unavailable(e: &StoreError) -> TicketError {
    tracing::error!(error = %e, "the session store failed");
    TicketError::Unavailable
}

/// The enrollment tickets.
#[derive(Clone)]
pub struct Tickets {
    store: Arc<dyn SessionStore>,
}

impl Default for Tickets {
    fn default() -> Self {
        Self::new(Arc::new(MemorySessions::default()))
    }
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tickets").finish_non_exhaustive()
    }
}

impl Tickets {
    /// The tickets of `store`.
    pub fn new(store: Arc<dyn SessionStore>) -> Self {
        Self { store }
    }

    /// Makes a ticket for `login_id`, valid for `ttl`.
    pub fn create(&self, login_id: &str, ttl: Duration) -> Result<(String, Ticket), StoreError> {
        let token = random_token();
        let ticket =
            Ticket { login_id: login_id.to_owned(), state: TicketState::Preprocessed, expires_at: now() + ttl };
        self.store.put_ticket(&key(&token), &ticket)?;
        Ok((token, ticket))
    }

    fn set(&self, token: &str, state: &TicketState) {
        if let Err(e) = self.store.set_ticket(&key(token), state) {
            unavailable(&e);
        }
    }

    /// Claims a pre-processed ticket for issuance, as a claim that ends the issuance whatever
    /// happens: only one caller can (on any instance), and only while no other ticket of the
    /// same account is being issued. Unless told otherwise, dropping the claim (an error, a
    /// request cut off midway) leaves the ticket spent, never stuck in issuance and never open
    /// for a second certificate.
    pub fn claim<'a>(&'a self, token: &'a str) -> Result<IssueClaim<'a>, TicketError> {
        let ticket = self.store.claim_ticket(&key(token), now()).map_err(|e| unavailable(&e))??;
        Ok(IssueClaim { tickets: self, token, ticket, ended: false })
    }

    /// Records that the browser saved the certificate.
    pub fn mark_installed(&self, token: &str) -> Result<Serial, TicketError> {
        self.store.install_ticket(&key(token)).map_err(|e| unavailable(&e))?
    }
}

/// A ticket being issued; see [`Tickets::claim`].
#[derive(Debug)]
pub struct IssueClaim<'a> {
    tickets: &'a Tickets,
    token: &'a str,
    ticket: Ticket,
    ended: bool,
}

impl IssueClaim<'_> {
    /// The ticket, as claimed.
    pub fn ticket(&self) -> &Ticket {
        &self.ticket
    }

    /// The certificate was issued.
    pub fn issued(mut self, serial: Serial) {
        self.tickets.set(self.token, &TicketState::Issued(serial));
        self.ended = true;
    }

    /// Nothing was issued (the CSR was refused, the CA was unreachable): the ticket may be
    /// used again.
    pub fn reopen(mut self) {
        self.tickets.set(self.token, &TicketState::Preprocessed);
        self.ended = true;
    }
}

impl Drop for IssueClaim<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.tickets.set(self.token, &TicketState::Spent);
        }
    }
}

/// The sessions.
#[derive(Clone)]
pub struct Sessions {
    store: Arc<dyn SessionStore>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new(Arc::new(MemorySessions::default()))
    }
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

impl Sessions {
    /// The sessions of `store`.
    pub fn new(store: Arc<dyn SessionStore>) -> Self {
        Self { store }
    }

    /// Starts a session, ending any other session of the same account and certificate
    /// (the ID is new at each login).
    pub fn create(&self, login_id: &str, certificate: Serial, stage: Stage) -> Result<(String, Session), StoreError> {
        let id = random_token();
        let session = Session {
            login_id: login_id.to_owned(),
            certificate,
            csrf: random_token(),
            stage,
            challenge: None,
            last_seen: now(),
        };
        self.store.start_session(&key(&id), &session)?;
        Ok((id, session))
    }

    /// The session `id` if it has been used within `idle`, refreshing it.
    pub fn touch(&self, id: &str, idle: Duration) -> Result<Option<Session>, StoreError> {
        self.store.touch_session(&key(id), now(), idle)
    }

    /// Moves session `id` to `stage`.
    pub fn set_stage(&self, id: &str, stage: Stage) -> Result<(), StoreError> {
        self.store.update_session(&key(id), &mut |s| s.stage = stage)
    }

    /// Sets (or clears) the cells session `id` asks for.
    pub fn set_challenge(&self, id: &str, cells: Option<[String; 2]>) -> Result<(), StoreError> {
        self.store.update_session(&key(id), &mut |s| s.challenge = cells.clone())
    }

    /// Ends a session.
    pub fn remove(&self, id: &str) -> Result<(), StoreError> {
        self.store.end_session(&key(id))
    }

    /// Removes what lapsed: sessions idle for `idle`, tickets an hour past their end.
    pub fn purge(&self, idle: Duration) -> Result<u64, StoreError> {
        self.store.purge_short_lived(now(), idle)
    }
}

/// Token buckets per client address.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_minute` requests per address per minute, in bursts of up to `per_minute`.
    pub fn new(per_minute: u32) -> Self {
        Self { per_minute: per_minute.max(1), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `ip`; `Err(seconds)` says when to retry.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        let capacity = f64::from(self.per_minute);
        let refill = capacity / 60.0;
        let now = Instant::now();
        let mut buckets = lock(&self.buckets);
        if buckets.len() > 10_000 {
            buckets.retain(|_, (_, t)| now.duration_since(*t) < Duration::from_secs(120));
        }
        let (tokens, last) = buckets.entry(ip).or_insert((capacity, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * refill).min(capacity);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / refill).ceil() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_single_use() {
        let tickets = Tickets::default();
        let (token, _) = tickets.create("alice", Duration::from_secs(60)).expect("create");
        let claim = tickets.claim(&token).expect("claim");
        assert_eq!(claim.ticket().login_id, "alice");
        assert_eq!(tickets.claim(&token).map(drop), Err(TicketError::Used), "in progress");
        claim.reopen();
        let claim = tickets.claim(&token).expect("a refused CSR frees the ticket");
        let serial = Serial::from_random([1; 16]).expect("serial");
        claim.issued(serial);
        assert_eq!(tickets.claim(&token).map(drop), Err(TicketError::Used));
        assert_eq!(tickets.mark_installed(&token), Ok(serial));
        assert_eq!(tickets.claim("nope").map(drop), Err(TicketError::Unknown));
        let (short, _) = tickets.create("bob", Duration::ZERO).expect("create");
        assert_eq!(tickets.claim(&short).map(drop), Err(TicketError::Expired));
    }

    #[test]
    fn a_claim_dropped_midway_spends_the_ticket_and_frees_the_account() {
        let tickets = Tickets::default();
        let (first, _) = tickets.create("erin", Duration::from_secs(60)).expect("create");
        let (second, _) = tickets.create("erin", Duration::from_secs(60)).expect("create");
        let claim = tickets.claim(&first).expect("claim");
        assert_eq!(tickets.claim(&second).map(drop), Err(TicketError::Busy));
        drop(claim); // the request was cut off, or failed after the CA may have signed
        assert_eq!(tickets.claim(&first).map(drop), Err(TicketError::Used), "never a second certificate");
        assert_eq!(tickets.mark_installed(&first), Err(TicketError::Used), "nothing to install");
        assert!(tickets.claim(&second).is_ok(), "the account is not stuck");
    }

    #[test]
    fn one_issuance_at_a_time_per_account() {
        let tickets = Tickets::default();
        let (first, _) = tickets.create("carol", Duration::from_secs(60)).expect("create");
        let (second, _) = tickets.create("carol", Duration::from_secs(60)).expect("create");
        let (other, _) = tickets.create("dave", Duration::from_secs(60)).expect("create");
        let claim = tickets.claim(&first).expect("claim");
        assert_eq!(tickets.claim(&second).map(drop), Err(TicketError::Busy));
        assert!(tickets.claim(&other).is_ok(), "another account is not held up");
        claim.reopen();
        assert!(tickets.claim(&second).is_ok(), "free again once the first is done");
    }

    #[test]
    fn rate_limit_refuses_bursts() {
        let limiter = RateLimiter::new(3);
        let ip = IpAddr::from([127, 0, 0, 1]);
        assert!((0..3).all(|_| limiter.check(ip).is_ok()));
        assert!(limiter.check(ip).is_err());
        assert!(limiter.check(IpAddr::from([127, 0, 0, 2])).is_ok(), "per address");
    }

    #[test]
    fn sessions_rotate_and_expire() {
        let sessions = Sessions::default();
        let serial = Serial::from_random([2; 16]).expect("serial");
        let (first, _) = sessions.create("alice", serial, Stage::Complete).expect("create");
        let (second, _) = sessions.create("alice", serial, Stage::Complete).expect("create");
        assert_ne!(first, second);
        assert!(
            sessions.touch(&first, Duration::from_secs(60)).expect("touch").is_none(),
            "old session ended at login"
        );
        assert!(sessions.touch(&second, Duration::from_secs(60)).expect("touch").is_some());
        assert!(sessions.touch(&second, Duration::ZERO).expect("touch").is_none(), "idle timeout");
    }
}
