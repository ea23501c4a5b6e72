//! One-time passwords (ワンタイムパスワード): TOTP tokens of RFC 6238, one per login ID.
//!
//! - Issue (トークン発行): after certificate + password login the user gives a mail address and
//!   an activation password (4–8 digits); a pending token is made with 160 random bits and
//!   shown as an `otpauth://` URI and its QR code, with the service ID and user ID an app asks
//!   for. The app may also take the secret itself with those IDs and the activation password
//!   (5 wrong tries lock it, 24 h at most).
//! - First verification (認証確認): a current code makes the token active.
//! - Use: a code is accepted for the current step or one either side, once: the last
//!   accepted step is stored and any code at or before it is refused, in one atomic update.
//!   Codes are compared in constant time. Wrong codes in a row stop OTP use (利用停止) at the
//!   configured count; a master (general users) or the operator lifts it, time does not.
//! - Revocation (失効): a new token only after a waiting time, and not from a revocation in
//!   the night window until the window ends.
//!
//! Secrets are sealed at rest with the service's OTP key (AES-256-GCM, the login ID bound as
//! associated data), a file of its own beside the service's TLS key, never the CA's key.

use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde::Serialize;
use time::{Duration, OffsetDateTime, UtcOffset};
use totp_rs::{Algorithm, Builder, Secret};
use zeroize::Zeroizing;

use crate::accounts::{Password, hash_secret, verify_secret};
use crate::error::{ErrorCode, WebError};
use crate::mail::MailQueue;
use crate::stores::{Activation, HardwareSeed, OtpState, OtpStore, OtpToken, StoreError};

/// Bytes of a token secret: 160 bits, as RFC 4226 recommends.
const SECRET_LEN: usize = 20;
/// Wrong activation passwords before the app provisioning is locked.
const ACTIVATION_TRIES: u32 = 5;
/// How long the app may take the secret of a pending token.
const ACTIVATION_TTL: Duration = Duration::hours(24);

pub use crate::settings::OtpSettings;

/// What the user sees once a token is issued.
#[derive(Serialize)]
pub struct Provisioning {
    /// サービスID.
    pub service_id: String,
    /// ユーザID.
    pub user_id: String,
    /// The `otpauth://totp/...` URI (it holds the secret).
    #[serde(serialize_with = "reveal")]
    pub otpauth_uri: Zeroizing<String>,
    /// The URI as a QR code, SVG.
    pub qr_svg: String,
}

impl std::fmt::Debug for Provisioning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioning").field("user_id", &self.user_id).finish_non_exhaustive()
    }
}

/// What the app gets from `POST /api/v1/otp/provision`, once.
#[derive(Serialize)]
pub struct AppSecret {
    /// The secret, base32 without padding.
    #[serde(serialize_with = "reveal")]
    pub secret: Zeroizing<String>,
    /// HMAC algorithm.
    pub algorithm: &'static str,
    /// Digits.
    pub digits: u32,
    /// Step in seconds.
    pub period: u32,
}

/// The outcome of a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted (and its step is spent).
    Accepted,
    /// Wrong, or already used; OTP use goes on.
    Wrong {
        /// Wrong codes in a row now.
        failures: u32,
    },
    /// Wrong, and OTP use is now stopped (利用停止).
    Stopped,
}

/// Serializes a secret string, for the one answer that carries it.
fn reveal<S: serde::Serializer>(secret: &Zeroizing<String>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secret)
}

/// The key that seals token secrets.
pub struct OtpKey(LessSafeKey);

impl std::fmt::Debug for OtpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OtpKey(..)")
    }
}

