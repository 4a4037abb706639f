//! The login pages, served when `admin.auth.token.file` is set: a browser
//! (the web console) cannot send an `Authorization` header on a page load,
//! so it trades a token for the cookie [`TOKEN_COOKIE`].
//!
//! | route          | answer                                                  |
//! |----------------|---------------------------------------------------------|
//! | `GET /login`   | a form asking for a token                               |
//! | `POST /login`  | form field `token`: one of the file's sets the cookie and goes to `/` (303); another answers 401 with the form |
//! | `POST /logout` | clears the cookie and goes to `/login` (303)            |
//!
//! The pages are plain HTML without scripts or styles of their own; the
//! console styles them. The form's body is at most [`LOGIN_BODY_BYTES_MAX`].

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequest as _, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};

use crate::TokenFile;
use crate::auth::TOKEN_COOKIE;

/// Largest login form body read, in bytes: a token is at most
/// [`TOKEN_BYTES_MAX`](crate::tokens::TOKEN_BYTES_MAX), percent-encoded.
pub const LOGIN_BODY_BYTES_MAX: usize = 16 * 1024;

/// The login routes, over the tokens they check.
pub(crate) fn routes(tokens: Arc<TokenFile>) -> Router {
    Router::new()
        .route("/login", get(form).post(login))
        .route("/logout", post(logout))
        .layer(DefaultBodyLimit::max(LOGIN_BODY_BYTES_MAX))
        .with_state(tokens)
}

/// The login form's fields.
#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

/// The page: a form posting `token` to `/login`, with `note` above it.
fn page(note: &str) -> Html<String> {
    Html(format!(
        "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">\
         <title>Weir admin: log in</title></head>\n<body>\n<main class=\"login\">\n\
         <h1>Weir admin</h1>\n{note}<form method=\"post\" action=\"/login\">\n\
         <label for=\"token\">Token</label>\n\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" \
         required autofocus>\n<button type=\"submit\">Log in</button>\n</form>\n</main>\n\
         </body>\n</html>\n"
    ))
}

async fn form() -> Html<String> {
    page("")
}

/// Sets the cookie for a right token; answers 401 with the form again
/// for a wrong one, or for a body that is not the form.
async fn login(State(tokens): State<Arc<TokenFile>>, request: Request) -> Response {
    let secure = crate::auth::peer(&request).is_some_and(|peer| peer.is_tls());
    let token = match Form::<LoginForm>::from_request(request, &()).await {
        Ok(Form(form)) => form.token,
        Err(rejection) => {
            let note = format!("<p role=\"alert\">{}</p>\n", escape(&rejection.body_text()));
            return (rejection.status(), page(&note)).into_response();
        }
    };
    let token = token.trim();
    if tokens.check(token.as_bytes()).is_none() {
        let note = "<p role=\"alert\">That token is not one of the broker's.</p>\n";
        return (StatusCode::UNAUTHORIZED, page(note)).into_response();
    }
    // A token of the file holds only cookie-safe characters (`tokens`).
    let cookie = format!(
        "{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    );
    with_cookie(Redirect::to("/").into_response(), &cookie)
}

/// Clears the cookie.
async fn logout() -> Response {
    let cookie = format!("{TOKEN_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    with_cookie(Redirect::to("/login").into_response(), &cookie)
}

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    match HeaderValue::from_str(cookie) {
        Ok(value) => {
            response.headers_mut().insert(header::SET_COOKIE, value);
            response
        }
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            page("<p role=\"alert\">The token cannot be set as a cookie.</p>\n"),
        )
            .into_response(),
    }
}

/// `text` safe inside HTML.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '&' => escaped.push_str("&amp;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}
