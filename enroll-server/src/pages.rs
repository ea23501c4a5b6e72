//! The pages: one askama template (under `templates/`) and one struct per page, holding only
//! what the page shows. Escaping is automatic; a field a template uses and the struct lacks
//! fails to compile. The words come from `i18n`.

use askama::Template;

use crate::i18n::{Lang, Text};

/// What every page has: language, words, title, its path (for the language switch), scripts.
#[derive(Debug)]
pub struct Frame {
    /// The page's language.
    pub lang: Lang,
    /// Its words.
    pub t: &'static Text,
    /// The heading and title.
    pub title: &'static str,
    /// The page's path, for the link to the other language.
    pub path: &'static str,
    /// Module scripts (the CSP allows no inline script).
    pub scripts: &'static [&'static str],
}

impl Frame {
    /// A frame in `lang` titled `title` at `path`.
    pub fn new(lang: Lang, title: &'static str, path: &'static str) -> Self {
        Self { lang, t: lang.text(), title, path, scripts: &[] }
    }

    /// The same, with the acquisition script.
    pub fn with_acquire_script(self) -> Self {
        Self { scripts: &["/assets/acquire.js"], ..self }
    }
}

/// A grant on the home page.
#[derive(Debug)]
pub struct GrantRow {
    /// Its ID.
    pub id: String,
    /// The user.
    pub login_id: String,
    /// The client's name.
    pub client: String,
    /// The scopes, in words.
    pub scopes: String,
    /// The resources' labels.
    pub resources: String,
    /// When granted.
    pub granted: String,
    /// When it ends.
    pub expires: String,
}

/// 電子証明書取得 / 再取得: login ID and password.
#[derive(Debug, Template)]
#[template(path = "acquire.html")]
pub struct AcquirePage {
    /// Frame.
    pub frame: Frame,
    /// The lead paragraph.
    pub lead: &'static str,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// The form's CSRF token.
    pub csrf: String,
    /// `acquire` or `reacquire`.
    pub mode: &'static str,
    /// The login ID typed before.
    pub login_id: String,
}

/// 取得開始 → 発行処理中 → install: the browser makes the key and the CSR.
#[derive(Debug, Template)]
#[template(path = "start.html")]
pub struct StartPage {
    /// Frame.
    pub frame: Frame,
    /// The enrollment ticket.
    pub ticket: String,
    /// The account.
    pub login_id: String,
    /// When the ticket expires, RFC 3339.
    pub expires: String,
}

/// 電子証明書ログイン: the certificate was accepted; the password is asked.
#[derive(Debug, Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    /// Frame.
    pub frame: Frame,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// The certificate's account.
    pub account: String,
    /// Its serial.
    pub serial: String,
    /// The form's CSRF token.
    pub csrf: String,
}

/// A refusal, with a way back to the acquisition page.
#[derive(Debug, Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    /// Frame.
    pub frame: Frame,
    /// What went wrong, in the page's language.
    pub message: String,
    /// The public listener's base URL.
    pub public_url: String,
}

/// A one-time enrollment token, shown once after a master made it.
#[derive(Template)]
#[template(path = "token.html")]
pub struct TokenPage {
    /// Frame.
    pub frame: Frame,
    /// The account it enrolls.
    pub login_id: String,
    /// The token.
    pub token: zeroize::Zeroizing<String>,
    /// When it stops working (RFC 3339).
    pub expires_at: String,
}

impl std::fmt::Debug for TokenPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenPage").field("login_id", &self.login_id).finish_non_exhaustive()
    }
}

/// ワンタイムパスワード認証: the code that finishes a login.
#[derive(Debug, Template)]
#[template(path = "otp_code.html")]
pub struct OtpCodePage {
    /// Frame.
    pub frame: Frame,
    /// Why the last code failed.
    pub error: Option<String>,
    /// The account.
    pub login_id: String,
    /// The session's CSRF token.
    pub csrf: String,
}

