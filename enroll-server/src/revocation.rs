//! Revocation: a user revokes its own certificate, a master those of its general users (both
//! confirming with their password), the operator any (admin socket or CLI). One implementation
//! ([`revoke`]) records it, tells the running service and writes the audit line.

use axum::Form;
use axum::extract::{Path, State};
use axum::response::{Json, Response};
use pki::registry::{CertRecord, Registry, RegistryError};
use pki::{RevocationReason, Serial};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::accounts::{Account, Password, Role};
use crate::error::{ErrorCode, WebError};
use crate::extract::{JsonBody, SignedIn};
use crate::forms::{SessionForm, session_form};
use crate::i18n::Lang;
use crate::ports::{Audit, Events};
use crate::state::{Shared, blocking};
use crate::users::Actor;

/// The reasons a user may give for its own certificate.
pub const OWN_REASONS: [RevocationReason; 2] =
    [RevocationReason::KeyCompromise, RevocationReason::CessationOfOperation];
/// The reasons a master may give for its general users' certificates.
pub const MASTER_REASONS: [RevocationReason; 5] = [
    RevocationReason::KeyCompromise,
    RevocationReason::CessationOfOperation,
    RevocationReason::AffiliationChanged,
    RevocationReason::PrivilegeWithdrawn,
    RevocationReason::Unspecified,
];

/// What [`revoke`] did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Revocation {
    /// The certificate asked for, as it is now.
    pub asked: CertRecord,
    /// Whether it was revoked now (false: it was revoked before, and only its key was acted on).
    pub newly: bool,
    /// The other certificates revoked now because they certify the same compromised key.
    pub others: Vec<CertRecord>,
    /// Whether the key was blocked now (false when it was blocked before, or the reason was not
    /// keyCompromise).
    pub key_blocked: bool,
}

impl Revocation {
    /// The certificates revoked now.
    pub fn revoked(&self) -> impl Iterator<Item = &CertRecord> {
        self.newly.then_some(&self.asked).into_iter().chain(&self.others)
    }
}

/// Revokes `serial` for `reason`, tells `events` and audits it. Whoever calls has checked that
/// `by` may. A compromised key follows the key, not the certificate: for keyCompromise the key
/// is blocked for any future issuance and every other certificate certifying it is revoked too,
/// for the same reason; on the operator's word that is done also when the certificate itself
/// was revoked before (its key was found compromised later). Whatever was revoked is announced and audited even when a
/// later step fails; the error is returned after.
pub fn revoke(
    registry: &dyn Registry,
    audit: &dyn Audit,
    events: &dyn Events,
    by: Actor<'_>,
    serial: Serial,
    reason: RevocationReason,
) -> Result<Revocation, WebError> {
    let now = OffsetDateTime::now_utc();
    let compromise = reason == RevocationReason::KeyCompromise;
    let (asked, newly) = match registry.revoke(&serial, now, reason) {
        Ok(record) => (record, true),
        Err(RegistryError::NotFound(_)) => {
            return Err(WebError::new(ErrorCode::NotFound, format!("no certificate with serial {serial}")));
        }
        Err(RegistryError::WrongState { status, .. }) => match registry.get(&serial)? {
            // Only the operator reports a compromise of a certificate revoked before.
            Some(record)
                if compromise
                    && matches!(by, Actor::Operator)
                    && matches!(record.state, pki::registry::State::Revoked { .. }) =>
            {
                (record, false)
            }
            _ => {
                return Err(WebError::new(
                    ErrorCode::NotRevocable,
                    format!("certificate {serial} cannot be revoked: it is {status}"),
                ));
            }
        },
        Err(other) => return Err(other.into()),
    };
    let mut done = Revocation { asked, newly, others: Vec::new(), key_blocked: false };
    let swept = if compromise { follow_the_key(registry, audit, by, &mut done, now) } else { Ok(()) };

    let serials: Vec<Serial> = done.revoked().map(|r| r.serial).collect();
    if !serials.is_empty() {
        events.revoked(&serials);
    }
    for r in done.revoked() {
        tracing::info!(by = by.name(), serial = %r.serial, reason = reason.name(), account = %r.account, "certificate revoked");
        audit.record(
            "certificate.revoked",
            serde_json::json!({ "by": by.name(), "serial": r.serial, "account": r.account, "reason": reason.name() }),
        );
    }
    swept.map(|()| done)
}

