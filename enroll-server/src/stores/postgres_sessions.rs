//! Sessions and tickets on PostgreSQL, shared by every instance: one row each, with the
//! columns the shared rules read (account, certificate, last use, state, end) beside the
//! document. A claim holds the ticket's row and a transaction lock on its account, so of two
//! instances claiming tickets of one account at once, one waits and then sees the other's.

use std::time::Duration;

use pki::Serial;
use time::OffsetDateTime;

use super::StoreError;
use super::postgres::{PgStores, decode, encode, err, outside_runtime};
use super::sessions::{self, Session, SessionStore, Ticket, TicketError, TicketState};

/// A session's last use is written again only when it is older than this, so a busy session
/// does not cost a write per request (the idle limit is minutes).
const TOUCH_EVERY: time::Duration = time::Duration::seconds(15);

fn idle_limit(now: OffsetDateTime, idle: Duration) -> OffsetDateTime {
    now - time::Duration::try_from(idle).unwrap_or(time::Duration::MAX)
}

fn write_ticket(tx: &mut postgres::Transaction<'_>, key: &str, ticket: &Ticket) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO tickets (key, login_id, state, expires_at, doc) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (key) DO UPDATE SET state = $3, doc = $5",
        &[&key, &ticket.login_id, &ticket.state.name(), &ticket.expires_at, &encode(ticket)?],
    )
    .map_err(err)?;
    Ok(())
}

impl SessionStore for PgStores {
    fn start_session(&self, key: &str, session: &Session) -> Result<(), StoreError> {
        outside_runtime(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction().map_err(err)?;
            let certificate = session.certificate.to_string();
            tx.execute(
                "DELETE FROM sessions WHERE login_id = $1 AND certificate = $2",
                &[&session.login_id, &certificate],
            )
            .map_err(err)?;
            // The row's last_seen column is the one that counts; the document's is its first.
            tx.execute(
                "INSERT INTO sessions (key, login_id, certificate, last_seen, doc) VALUES ($1, $2, $3, $4, $5)",
                &[&key, &session.login_id, &certificate, &session.last_seen, &encode(session)?],
            )
            .map_err(err)?;
            tx.commit().map_err(err)
        })
    }

    fn touch_session(&self, key: &str, now: OffsetDateTime, idle: Duration) -> Result<Option<Session>, StoreError> {
        outside_runtime(|| {
            let mut conn = self.conn()?;
            let Some(row) =
                conn.query_opt("SELECT last_seen, doc FROM sessions WHERE key = $1", &[&key]).map_err(err)?
            else {
                return Ok(None);
            };
            let last_seen: OffsetDateTime = row.get(0);
            let mut session: Session = decode(row.get(1))?;
            if last_seen <= idle_limit(now, idle) {
                conn.execute(
                    "DELETE FROM sessions WHERE key = $1 AND last_seen <= $2",
                    &[&key, &idle_limit(now, idle)],
                )
                .map_err(err)?;
                return Ok(None);
            }
            if now - last_seen >= TOUCH_EVERY {
                conn.execute("UPDATE sessions SET last_seen = $2 WHERE key = $1 AND last_seen < $2", &[&key, &now])
                    .map_err(err)?;
                session.last_seen = now;
            } else {
                session.last_seen = last_seen;
            }
            Ok(Some(session))
        })
    }

    fn update_session(&self, key: &str, change: &mut dyn FnMut(&mut Session)) -> Result<(), StoreError> {
        outside_runtime(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction().map_err(err)?;
            let Some(row) = tx.query_opt("SELECT doc FROM sessions WHERE key = $1 FOR UPDATE", &[&key]).map_err(err)?
            else {
                return Ok(());
            };
            let mut session: Session = decode(row.get(0))?;
            change(&mut session);
            tx.execute("UPDATE sessions SET doc = $2 WHERE key = $1", &[&key, &encode(&session)?]).map_err(err)?;
            tx.commit().map_err(err)
        })
    }

    fn end_session(&self, key: &str) -> Result<(), StoreError> {
        outside_runtime(|| {
            self.conn()?.execute("DELETE FROM sessions WHERE key = $1", &[&key]).map_err(err)?;
            Ok(())
        })
    }

    fn put_ticket(&self, key: &str, ticket: &Ticket) -> Result<(), StoreError> {
        outside_runtime(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction().map_err(err)?;
            write_ticket(&mut tx, key, ticket)?;
            tx.commit().map_err(err)
        })
    }

    fn claim_ticket(&self, key: &str, now: OffsetDateTime) -> Result<Result<Ticket, TicketError>, StoreError> {
        outside_runtime(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction().map_err(err)?;
            let Some(row) = tx.query_opt("SELECT login_id FROM tickets WHERE key = $1", &[&key]).map_err(err)? else {
                return Ok(Err(TicketError::Unknown));
            };
            let login_id: String = row.get(0);
            // One claimer per account at a time, on any instance; released with the transaction.
            tx.execute("SELECT pg_advisory_xact_lock(7312100, hashtext($1))", &[&login_id]).map_err(err)?;
            let row = tx.query_one("SELECT doc FROM tickets WHERE key = $1 FOR UPDATE", &[&key]).map_err(err)?;
            let mut ticket: Ticket = decode(row.get(0))?;
            let busy = tx
                .query_opt(
                    "SELECT 1 FROM tickets WHERE login_id = $1 AND state = 'issuing' AND key <> $2 LIMIT 1",
                    &[&login_id, &key],
                )
                .map_err(err)?
                .is_some();
            if let Err(e) = sessions::check_claim(&ticket, now, busy) {
                return Ok(Err(e));
            }
            ticket.state = TicketState::Issuing;
            write_ticket(&mut tx, key, &ticket)?;
            tx.commit().map_err(err)?;
            Ok(Ok(ticket))
        })
    }

    fn set_ticket(&self, key: &str, state: &TicketState) -> Result<(), StoreError> {
        outside_runtime(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction().map_err(err)?;
            let Some(row) = tx.query_opt("SELECT doc FROM tickets WHERE key = $1 FOR UPDATE", &[&key]).map_err(err)?
            else {
                return Ok(());
            };
            let mut ticket: Ticket = decode(row.get(0))?;
            ticket.state = state.clone();
            write_ticket(&mut tx, key, &ticket)?;
            tx.commit().map_err(err)
        })
    }

    fn install_ticket(&self, key: &str) -> Result<Result<Serial, TicketError>, StoreError> {
        outside_runtime(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction().map_err(err)?;
            let Some(row) = tx.query_opt("SELECT doc FROM tickets WHERE key = $1 FOR UPDATE", &[&key]).map_err(err)?
            else {
                return Ok(Err(TicketError::Unknown));
            };
            let mut ticket: Ticket = decode(row.get(0))?;
            let answer = sessions::install(&mut ticket);
            if answer.is_ok() {
                write_ticket(&mut tx, key, &ticket)?;
                tx.commit().map_err(err)?;
            }
            Ok(answer)
        })
    }

    fn purge_short_lived(&self, now: OffsetDateTime, idle: Duration) -> Result<u64, StoreError> {
        outside_runtime(|| {
            let mut conn = self.conn()?;
            let sessions =
                conn.execute("DELETE FROM sessions WHERE last_seen <= $1", &[&idle_limit(now, idle)]).map_err(err)?;
            let tickets = conn
                .execute("DELETE FROM tickets WHERE expires_at <= $1", &[&(now - time::Duration::hours(1))])
                .map_err(err)?;
            Ok(sessions + tickets)
        })
    }
}