/// トークン発行 and 認証確認.
#[derive(Debug, Template)]
#[template(path = "otp_token.html")]
pub struct OtpTokenPage {
    /// Frame.
    pub frame: Frame,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// The account.
    pub login_id: String,
    /// The session's CSRF token.
    pub csrf: String,
    /// The session may only set up a token.
    pub setup_only: bool,
    /// A token is in use.
    pub active: bool,
    /// A token waits for its first verification.
    pub pending: bool,
    /// After a revocation, when a new token may be issued (local time), if not yet.
    pub reissue_from: Option<String>,
    /// The token just issued.
    pub issued: Option<crate::otp::Provisioning>,
    /// A personal contract: the hardware form offers not to be asked at login.
    pub personal: bool,
}

/// One certificate on the home page.
#[derive(Debug)]
pub struct CertRow {
    /// Serial.
    pub serial: String,
    /// notAfter, RFC 3339.
    pub not_after: String,
    /// Days left, or `-` when not valid.
    pub days: String,
    /// Its status in words.
    pub status: &'static str,
}

/// A revocation reason in a form.
#[derive(Debug)]
pub struct ReasonOption {
    /// The RFC 5280 name sent.
    pub value: &'static str,
    /// In words.
    pub label: &'static str,
}

/// A master's general user on the home page.
#[derive(Debug)]
pub struct UserRow {
    /// Login ID.
    pub login_id: String,
    /// Locked after wrong passwords.
    pub locked: bool,
    /// Its valid certificates.
    pub certificates: Vec<String>,
    /// Its OTP token's state, in the page's language.
    pub otp: &'static str,
    /// OTP use is stopped.
    pub otp_stopped: bool,
    /// It has a token that can be revoked.
    pub otp_revocable: bool,
}

/// ご利用状況: the account, its certificates, revocation, a master's users.
#[derive(Debug, Template)]
#[template(path = "home.html")]
pub struct HomePage {
    /// The grants in force the user may see (its own; a master's users' too).
    pub grants: Vec<GrantRow>,
    /// Whether the user registered a secret question.
    pub has_question: bool,
    /// The words of the API-consent parts.
    pub ow: &'static crate::oauth::text::OAuthText,
    /// Frame.
    pub frame: Frame,
    /// The account.
    pub login_id: String,
    /// Its role's name.
    pub role: &'static str,
    /// Days left of the certificate in use, when it is due for renewal.
    pub renewal_days: Option<i64>,
    /// The public listener's base URL (for 再取得).
    pub public_url: String,
    /// The account's certificates, newest first.
    pub certificates: Vec<CertRow>,
    /// Its valid certificates, which it may revoke.
    pub revocable: Vec<String>,
    /// The reasons an account may give for its own certificates.
    pub own_reasons: Vec<ReasonOption>,
    /// The reasons a master may give for its users' certificates.
    pub master_reasons: Vec<ReasonOption>,
    /// Whether the account is a master (shows its users).
    pub is_master: bool,
    /// A master's general users.
    pub users: Vec<UserRow>,
    /// The session's CSRF token.
    pub csrf: String,
    /// Its OTP token's state, in the page's language.
    pub otp: &'static str,
    /// It has a token it may revoke.
    pub otp_revocable: bool,
    /// The customer-card cells its confirmations ask (a master with a card), labelled.
    pub card_cells: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_what_users_typed() {
        let page = AcquirePage {
            frame: Frame::new(Lang::En, "Obtain", "/cert/acquire"),
            lead: "lead",
            error: Some("<b>bad</b> & \"worse\"".into()),
            csrf: "c".repeat(64),
            mode: "acquire",
            login_id: "\"><script>alert(1)</script>".into(),
        };
        let html = page.render().expect("renders");
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&#60;b&#62;bad&#60;/b&#62; &#38; &#34;worse&#34;"), "{html}");
        assert!(html.contains("value=\"&#34;&#62;&#60;script&#62;"), "{html}");
        assert!(html.contains(" lang=\"en\">") && html.contains("href=\"/cert/acquire?lang=ja\""), "{html}");
    }
}