impl OtpKey {
    /// Reads the key at `path` (32 bytes), making it (0600) if there is none.
    pub fn load_or_create(path: &Path) -> Result<Self, StoreError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let bytes = match std::fs::read(path) {
            Ok(bytes) => Zeroizing::new(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut fresh = Zeroizing::new(vec![0u8; 32]);
                aws_lc_rs::rand::fill(&mut fresh).map_err(|_| StoreError("the random source failed".into()))?;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| StoreError(format!("making {}: {e}", path.display())))?;
                file.write_all(&fresh).and_then(|()| file.sync_all()).map_err(|e| StoreError(e.to_string()))?;
                fresh
            }
            Err(e) => return Err(StoreError(format!("reading {}: {e}", path.display()))),
        };
        Self::from_bytes(&bytes).ok_or_else(|| StoreError(format!("{}: not a 32-byte key", path.display())))
    }

    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 32 {
            return None;
        }
        UnboundKey::new(&AES_256_GCM, bytes).ok().map(|k| Self(LessSafeKey::new(k)))
    }

    fn seal(&self, login_id: &str, secret: &[u8]) -> Result<Vec<u8>, WebError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|e| WebError::internal("random", e))?;
        let mut sealed = secret.to_vec();
        self.0
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(login_id.as_bytes()), &mut sealed)
            .map_err(|e| WebError::internal("sealing an OTP secret", e))?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    fn open(&self, login_id: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, WebError> {
        let broken = || WebError::internal("OTP secret", "cannot be opened with this service's OTP key");
        let (nonce, rest) = sealed.split_at_checked(NONCE_LEN).ok_or_else(broken)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| broken())?;
        let mut buf = Zeroizing::new(rest.to_vec());
        let plain = self.0.open_in_place(nonce, Aad::from(login_id.as_bytes()), &mut buf).map_err(|_| broken())?;
        Ok(Zeroizing::new(plain.to_vec()))
    }
}

/// The OTP service: the tokens, their key and the rules.
pub struct Otp {
    store: Arc<dyn OtpStore>,
    key: OtpKey,
    /// The rules.
    pub settings: OtpSettings,
    mail: Option<MailQueue>,
}

impl std::fmt::Debug for Otp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Otp").field("settings", &self.settings).finish_non_exhaustive()
    }
}

fn store_error(e: StoreError) -> WebError {
    WebError::internal("OTP store", e)
}

/// The activation password's rule: 4 to 8 digits.
fn check_activation_password(password: &Password) -> Result<(), WebError> {
    let p = password.reveal();
    if !(4..=8).contains(&p.len()) || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WebError::new(ErrorCode::InvalidRequest, "the activation password is 4 to 8 digits"));
    }
    Ok(())
}

/// A mail address, checked loosely (one '@', something either side, no spaces).
fn check_mail(mail: &str) -> Result<(), WebError> {
    let ok = mail.len() <= 254
        && mail.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
        })
        && mail.matches('@').count() == 1
        && !mail.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        return Err(WebError::new(ErrorCode::InvalidRequest, "the mail address is not one (name@example.jp)"));
    }
    Ok(())
}

/// A code as typed: exactly `digits` ASCII digits. Public for the fuzz target.
pub fn parse_code(code: &str, digits: u32) -> Result<&str, WebError> {
    let code = code.trim();
    if code.len() != digits as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WebError::new(ErrorCode::InvalidOtp, format!("a one-time password is {digits} digits")));
    }
    Ok(code)
}

fn unix(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp()).unwrap_or(0)
}

/// The time step whose code `code` is, if it is the code of the current step or one either
/// side; compared in constant time.
fn matching_step(totp: &totp_rs::Totp, step_secs: u32, code: &str, now: OffsetDateTime) -> Option<u64> {
    let step_secs = u64::from(step_secs);
    let current = unix(now) / step_secs;
    [current.saturating_sub(1), current, current + 1].into_iter().find(|&step| {
        let expected = totp.generate(step * step_secs).to_string();
        aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_bytes(), code.as_bytes()).is_ok()
    })
}

impl Otp {
    /// The service over `store`, sealing with `key`.
    pub fn new(store: Arc<dyn OtpStore>, key: OtpKey, settings: OtpSettings) -> Self {
        Self { store, key, settings, mail: None }
    }

