//! Cross-site request forgery: tokens an attacker cannot choose, and a check of where a
//! state-changing request comes from.
//!
//! The forms that come before a session (acquisition, login) carry a token that is also in a
//! cookie; the token is a random nonce with an HMAC of this process's key over it and the form's
//! purpose, so a pair an attacker sets equal in cookie and field is refused unless this server
//! made it. Session forms carry the session's own random token. Every POST whose `Origin` or
//! `Sec-Fetch-Site` says it comes from another site is refused before any handler runs.

use aws_lc_rs::hmac;
use axum::extract::Request;
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ErrorCode, WebError};

/// The key that signs form tokens; a new one at each start (forms older than the process must
/// be loaded again).
pub struct CsrfKey(hmac::Key);

impl std::fmt::Debug for CsrfKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfKey([redacted])")
    }
}

impl Default for CsrfKey {
    fn default() -> Self {
        let mut secret = zeroize::Zeroizing::new([0u8; 32]);
        // Without a working system RNG no token is safe to hand out.
        aws_lc_rs::rand::fill(secret.as_mut()).unwrap_or_else(|_| std::process::abort());
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret.as_ref()))
    }
}

const NONCE: usize = 16;
const MAC: usize = 16;

impl CsrfKey {
    fn mac(&self, nonce: &[u8], purpose: &str) -> [u8; MAC] {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(nonce);
        ctx.update(purpose.as_bytes());
        let tag = ctx.sign();
        let mut out = [0u8; MAC];
        out.copy_from_slice(&tag.as_ref()[..MAC]);
        out
    }

    /// A new token for the form `purpose`: 64 hex digits.
    pub fn token(&self, purpose: &str) -> String {
        let mut nonce = [0u8; NONCE];
        aws_lc_rs::rand::fill(&mut nonce).unwrap_or_else(|_| std::process::abort());
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&self.mac(&nonce, purpose));
        pki::encoding::hex(&bytes)
    }

    /// Whether `token` was made by [`CsrfKey::token`] for `purpose` (in constant time).
    pub fn made(&self, token: &str, purpose: &str) -> bool {
        let Some(bytes) = pki::encoding::unhex(token).filter(|b| b.len() == NONCE + MAC) else { return false };
        let (nonce, mac) = bytes.split_at(NONCE);
        aws_lc_rs::constant_time::verify_slices_are_equal(mac, &self.mac(nonce, purpose)).is_ok()
    }

    /// Whether a form posted `field` with the cookie `cookie`: the same token, made here.
    pub fn check(&self, cookie: &str, field: &str, purpose: &str) -> bool {
        crate::html::tokens_match(cookie, field) && self.made(cookie, purpose)
    }
}

/// The host (and port) of an `Origin` value.
fn origin_host(origin: &str) -> Option<&str> {
    let rest = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"))?;
    Some(rest.split('/').next().unwrap_or(rest))
}

/// Refuses a state-changing request (anything but GET, HEAD, OPTIONS) that a browser says comes
/// from another site: a `Sec-Fetch-Site` other than `same-origin` or `none` (typed or
/// bookmarked), or, from a browser that sends none, an `Origin` naming another host than the
/// one asked. Clients that send neither (curl, machines) are not browsers carrying someone's
/// cookies, and pass.
pub async fn same_origin(request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(request).await;
    }
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned()));
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    // Sec-Fetch-Site is set by the browser and cannot be forged by a page: it decides when
    // present. Otherwise the Origin (an opaque "null" origin is another site).
    let refused = match (fetch_site, origin) {
        (Some(site), _) => !matches!(site, "same-origin" | "none"),
        (None, Some(origin)) => origin_host(origin).is_none_or(|o| Some(o) != host.as_deref()),
        (None, None) => false,
    };
    if refused {
        tracing::info!(?origin, ?fetch_site, path = %request.uri().path(), "cross-site request refused");
        return WebError::new(ErrorCode::Csrf, "a request from another site is refused").into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tokens_made_here_for_the_purpose_pass() {
        let key = CsrfKey::default();
        let token = key.token("acquire");
        assert_eq!(token.len(), 64);
        assert!(key.check(&token, &token, "acquire"));
        assert!(!key.check(&token, &token, "login"), "bound to its form");
        assert!(!CsrfKey::default().made(&token, "acquire"), "bound to this process's key");
        let chosen = "f".repeat(64);
        assert!(!key.check(&chosen, &chosen, "acquire"), "a pair an attacker sets equal is refused");
        assert!(!key.check(&token, &key.token("acquire"), "acquire"), "cookie and field must be the same");
        assert!(!key.made("zz", "acquire") && !key.made("", "acquire"));
    }

    #[test]
    fn origins() {
        assert_eq!(origin_host("https://localhost:8443"), Some("localhost:8443"));
        assert_eq!(origin_host("null"), None);
    }
}
