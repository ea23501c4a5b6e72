//! Short-lived in-memory state: enrollment tickets, sessions, per-client rate limits.
//!
//! None of it needs to survive a restart: a ticket lost to a restart means pre-processing
//! again, a session lost means logging in again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
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

/// Where an enrollment ticket is in the pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
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

/// A single-use enrollment ticket.
#[derive(Clone, Debug)]
pub struct Ticket {
    /// The account it was made for.
    pub login_id: String,
    /// Its state.
    pub state: TicketState,
    /// When it stops being usable.
    pub expires: Instant,
    /// The same, as wall-clock time for clients.
    pub expires_at: time::OffsetDateTime,
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
}

/// The enrollment tickets.
#[derive(Debug, Default)]
pub struct Tickets {
    map: Mutex<HashMap<String, Ticket>>,
}

impl Tickets {
    /// Makes a ticket for `login_id`, valid for `ttl`.
    pub fn create(&self, login_id: &str, ttl: Duration) -> (String, Ticket) {
        let token = random_token();
        let ticket = Ticket {
            login_id: login_id.to_owned(),
            state: TicketState::Preprocessed,
            expires: Instant::now() + ttl,
            expires_at: {
                let at = time::OffsetDateTime::now_utc() + ttl;
                at.replace_nanosecond(0).unwrap_or(at)
            },
        };
        let mut map = lock(&self.map);
        let now = Instant::now();
        // Forget tickets expired for a while, so the map cannot grow without bound.
        map.retain(|_, t| t.expires + Duration::from_secs(3600) > now);
        map.insert(token.clone(), ticket.clone());
        (token, ticket)
    }

    /// Claims a pre-processed ticket for issuance; only one caller can, and only while no other
    /// ticket of the same account is being issued.
    fn begin_issue(&self, token: &str) -> Result<Ticket, TicketError> {
        let mut map = lock(&self.map);
        let ticket = map.get(token).ok_or(TicketError::Unknown)?;
        if ticket.state != TicketState::Preprocessed {
            return Err(TicketError::Used);
        }
        if ticket.expires <= Instant::now() {
            return Err(TicketError::Expired);
        }
        let login_id = ticket.login_id.clone();
        if map.values().any(|t| t.login_id == login_id && t.state == TicketState::Issuing) {
            return Err(TicketError::Busy);
        }
        let ticket = map.get_mut(token).ok_or(TicketError::Unknown)?;
        ticket.state = TicketState::Issuing;
        Ok(ticket.clone())
    }

    fn set(&self, token: &str, state: TicketState) {
        if let Some(ticket) = lock(&self.map).get_mut(token) {
            ticket.state = state;
        }
    }

    /// [`Tickets::begin_issue`], as a claim that ends the issuance whatever happens: unless
    /// told otherwise, dropping it (an error, a request cut off midway) leaves the ticket spent,
    /// never stuck in issuance and never open for a second certificate.
    pub fn claim<'a>(&'a self, token: &'a str) -> Result<IssueClaim<'a>, TicketError> {
        let ticket = self.begin_issue(token)?;
        Ok(IssueClaim { tickets: self, token, ticket, ended: false })
    }

    /// Records that the browser saved the certificate.
    pub fn mark_installed(&self, token: &str) -> Result<Serial, TicketError> {
        let mut map = lock(&self.map);
        let ticket = map.get_mut(token).ok_or(TicketError::Unknown)?;
        match ticket.state {
            TicketState::Issued(serial) | TicketState::Installed(serial) => {
                ticket.state = TicketState::Installed(serial);
                Ok(serial)
            }
            _ => Err(TicketError::Used),
        }
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
        self.tickets.set(self.token, TicketState::Issued(serial));
        self.ended = true;
    }

    /// Nothing was issued (the CSR was refused, the CA was unreachable): the ticket may be
    /// used again.
    pub fn reopen(mut self) {
        self.tickets.set(self.token, TicketState::Preprocessed);
        self.ended = true;
    }
}

impl Drop for IssueClaim<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.tickets.set(self.token, TicketState::Spent);
        }
    }
}

/// A logged-in session on the certificate-login listener.
#[derive(Clone, Debug)]
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
    last_seen: Instant,
}

/// How far a login got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Certificate, password and (when the user has a token) a one-time password: logged in.
    Complete,
    /// Certificate and password; the one-time password is still to come.
    OtpPending,
    /// Certificate and password of a user who must use OTP and has no token: setting one up is
    /// all it may do.
    SetupOnly,
}

/// The sessions.
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Starts a session, ending any other session of the same account and certificate
    /// (the ID is new at each login).
    pub fn create(&self, login_id: &str, certificate: Serial, stage: Stage) -> (String, Session) {
        let id = random_token();
        let session = Session {
            login_id: login_id.to_owned(),
            certificate,
            csrf: random_token(),
            stage,
            challenge: None,
            last_seen: Instant::now(),
        };
        let mut map = lock(&self.map);
        map.retain(|_, s| !(s.login_id == login_id && s.certificate == certificate));
        map.insert(id.clone(), session.clone());
        (id, session)
    }

    /// The session `id` if it has been used within `idle`, refreshing it.
    pub fn touch(&self, id: &str, idle: Duration) -> Option<Session> {
        let mut map = lock(&self.map);
        let now = Instant::now();
        map.retain(|_, s| now.duration_since(s.last_seen) < idle);
        let session = map.get_mut(id)?;
        session.last_seen = now;
        Some(session.clone())
    }

    /// Moves session `id` to `stage`.
    pub fn set_stage(&self, id: &str, stage: Stage) {
        if let Some(session) = lock(&self.map).get_mut(id) {
            session.stage = stage;
        }
    }

    /// Sets (or clears) the cells session `id` asks for.
    pub fn set_challenge(&self, id: &str, cells: Option<[String; 2]>) {
        if let Some(session) = lock(&self.map).get_mut(id) {
            session.challenge = cells;
        }
    }

    /// Ends a session.
    pub fn remove(&self, id: &str) {
        lock(&self.map).remove(id);
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
        let (token, _) = tickets.create("alice", Duration::from_secs(60));
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
        let (short, _) = tickets.create("bob", Duration::ZERO);
        assert_eq!(tickets.claim(&short).map(drop), Err(TicketError::Expired));
    }

    #[test]
    fn a_claim_dropped_midway_spends_the_ticket_and_frees_the_account() {
        let tickets = Tickets::default();
        let (first, _) = tickets.create("erin", Duration::from_secs(60));
        let (second, _) = tickets.create("erin", Duration::from_secs(60));
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
        let (first, _) = tickets.create("carol", Duration::from_secs(60));
        let (second, _) = tickets.create("carol", Duration::from_secs(60));
        let (other, _) = tickets.create("dave", Duration::from_secs(60));
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
        let (first, _) = sessions.create("alice", serial, Stage::Complete);
        let (second, _) = sessions.create("alice", serial, Stage::Complete);
        assert_ne!(first, second);
        assert!(sessions.touch(&first, Duration::from_secs(60)).is_none(), "old session ended at login");
        assert!(sessions.touch(&second, Duration::from_secs(60)).is_some());
        assert!(sessions.touch(&second, Duration::ZERO).is_none(), "idle timeout");
    }
}