    /// The same, telling the token's mail address of issue, revocation and stop.
    pub fn with_mail(mut self, queue: Option<MailQueue>) -> Self {
        self.mail = queue;
        self
    }

    /// Imports hardware-token seeds (from a PSKC file), all or none: refused, naming them, when
    /// any serial is known already.
    pub fn import(&self, seeds: &[crate::pskc::Seed], now: OffsetDateTime) -> Result<usize, WebError> {
        let mut stored = Vec::with_capacity(seeds.len());
        for seed in seeds {
            stored.push(HardwareSeed {
                serial: seed.serial.clone(),
                sealed_secret: self.key.seal(&format!("hw:{}", seed.serial), &seed.secret)?,
                digits: seed.digits,
                step_secs: seed.step_secs,
                imported_at: now,
                assigned_to: None,
            });
        }
        match self.store.put_seeds(&stored).map_err(store_error)? {
            Ok(()) => Ok(stored.len()),
            Err(taken) => Err(WebError::new(
                ErrorCode::Exists,
                format!("already imported: {}; nothing was imported from this file", taken.join(", ")),
            )),
        }
    }

    /// Registers the hardware token `serial` for `login_id` with its current code: the token is
    /// in use at once (the code is its first verification). `ask_at_login` false is for
    /// personal contracts only (the caller says which `personal` is).
    pub fn register_hardware(
        &self,
        login_id: &str,
        serial: &str,
        code: &str,
        ask_at_login: bool,
        personal: bool,
        now: OffsetDateTime,
    ) -> Result<OtpToken, WebError> {
        if !ask_at_login && !personal {
            return Err(WebError::new(
                ErrorCode::InvalidRequest,
                "business contracts always ask for the one-time password at login",
            ));
        }
        let unknown = || WebError::new(ErrorCode::NotFound, "no unregistered hardware token has this serial number");
        let seed =
            self.store.seed(serial).map_err(store_error)?.filter(|s| s.assigned_to.is_none()).ok_or_else(unknown)?;
        self.may_have_new_token(login_id, now)?;
        let secret = self.key.open(&format!("hw:{serial}"), &seed.sealed_secret)?;
        let code = parse_code(code, seed.digits)?;
        let candidate = OtpToken {
            login_id: login_id.to_owned(),
            user_id: serial.to_owned(),
            sealed_secret: self.key.seal(login_id, &secret)?,
            step_secs: seed.step_secs,
            digits: seed.digits,
            mail: None,
            state: OtpState::Active,
            created_at: now,
            revoked_at: None,
            last_step: None,
            failures: 0,
            stopped: false,
            activation: None,
            serial: Some(serial.to_owned()),
            ask_at_login,
        };
        let totp = self.totp(login_id, &secret, &candidate)?;
        let Some(step) = matching_step(&totp, seed.step_secs, code, now) else {
            return Err(WebError::new(ErrorCode::InvalidOtp, "the code is not the token's current one-time password"));
        };
        if !self.store.assign_seed(serial, login_id).map_err(store_error)? {
            return Err(unknown());
        }
        let token = OtpToken { last_step: Some(step), ..candidate };
        self.store.put(&token).map_err(store_error)?;
        Ok(token)
    }

    /// Seals a customer card of `login_id` with the service's key.
    pub fn seal_card(&self, login_id: &str, card: &crate::card::Card) -> Result<Vec<u8>, WebError> {
        self.key.seal(&format!("card:{login_id}"), &card.to_bytes())
    }

    /// Opens a card sealed by [`Otp::seal_card`].
    pub fn open_card(&self, login_id: &str, sealed: &[u8]) -> Result<crate::card::Card, WebError> {
        let bytes = self.key.open(&format!("card:{login_id}"), sealed)?;
        crate::card::Card::from_bytes(&bytes).ok_or_else(|| WebError::internal("customer card", "not a card"))
    }

    /// The mail queue its notices go to.
    pub fn mail(&self) -> Option<&MailQueue> {
        self.mail.as_ref()
    }

