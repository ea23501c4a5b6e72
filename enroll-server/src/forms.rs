//! What the certificate-login pages share: the error page, and the handling of a form posted
//! from the home page (session and CSRF checks, the action, then back home or an error page).

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::response::{IntoResponse, Redirect, Response};

use crate::error::{ErrorCode, WebError};
use crate::extract::SignedIn;
use crate::html;
use crate::i18n::Lang;
use crate::pages::{ErrorPage, Frame};
use crate::state::Shared;

/// The error page titled `title`, saying `error` in `lang`.
pub fn error_page(state: &Shared, lang: Lang, title: &'static str, error: &WebError) -> Response {
    let page = ErrorPage {
        frame: Frame::new(lang, title, "/"),
        message: lang.error(error),
        public_url: state.public_url.clone(),
    };
    html::render(error.status(), &page)
}

/// A form posted from the home page: it carries the session's CSRF token.
pub trait SessionForm {
    /// The token it carries.
    fn csrf(&self) -> &str;
}

/// Handles a home-page form: session and CSRF checks, then `action`, then back to /home (or
/// an error page saying why not).
pub async fn session_form<T: SessionForm>(
    state: &Shared,
    signed_in: Result<SignedIn, WebError>,
    lang: Lang,
    form: Result<Form<T>, FormRejection>,
    action: impl AsyncFnOnce(&Shared, &SignedIn, T) -> Result<(), WebError>,
) -> Response {
    let t = lang.text();
    let signed_in = match signed_in {
        Ok(found) => found,
        Err(e) => return error_page(state, lang, t.error_title, &e),
    };
    let form = match form {
        Ok(Form(form)) if html::tokens_match(&signed_in.session.csrf, form.csrf()) => form,
        _ => return error_page(state, lang, t.error_title, &WebError::new(ErrorCode::Csrf, "the form expired")),
    };
    match action(state, &signed_in, form).await {
        Ok(()) => Redirect::to(&format!("/home?lang={}", lang.code())).into_response(),
        Err(e) => error_page(state, lang, t.error_title, &e),
    }
}
