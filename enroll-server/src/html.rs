//! What every page response shares: rendering a template, cookies, CSRF token checks, the
//! security headers, static assets. The pages themselves are askama templates under
//! `templates/`, escaped automatically.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

/// Renders a page template with `status`; a template that fails to render (it cannot, short
/// of a bug) is a 500 with the reason in the log.
pub fn render<T: askama::Template>(status: StatusCode, page: &T) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering a page");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error; the operator has been told\n").into_response()
        }
    }
}

/// The value of cookie `name`, if sent.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// A `Set-Cookie` value: HttpOnly, Secure, SameSite=Strict, with `path` and `max_age` seconds
/// (0 deletes it).
pub fn set_cookie(name: &str, value: &str, path: &str, max_age: u64) -> HeaderValue {
    let text = format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict");
    // Names and values are ours (hex tokens), so this cannot fail; fall back to deleting.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// `response` with `cookie` set.
pub fn with_cookie(mut response: Response, cookie: HeaderValue) -> Response {
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
}

/// Whether a submitted CSRF token equals the expected one (64 hex digits), in constant time.
pub fn tokens_match(expected: &str, submitted: &str) -> bool {
    expected.len() == 64
        && aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_bytes(), submitted.as_bytes()).is_ok()
}

/// Adds the headers every response of the HTTPS listeners carries.
pub async fn secure_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let fixed = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // Same-origin requests keep their Origin and Referer (the CSRF check reads them);
        // nothing leaks to other sites.
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
    ];
    for (name, value) in fixed {
        // A page may widen its own policy (the consent page's form goes on to the client's
        // redirect URI); every other response gets the fixed one.
        if name == header::CONTENT_SECURITY_POLICY && headers.contains_key(&name) {
            continue;
        }
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A static asset with its content type, cacheable for an hour.
pub fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=3600"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; inkan_session=abc; b=2"));
        assert_eq!(cookie(&headers, "inkan_session").as_deref(), Some("abc"));
        assert_eq!(cookie(&headers, "missing"), None);
        let set = set_cookie("s", "v", "/", 60);
        assert_eq!(set, "s=v; Path=/; Max-Age=60; HttpOnly; Secure; SameSite=Strict");
    }
}