    /// Queues a notice about `token` to its mail address, if it has one and mail is on.
    fn notice(&self, token: &OtpToken, event: &str, at: OffsetDateTime, ja: &[String], en: &[String], subject: &str) {
        if let (Some(queue), Some(to)) = (&self.mail, &token.mail) {
            let key = format!("{event}:{}:{}", token.login_id, at.unix_timestamp());
            queue.send(&key, to, subject, crate::mail::body(ja, en));
        }
    }

    /// The token of `login_id`.
    pub fn token(&self, login_id: &str) -> Result<Option<OtpToken>, WebError> {
        self.store.get(login_id).map_err(store_error)
    }

    /// Every token.
    pub fn list(&self) -> Result<Vec<OtpToken>, WebError> {
        self.store.list().map_err(store_error)
    }

    /// Whether `login_id` must give a code at login: it has an active token.
    pub fn active(&self, login_id: &str) -> Result<Option<OtpToken>, WebError> {
        Ok(self.token(login_id)?.filter(|t| t.state == OtpState::Active))
    }

    /// When a new token may be issued after a revocation at `revoked_at`.
    pub fn reissue_from(&self, revoked_at: OffsetDateTime) -> OffsetDateTime {
        let after_wait = revoked_at + self.settings.reissue_wait;
        let local = revoked_at.to_offset(self.settings.utc_offset);
        let (start, end) = self.settings.night;
        let at = local.time();
        let in_night = if start > end { at >= start || at < end } else { at >= start && at < end };
        if !in_night {
            return after_wait;
        }
        let mut night_end = local.replace_time(end);
        if night_end <= local {
            night_end += Duration::days(1);
        }
        after_wait.max(night_end.to_offset(UtcOffset::UTC))
    }

    /// Refuses a new token while `login_id` has one in use (one per login ID), and within the
    /// waiting time after a revocation, saying from when.
    fn may_have_new_token(&self, login_id: &str, now: OffsetDateTime) -> Result<(), WebError> {
        match self.token(login_id)? {
            Some(t) if t.state == OtpState::Active => {
                return Err(WebError::new(
                    ErrorCode::Exists,
                    "this login ID has a token in use (one per login ID); it must be revoked first",
                ));
            }
            Some(OtpToken { state: OtpState::Revoked, revoked_at: Some(at), .. }) if now < self.reissue_from(at) => {
                let from = self.reissue_from(at).to_offset(self.settings.utc_offset);
                return Err(WebError::new(
                    ErrorCode::OtpReissueWait,
                    format!("a new token can be issued from {}", pki::encoding::rfc3339(from).replace('Z', "")),
                ));
            }
            _ => {}
        }
        Ok(())
    }