/// Blocks the key of `done.asked` and revokes every other issued certificate with it.
fn follow_the_key(
    registry: &dyn Registry,
    audit: &dyn Audit,
    by: Actor<'_>,
    done: &mut Revocation,
    now: OffsetDateTime,
) -> Result<(), WebError> {
    let (key, serial) = (done.asked.key_sha256, done.asked.serial);
    // Blocked first: no issuance for the key can slip in between.
    if registry.block_key(&key, &serial, now)? {
        done.key_blocked = true;
        audit.record(
            "key.blocked",
            serde_json::json!({ "by": by.name(), "key_sha256": pki::encoding::hex(&key), "serial": serial }),
        );
    }
    for other in registry.by_key(&key)? {
        if other.serial == serial || other.state != pki::registry::State::Issued {
            continue;
        }
        match registry.revoke(&other.serial, now, RevocationReason::KeyCompromise) {
            Ok(r) => done.others.push(r),
            Err(RegistryError::WrongState { .. }) => {} // revoked meanwhile
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Revokes `serial` for `account` (its own certificate, or, for a master, one of its general
/// users'), after the account's password is entered again.
async fn revoke_from_web(
    state: &Shared,
    account: &Account,
    serial: &str,
    password: Password,
    reason: &str,
) -> Result<CertRecord, WebError> {
    let serial: Serial =
        serial.parse().map_err(|e: pki::Error| WebError::new(ErrorCode::InvalidSerial, e.to_string()))?;
    let reason: RevocationReason =
        reason.parse().map_err(|e: pki::Error| WebError::new(ErrorCode::InvalidReason, e.to_string()))?;
    let record = state.registry.get(&serial)?.ok_or_else(WebError::not_found)?;
    // Users revoke the client certificates of their accounts: never a server's or the OCSP
    // responder's, whatever account those were recorded under.
    if record.profile != pki::Profile::Client {
        return Err(WebError::not_found());
    }
    let allowed: &[RevocationReason] = if record.account == account.login_id {
        &OWN_REASONS
    } else if account.role == Role::Master
        && state
            .accounts
            .get(&record.account)?
            .is_some_and(|user| user.role == Role::General && user.master == account.login_id)
    {
        &MASTER_REASONS
    } else {
        // Someone else's certificate: as if it did not exist.
        return Err(WebError::not_found());
    };
    if !allowed.contains(&reason) {
        let names: Vec<&str> = allowed.iter().map(|r| r.name()).collect();
        return Err(WebError::new(
            ErrorCode::ReasonNotAllowed,
            format!("reason {reason} is not allowed here; use one of {}", names.join(", ")),
        ));
    }
    // Confirm with the password (wrong ones count towards the lockout).
    state.authenticate(&account.login_id, password, "revocation").await?;
    let (state, account) = (state.clone(), account.clone());
    let done = blocking(move || {
        revoke(state.registry.as_ref(), state.audit.as_ref(), state.as_ref(), Actor::User(&account), serial, reason)
    })
    .await??;
    Ok(done.asked)
}

/// `POST /api/v1/certificates/{serial}/revoke` body.
#[derive(Debug, Deserialize)]
pub struct RevokeBody {
    password: Password,
    reason: String,
}

/// `POST /api/v1/certificates/{serial}/revoke`.
pub async fn api_revoke(
    State(state): State<Shared>,
    signed_in: SignedIn,
    Path(serial): Path<String>,
    JsonBody(body): JsonBody<RevokeBody>,
) -> Result<Json<serde_json::Value>, WebError> {
    let record = revoke_from_web(&state, &signed_in.account, &serial, body.password, &body.reason).await?;
    Ok(Json(serde_json::json!({
        "serial": record.serial.to_string(),
        "status": record.status(OffsetDateTime::now_utc()).name(),
    })))
}

/// The revocation form's fields.
#[derive(Debug, Deserialize)]
pub struct RevokeForm {
    csrf: String,
    password: Password,
    reason: String,
}

impl SessionForm for RevokeForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /certificates/{serial}/revoke` (form on the home page). Revoking the certificate in
/// use ends the session: the login page then says why.
pub async fn revoke_form(
    State(state): State<Shared>,
    signed_in: Result<SignedIn, WebError>,
    lang: Lang,
    Path(serial): Path<String>,
    form: Result<Form<RevokeForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    session_form(&state, signed_in, lang, form, async move |state, signed_in, form: RevokeForm| {
        revoke_from_web(state, &signed_in.account, &serial, form.password, &form.reason).await.map(drop)
    })
    .await
}
