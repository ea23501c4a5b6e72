//! HTML building blocks: escaping, the page layout, cookies and security headers.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};

use crate::i18n::Lang;

/// Escapes text for HTML content and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page: title, language switch, body. Scripts are external files (the CSP allows no
/// inline script).
pub fn page(lang: Lang, title: &str, path: &str, body: &str, scripts: &[&str]) -> Html<String> {
    let t = lang.text();
    let other = match lang {
        Lang::Ja => "en",
        Lang::En => "ja",
    };
    let scripts: String =
        scripts.iter().map(|s| format!(r#"<script type="module" src="{}"></script>"#, esc(s))).collect();
    Html(format!(
        r#"<!doctype html>
<html lang="{code}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} — {app}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/assets/style.css">
{scripts}
</head>
<body>
<header><span class="brand">{app}</span><a class="lang" href="{path}?lang={other}">{other_name}</a></header>
<main>
<h1>{title}</h1>
{body}
</main>
</body>
</html>
"#,
        code = lang.code(),
        title = esc(title),
        app = esc(t.app),
        path = esc(path),
        other_name = esc(t.other_lang),
    ))
}

/// An error box inside a page.
pub fn error_box(message: &str) -> String {
    format!(r#"<p class="error" role="alert" data-testid="error">{}</p>"#, esc(message))
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
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
    ];
    for (name, value) in fixed {
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
    fn escaping_and_cookies() {
        assert_eq!(esc(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; inkan_session=abc; b=2"));
        assert_eq!(cookie(&headers, "inkan_session").as_deref(), Some("abc"));
        assert_eq!(cookie(&headers, "missing"), None);
        let set = set_cookie("s", "v", "/", 60);
        assert_eq!(set, "s=v; Path=/; Max-Age=60; HttpOnly; Secure; SameSite=Strict");
    }
}