    /// Issues a pending token for `login_id` (replacing a pending one); refused while it has an
    /// active token, and within the waiting time after a revocation.
    pub fn issue(
        &self,
        login_id: &str,
        mail: &str,
        activation_password: &Password,
        step_secs: Option<u32>,
        now: OffsetDateTime,
    ) -> Result<Provisioning, WebError> {
        check_mail(mail)?;
        check_activation_password(activation_password)?;
        self.may_have_new_token(login_id, now)?;
        let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
        aws_lc_rs::rand::fill(&mut *secret).map_err(|e| WebError::internal("random", e))?;
        let mut id = [0u8; 5];
        aws_lc_rs::rand::fill(&mut id).map_err(|e| WebError::internal("random", e))?;
        // Ten decimal digits: what an app's ユーザID field takes.
        let user_id =
            format!("{:010}", u64::from_be_bytes([0, 0, 0, id[0], id[1], id[2], id[3], id[4]]) % 10_000_000_000);
        let token = OtpToken {
            login_id: login_id.to_owned(),
            user_id: user_id.clone(),
            sealed_secret: self.key.seal(login_id, &*secret)?,
            step_secs: step_secs.unwrap_or(self.settings.step_secs),
            digits: self.settings.digits,
            mail: Some(mail.to_owned()),
            state: OtpState::Pending,
            created_at: now,
            revoked_at: None,
            last_step: None,
            failures: 0,
            stopped: false,
            activation: Some(Activation {
                password_hash: hash_secret(activation_password)?,
                tries: 0,
                expires_at: now + ACTIVATION_TTL,
            }),
            serial: None,
            ask_at_login: true,
        };
        self.store.put(&token).map_err(store_error)?;
        self.notice(
            &token,
            "otp.issued",
            now,
            &[
                format!("ログインID {login_id} のワンタイムパスワードのトークンを発行しました。"),
                "お心当たりがない場合は、管理者（マスターユーザ）または運用担当者にご連絡ください。".into(),
            ],
            &[
                format!("A one-time-password token was issued for login ID {login_id}."),
                "If this was not you, tell your master user or the operator.".into(),
            ],
            "【inkan】トークンを発行しました / A one-time-password token was issued",
        );
        let uri = self.uri(login_id, &*secret, &token)?;
        let qr_svg = qrcode::QrCode::new(uri.as_bytes())
            .map_err(|e| WebError::internal("QR code", e))?
            .render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(220, 220)
            .build();
        Ok(Provisioning { service_id: self.settings.service_id.clone(), user_id, otpauth_uri: uri, qr_svg })
    }

    fn totp(&self, login_id: &str, secret: &[u8], token: &OtpToken) -> Result<totp_rs::Totp, WebError> {
        Builder::new()
            .with_algorithm(Algorithm::SHA1)
            .with_digits(u8::try_from(token.digits).unwrap_or(6))
            .with_step_duration(u64::from(token.step_secs))
            .with_secret(Secret::new(secret.to_vec().into_boxed_slice()))
            .with_issuer(Some(self.settings.service_id.replace(':', " ")))
            .with_account_name(login_id.replace(':', " "))
            .build()
            .map_err(|e| WebError::internal("TOTP", e))
    }

    fn uri(&self, login_id: &str, secret: &[u8], token: &OtpToken) -> Result<Zeroizing<String>, WebError> {
        let totp = self.totp(login_id, secret, token)?;
        totp.to_url().map(Zeroizing::new).map_err(|e| WebError::internal("otpauth URI", e))
    }

    /// The app's provisioning (手順6): the secret of the pending token named by `service_id` and
    /// `user_id`, once, for the right activation password.
    pub fn provision(
        &self,
        service_id: &str,
        user_id: &str,
        activation_password: &Password,
        now: OffsetDateTime,
    ) -> Result<AppSecret, WebError> {
        let unknown = || {
            WebError::new(
                ErrorCode::InvalidCredentials,
                "the service ID, user ID or activation password is not correct, or the token can no longer be set up",
            )
        };
        if service_id != self.settings.service_id || user_id.len() != 10 {
            return Err(unknown());
        }
        let Some(token) = self.list()?.into_iter().find(|t| t.user_id == user_id) else { return Err(unknown()) };
        let Some(activation) = token.activation.clone() else { return Err(unknown()) };
        if token.state != OtpState::Pending || activation.tries >= ACTIVATION_TRIES || now >= activation.expires_at {
            return Err(unknown());
        }
        if !verify_secret(&activation.password_hash, activation_password) {
            // Count the try; at the limit the provisioning is locked.
            self.store
                .update(&token.login_id, &mut |t| {
                    if let Some(a) = t.activation.as_mut() {
                        a.tries += 1;
                    }
                })
                .map_err(store_error)?;
            return Err(unknown());
        }
        // Taken once: of concurrent takers, the one whose update removed it gets the secret.
        let mut taken = false;
        self.store
            .update(&token.login_id, &mut |t| {
                taken = t.activation.as_ref().is_some_and(|a| a.password_hash == activation.password_hash);
                if taken {
                    t.activation = None;
                }
            })
            .map_err(store_error)?;
        if !taken {
            return Err(unknown());
        }
        let secret = self.key.open(&token.login_id, &token.sealed_secret)?;
        Ok(AppSecret {
            secret: Zeroizing::new(Secret::new(secret.to_vec().into_boxed_slice()).to_base32()),
            algorithm: "SHA1",
            digits: token.digits,
            period: token.step_secs,
        })
    }

    /// Checks `code` for `login_id`'s token in `want` state (pending: the first verification,
    /// which activates it; active: a login), once per step.
    pub fn check(&self, login_id: &str, code: &str, want: OtpState, now: OffsetDateTime) -> Result<Verdict, WebError> {
        let no_token = || WebError::new(ErrorCode::NotFound, "there is no token to check this code with");
        let token = self.token(login_id)?.filter(|t| t.state == want).ok_or_else(no_token)?;
        if token.stopped {
            return Ok(Verdict::Stopped);
        }
        let code = parse_code(code, token.digits)?;
        let secret = self.key.open(login_id, &token.sealed_secret)?;
        let totp = self.totp(login_id, &secret, &token)?;
        let matched = matching_step(&totp, token.step_secs, code, now);
        let max_failures = self.settings.max_failures;
        let mut verdict = Verdict::Wrong { failures: 0 };
        let stored = self
            .store
            .update(login_id, &mut |t| {
                if t.stopped {
                    verdict = Verdict::Stopped;
                    return;
                }
                // Replaced or moved on since it was read (a new token, a first verification
                // that won): this code was checked against another secret or state, and says
                // nothing about this token.
                if t.state != want || t.sealed_secret != token.sealed_secret {
                    verdict = Verdict::Wrong { failures: t.failures };
                    return;
                }
                match matched {
                    Some(step) if t.last_step.is_none_or(|last| step > last) => {
                        t.last_step = Some(step);
                        t.failures = 0;
                        if want == OtpState::Pending {
                            t.state = OtpState::Active;
                            t.activation = None;
                        }
                        verdict = Verdict::Accepted;
                    }
                    _ => {
                        t.failures += 1;
                        if t.failures >= max_failures {
                            t.stopped = true;
                            verdict = Verdict::Stopped;
                        } else {
                            verdict = Verdict::Wrong { failures: t.failures };
                        }
                    }
                }
            })
            .map_err(store_error)?;
        let Some(stored) = stored else { return Err(no_token()) };
        if verdict == Verdict::Stopped && !token.stopped {
            self.notice(
                &stored,
                "otp.stopped",
                now,
                &[
                    format!("ログインID {login_id} のワンタイムパスワードは、続けて間違えたため利用停止になりました。"),
                    "再開には、一般ユーザは管理者（マスターユーザ）に、マスターユーザは運用担当者に利用停止解除を依頼してください。".into(),
                ],
                &[
                    format!("One-time-password use of login ID {login_id} is stopped after too many wrong codes."),
                    "General users ask their master user to lift it; master users ask the operator.".into(),
                ],
                "【inkan】ワンタイムパスワード利用停止のお知らせ / One-time-password use stopped",
            );
        }
        Ok(verdict)
    }

    /// Lifts a stop (利用停止解除); the token stays.
    pub fn unlock(&self, login_id: &str) -> Result<OtpToken, WebError> {
        self.store
            .update(login_id, &mut |t| {
                t.stopped = false;
                t.failures = 0;
            })
            .map_err(store_error)?
            .ok_or_else(|| WebError::new(ErrorCode::NotFound, format!("{login_id} has no OTP token")))
    }

    /// Revokes the token (失効); the login ID may get a new one from [`Otp::reissue_from`].
    pub fn revoke(&self, login_id: &str, now: OffsetDateTime) -> Result<OtpToken, WebError> {
        let token = self
            .store
            .update(login_id, &mut |t| {
                if t.state != OtpState::Revoked {
                    t.state = OtpState::Revoked;
                    t.revoked_at = Some(now);
                    t.activation = None;
                    t.stopped = false;
                    t.failures = 0;
                }
            })
            .map_err(store_error)?
            .ok_or_else(|| WebError::new(ErrorCode::NotFound, format!("{login_id} has no OTP token")))?;
        let at = token.revoked_at.unwrap_or(now);
        let from = pki::encoding::rfc3339(self.reissue_from(at).to_offset(self.settings.utc_offset)).replace('Z', "");
        self.notice(
            &token,
            "otp.revoked",
            at,
            &[
                format!("ログインID {login_id} のワンタイムパスワードのトークンを失効させました。"),
                format!("新しいトークンは {from} から発行できます。"),
            ],
            &[
                format!("The one-time-password token of login ID {login_id} was revoked."),
                format!("A new token can be issued from {from}."),
            ],
            "【inkan】トークンを失効させました / A one-time-password token was revoked",
        );
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn otp() -> Otp {
        let dir = tempfile::tempdir().expect("tempdir");
        let stores = crate::stores::sled::SledStores::open(dir.path()).expect("open");
        // The directory may go: sled keeps its files open.
        Otp::new(stores.otp(), OtpKey::from_bytes(&[9; 32]).expect("key"), OtpSettings::default())
    }

    fn at(s: &str) -> OffsetDateTime {
        OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).expect("time")
    }

    #[test]
    fn reissue_waits_thirty_minutes_and_for_the_end_of_the_night() {
        let otp = otp();
        // 15:00 JST (06:00Z): 30 minutes.
        assert_eq!(otp.reissue_from(at("2026-12-02T06:00:00Z")), at("2026-12-02T06:30:00Z"));
        // 20:40 JST: 21:10 JST would be inside the night, but the revocation was not.
        assert_eq!(otp.reissue_from(at("2026-12-02T11:40:00Z")), at("2026-12-02T12:10:00Z"));
        // 20:50 JST (11:50Z): from 08:10 JST the next day (23:10Z).
        assert_eq!(otp.reissue_from(at("2026-12-02T11:50:00Z")), at("2026-12-02T23:10:00Z"));
        // 03:00 JST (18:00Z the day before): from 08:10 JST the same day.
        assert_eq!(otp.reissue_from(at("2026-12-01T18:00:00Z")), at("2026-12-01T23:10:00Z"));
        // 08:00 JST: 08:30 JST (30 minutes is later than 08:10).
        assert_eq!(otp.reissue_from(at("2026-12-01T23:00:00Z")), at("2026-12-01T23:30:00Z"));
    }

    #[test]
    fn sealed_secrets_open_only_for_their_login_id_and_key() {
        let key = OtpKey::from_bytes(&[1; 32]).expect("key");
        let sealed = key.seal("alice", b"0123456789abcdefghij").expect("seal");
        assert!(!sealed.windows(20).any(|w| w == b"0123456789abcdefghij"));
        assert_eq!(key.open("alice", &sealed).expect("open").as_slice(), b"0123456789abcdefghij");
        assert!(key.open("bob", &sealed).is_err(), "bound to the login ID");
        assert!(OtpKey::from_bytes(&[2; 32]).expect("key").open("alice", &sealed).is_err());
    }

    #[test]
    fn malformed_codes_and_inputs_are_refused() {
        let otp = otp();
        let now = at("2026-12-02T06:00:00Z");
        for bad in ["1234", "12345", "1234567", "12a456", "", "１２３４５６"] {
            assert!(parse_code(bad, 6).is_err(), "{bad:?}");
        }
        let pw = Password::new("1234".into());
        for mail in ["", "a", "a@b", "a b@c.jp", "@c.jp", "a@@c.jp"] {
            assert!(otp.issue("alice", mail, &pw, None, now).is_err(), "{mail:?}");
        }
        for activation in ["123", "123456789", "12ab"] {
            assert!(otp.issue("alice", "a@example.jp", &Password::new(activation.into()), None, now).is_err());
        }
        assert!(otp.token("alice").expect("token").is_none(), "nothing stored");
    }
}
