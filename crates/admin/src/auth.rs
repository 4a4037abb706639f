//! Who may use the admin API, and the guard every request passes first
//! ([`secure`] puts it in front of every route [`crate::router`] merges,
//! its fallbacks included, and of the login pages).
//!
//! Authentication is off unless configured; then a request is
//! authenticated by any one of:
//!
//! - a client certificate that chains to `admin.ssl.truststore.location`
//!   (`admin.ssl.client.auth=required` or `requested`): the principal its
//!   subject names under `admin.ssl.principal.mapping.rules`, as
//!   `User:CN=...`;
//! - `Authorization: Bearer <token>` with a token of
//!   `admin.auth.token.file` ([`TokenFile`]): the principal `token#N`, the
//!   file's Nth token;
//! - the cookie [`TOKEN_COOKIE`] holding such a token, which `POST /login`
//!   sets for a browser (`login`).
//!
//! `GET /health` and `GET /ready` (orchestrators' probes) and the login
//! pages are open to all. Anything else unauthenticated answers 401 with
//! `WWW-Authenticate: Bearer` and a JSON error, except a browser's page
//! load (a GET that accepts `text/html`), which is sent to `/login`.
//!
//! A write (any method but GET and HEAD) whose `Origin` header names
//! another host or port than its `Host` header answers 403: a page of
//! another site cannot make a logged-in browser change the broker. Every
//! write is logged at info, with its method, path, peer, principal and
//! status.

use std::sync::Arc;

use axum::Router;
use axum::extract::connect_info::{ConnectInfo, MockConnectInfo};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use weir_server::{ClientAuth, TlsAcceptor};

use crate::connection::AdminPeer;
use crate::{AdminError, TokenFile};

/// The cookie `POST /login` sets: the token itself, `HttpOnly` (no script
/// reads it), `SameSite=Strict` (no other site's page sends it), and
/// `Secure` on an HTTPS listener.
pub const TOKEN_COOKIE: &str = "weir_admin_token";

/// The routes open to everyone, whatever the authentication: the
/// orchestrators' probes (GET or HEAD) and the login pages.
const OPEN_ROUTES: [(&str, &str); 5] = [
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/login"),
    ("POST", "/login"),
    ("POST", "/logout"),
];

/// How the admin listener is secured: TLS, and who is let in. The default
/// is plain HTTP, open to every client that reaches the address.
#[derive(Debug, Clone, Default)]
pub struct AdminSecurity {
    /// TLS on the listener (`admin.ssl.*`), when configured.
    pub tls: Option<AdminTls>,
    /// The bearer tokens (`admin.auth.token.file`), when configured.
    pub tokens: Option<Arc<TokenFile>>,
}

/// The admin listener's TLS.
#[derive(Debug, Clone)]
pub struct AdminTls {
    /// The Kafka listeners' TLS configuration, built from `admin.ssl.*`.
    pub acceptor: Arc<TlsAcceptor>,
    /// `admin.ssl.client.auth`: whether client certificates are asked for,
    /// and so authenticate.
    pub client_auth: ClientAuth,
}

impl AdminSecurity {
    /// Whether any request must be authenticated: tokens are configured,
    /// or client certificates asked for.
    pub fn authenticates(&self) -> bool {
        self.tokens.is_some() || self.certificates()
    }

    /// Whether a client certificate authenticates its connection.
    fn certificates(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|tls| tls.client_auth != ClientAuth::None)
    }
}

/// Who made a request, as handlers see it (a request extension) and the
/// write log names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminPrincipal {
    /// Not authenticated: authentication is off, or an open route.
    Anonymous,
    /// The Nth token (from 1) of `admin.auth.token.file`.
    Token(usize),
    /// The principal a client certificate names (`User:CN=...`).
    Certificate(String),
}

impl std::fmt::Display for AdminPrincipal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Anonymous => f.write_str("anonymous"),
            Self::Token(n) => write!(f, "token#{n}"),
            Self::Certificate(name) => f.write_str(name),
        }
    }
}

/// What the guard needs, shared by every request.
#[derive(Debug)]
struct Guard {
    security: AdminSecurity,
}

/// `app` (the routes of [`crate::router`]) with the login pages when
/// tokens are configured, behind the guard of `security`.
pub(crate) fn secure(app: Router, security: &AdminSecurity) -> Router {
    let app = match &security.tokens {
        Some(tokens) => app.merge(crate::login::routes(tokens.clone())),
        None => app,
    };
    let guard = Arc::new(Guard {
        security: security.clone(),
    });
    app.layer(middleware::from_fn_with_state(guard, guard_request))
}

/// The guard: the cross-origin check of writes, then authentication, then
/// the route; a write is logged with its outcome.
async fn guard_request(
    State(guard): State<Arc<Guard>>,
    mut request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let write = method != Method::GET && method != Method::HEAD;
    let peer = peer(&request);
    let tls = peer.as_ref().is_some_and(AdminPeer::is_tls);
    let (principal, refused) = authenticate(&guard.security, &request, peer.as_ref());
    let response = if let Some(reason) = write
        .then(|| cross_origin(request.headers(), tls))
        .flatten()
    {
        AdminError::new(StatusCode::FORBIDDEN, reason).into_response()
    } else if guard.security.authenticates()
        && principal == AdminPrincipal::Anonymous
        && !is_open(&method, &path)
    {
        unauthorized(&guard.security, &method, request.headers(), refused)
    } else {
        request.extensions_mut().insert(principal.clone());
        next.run(request).await
    };
    if write {
        let peer = peer.map_or_else(|| "unknown".to_owned(), |p| p.addr().to_string());
        tracing::info!(%method, %path, %peer, %principal, status = response.status().as_u16(),
            "admin write request");
    }
    response
}

/// The connection's peer: axum's `ConnectInfo` on a served listener, or a
/// test's `MockConnectInfo`.
pub(crate) fn peer(request: &Request) -> Option<AdminPeer> {
    let extensions = request.extensions();
    extensions
        .get::<ConnectInfo<AdminPeer>>()
        .map(|ConnectInfo(peer)| peer.clone())
        .or_else(|| {
            extensions
                .get::<MockConnectInfo<AdminPeer>>()
                .map(|MockConnectInfo(peer)| peer.clone())
        })
}

fn is_open(method: &Method, path: &str) -> bool {
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    OPEN_ROUTES.contains(&(method, path))
}

/// Who `request` comes from: its connection's certificate, else its bearer
/// token, else its cookie's token. The second value is true when it
/// presented a token that is not one of the file's.
fn authenticate(
    security: &AdminSecurity,
    request: &Request,
    peer: Option<&AdminPeer>,
) -> (AdminPrincipal, bool) {
    if security.certificates()
        && let Some(name) = peer.and_then(AdminPeer::certificate_principal)
    {
        return (AdminPrincipal::Certificate(name.to_owned()), false);
    }
    let Some(tokens) = &security.tokens else {
        return (AdminPrincipal::Anonymous, false);
    };
    let presented = bearer_token(request.headers()).or_else(|| cookie_token(request.headers()));
    match presented {
        None => (AdminPrincipal::Anonymous, false),
        Some(token) => match tokens.check(token.as_bytes()) {
            Some(n) => (AdminPrincipal::Token(n), false),
            None => (AdminPrincipal::Anonymous, true),
        },
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme's
/// case ignored, RFC 7235).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// The token of the [`TOKEN_COOKIE`] cookie.
pub(crate) fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == TOKEN_COOKIE)
        .map(|(_, token)| token.trim_matches('"'))
        .filter(|token| !token.is_empty())
}

/// The answer to an unauthenticated request: 401 with a JSON error, or a
/// browser's page load sent to the login page.
fn unauthorized(
    security: &AdminSecurity,
    method: &Method,
    headers: &HeaderMap,
    wrong_token: bool,
) -> Response {
    let page_load = (method == Method::GET || method == Method::HEAD)
        && headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("text/html"));
    if security.tokens.is_some() && page_load {
        return Redirect::to("/login").into_response();
    }
    let message = match (
        security.tokens.is_some(),
        security.certificates(),
        wrong_token,
    ) {
        (_, _, true) => "the token is not one of admin.auth.token.file's",
        (true, true, false) => {
            "authentication required: send Authorization: Bearer <token> with a token of \
             admin.auth.token.file, or present a client certificate"
        }
        (true, false, false) => {
            "authentication required: send Authorization: Bearer <token> with a token of \
             admin.auth.token.file"
        }
        (false, _, false) => {
            "authentication required: present a client certificate signed by a CA of \
             admin.ssl.truststore.location"
        }
    };
    let challenge = if wrong_token {
        "Bearer realm=\"weir-admin\", error=\"invalid_token\""
    } else {
        "Bearer realm=\"weir-admin\""
    };
    let mut response = AdminError::new(StatusCode::UNAUTHORIZED, message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

/// Why a write is refused as cross-origin: its `Origin` names another
/// host or port than its `Host` (or it has no `Host`). `None` when it has
/// no `Origin` (a script's request) or the same one.
fn cross_origin(headers: &HeaderMap, tls: bool) -> Option<String> {
    let origin = headers.get(header::ORIGIN)?;
    let refused = |why: &str| {
        Some(format!(
            "refused a cross-origin write: {why}; the admin API takes writes from its own pages \
             and from clients that send no Origin"
        ))
    };
    let Some(origin_text) = origin.to_str().ok() else {
        return refused("the Origin header is not text");
    };
    let Some(origin_at) = origin_authority(origin_text) else {
        return refused(&format!(
            "Origin {origin_text:?} names no http or https host"
        ));
    };
    let Some(host_text) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return refused("the request has no Host header to compare its Origin with");
    };
    let Some(host_at) = authority(host_text, if tls { 443 } else { 80 }) else {
        return refused(&format!("Host {host_text:?} is not HOST[:PORT]"));
    };
    (origin_at != host_at).then(|| {
        format!(
            "refused a cross-origin write: Origin {origin_text:?} is not this API's host \
             {host_text:?}; the admin API takes writes from its own pages and from clients \
             that send no Origin"
        )
    })
}

/// The host (lower case) and port of an `Origin` value
/// (`scheme://host[:port]`); `None` for `null` or another scheme.
fn origin_authority(origin: &str) -> Option<(String, u16)> {
    let (scheme, rest) = origin.trim().split_once("://")?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    authority(rest.strip_suffix('/').unwrap_or(rest), default_port)
}

/// The host (lower case) and port of `host[:port]` (an IPv6 host in
/// brackets), the port `default_port` when absent.
fn authority(text: &str, default_port: u16) -> Option<(String, u16)> {
    let text = text.trim();
    if text.is_empty() || text.contains(['/', '@', ' ']) {
        return None;
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let host = format!("[{inside}]");
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (text.to_owned(), None),
        }
    };
    let port = match port {
        Some(port) => port.parse().ok()?,
        None => default_port,
    };
    (!host.is_empty()).then(|| (host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::SocketAddr;

    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt as _;

    const FIRST: &str = "first-token-0123456789abcdef";
    const SECOND: &str = "second-token-0123456789abcdef";

    /// Security with the two tokens; the folder holds their file.
    fn with_tokens() -> (AdminSecurity, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens");
        std::fs::write(&path, format!("# admin tokens\n{FIRST}\n\n{SECOND}\n")).expect("write");
        let tokens = TokenFile::load(&path).expect("tokens");
        let security = AdminSecurity {
            tls: None,
            tokens: Some(Arc::new(tokens)),
        };
        (security, dir)
    }

    /// The admin API's routes over a fresh broker, behind `security`.
    fn app(security: &AdminSecurity) -> (Router, tempfile::TempDir) {
        let (state, dir) = crate::tests::state();
        (crate::secured(state, security), dir)
    }

    fn request(method: Method, path: &str, headers: &[(header::HeaderName, &str)]) -> Request {
        let mut builder = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            builder = builder.header(name, *value);
        }
        let body = if headers.iter().any(|(n, _)| n == header::CONTENT_TYPE) {
            Body::from(format!("token={FIRST}"))
        } else {
            Body::empty()
        };
        builder.body(body).expect("request")
    }

    async fn send(app: &Router, request: Request) -> (StatusCode, HeaderMap, String) {
        let response = app.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (
            status,
            headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn with_tokens_every_route_but_the_probes_needs_one() {
        let (security, _tokens) = with_tokens();
        let (app, _data) = app(&security);
        for path in ["/metrics", "/v1/share-groups/g", "/no/such/route"] {
            let (status, headers, body) = send(&app, request(Method::GET, path, &[])).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
            assert_eq!(
                headers
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok()),
                Some("Bearer realm=\"weir-admin\""),
                "{path}"
            );
            let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
            assert!(
                json["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("Authorization: Bearer")),
                "{json}"
            );
        }
        let wrong = bearer("not-a-token-of-the-file-at-all");
        let (status, headers, _) = send(
            &app,
            request(Method::GET, "/metrics", &[(header::AUTHORIZATION, &wrong)]),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(
            headers
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("invalid_token"))
        );
        for token in [FIRST, SECOND] {
            let right = bearer(token);
            let (status, _, body) = send(
                &app,
                request(Method::GET, "/metrics", &[(header::AUTHORIZATION, &right)]),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        for path in ["/health", "/ready"] {
            let (status, _, body) = send(&app, request(Method::GET, path, &[])).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
            let (status, _, _) = send(&app, request(Method::HEAD, path, &[])).await;
            assert_eq!(status, StatusCode::OK, "HEAD {path}");
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn without_security_everything_is_open_and_there_is_no_login_page() {
        let (app, _data) = app(&AdminSecurity::default());
        let (status, _, _) = send(&app, request(Method::GET, "/metrics", &[])).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _, _) = send(&app, request(Method::GET, "/login", &[])).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_browser_logs_in_for_a_cookie_and_out_again() {
        let (security, _tokens) = with_tokens();
        let (app, _data) = app(&security);
        let html = [(header::ACCEPT, "text/html,application/xhtml+xml,*/*;q=0.8")];
        let (status, headers, _) = send(&app, request(Method::GET, "/", &html)).await;
        assert_eq!(
            status,
            StatusCode::SEE_OTHER,
            "a page load goes to the login page"
        );
        assert_eq!(
            headers.get(header::LOCATION).map(|v| v.as_bytes()),
            Some(&b"/login"[..])
        );
        let (status, _, page) = send(&app, request(Method::GET, "/login", &html)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            page.contains("<form method=\"post\" action=\"/login\">"),
            "{page}"
        );
        assert!(page.contains("name=\"token\""), "{page}");

        let form = [(header::CONTENT_TYPE, "application/x-www-form-urlencoded")];
        let (status, headers, _) = send(&app, request(Method::POST, "/login", &form)).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let cookie = headers
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .expect("a cookie")
            .to_owned();
        assert!(
            cookie.starts_with(&format!("{TOKEN_COOKIE}={FIRST};")),
            "{cookie}"
        );
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
        let sent = format!("theme=dark; {TOKEN_COOKIE}={FIRST}");
        let (status, _, _) = send(
            &app,
            request(Method::GET, "/metrics", &[(header::COOKIE, &sent)]),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "the cookie authenticates");

        let wrong = Request::builder()
            .method(Method::POST)
            .uri("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("token=not-a-token-of-the-file-at-all"))
            .expect("request");
        let (status, headers, page) = send(&app, wrong).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(headers.get(header::SET_COOKIE).is_none());
        assert!(page.contains("not one of the broker's"), "{page}");

        let (status, headers, _) = send(&app, request(Method::POST, "/logout", &[])).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert!(
            headers
                .get(header::SET_COOKIE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(
                    |c| c.starts_with(&format!("{TOKEN_COOKIE}=;")) && c.contains("Max-Age=0")
                )
        );
        let stale = format!("{TOKEN_COOKIE}=not-a-token-of-the-file-at-all");
        let (status, _, _) = send(
            &app,
            request(Method::GET, "/metrics", &[(header::COOKIE, &stale)]),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_cross_origin_write_is_refused_even_with_a_token() {
        let (security, _tokens) = with_tokens();
        let (app, _data) = app(&security);
        let right = bearer(FIRST);
        let write = |origin: &'static str| {
            request(
                Method::DELETE,
                "/v1/topics/t/delayed/0/0",
                &[
                    (header::AUTHORIZATION, &right),
                    (header::HOST, "127.0.0.1:9644"),
                    (header::ORIGIN, origin),
                ],
            )
        };
        let (status, _, body) = send(&app, write("http://evil.example")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert!(
            json["error"]
                .as_str()
                .is_some_and(|e| e.contains("cross-origin")),
            "{json}"
        );
        let (status, _, body) = send(&app, write("http://127.0.0.1:9644")).await;
        assert!(
            status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
            "a same-origin write reaches its route: {status} {body}"
        );
        // Without a token the cross-origin check still comes first.
        let anonymous = request(
            Method::POST,
            "/logout",
            &[(header::HOST, "127.0.0.1:9644"), (header::ORIGIN, "null")],
        );
        let (status, _, _) = send(&app, anonymous).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }

    /// A TLS acceptor asking for client certificates, over a certificate
    /// made here, and its folder.
    fn requested_certificates() -> (AdminTls, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("a certificate");
        let cert = made.cert.pem();
        let keystore = dir.path().join("admin.pem");
        std::fs::write(
            &keystore,
            format!("{}{cert}", made.signing_key.serialize_pem()),
        )
        .expect("write");
        let truststore = dir.path().join("ca.crt");
        std::fs::write(&truststore, cert).expect("write");
        let acceptor = TlsAcceptor::load(weir_server::TlsSettings {
            keystore,
            truststore: Some(truststore),
            client_auth: ClientAuth::Requested,
            principal_mapping: Default::default(),
        })
        .expect("TLS");
        let tls = AdminTls {
            acceptor: Arc::new(acceptor),
            client_auth: ClientAuth::Requested,
        };
        (tls, dir)
    }

    #[tokio::test]
    async fn a_certificate_or_a_token_authenticates_and_handlers_see_who() {
        let (tls, _certs) = requested_certificates();
        let (mut security, _tokens) = with_tokens();
        security.tls = Some(tls);
        let who =
            Router::new().route(
                "/who",
                get(
                    |axum::Extension(who): axum::Extension<AdminPrincipal>| async move {
                        who.to_string()
                    },
                ),
            );
        let app = secure(who, &security);
        let addr: SocketAddr = "127.0.0.1:50000".parse().expect("address");
        let with_peer = |peer: AdminPeer| app.clone().layer(MockConnectInfo(peer));

        let certified = with_peer(AdminPeer::new(addr, true, Some("User:CN=ops".into())));
        let (status, _, body) = send(&certified, request(Method::GET, "/who", &[])).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "User:CN=ops"));

        let bare = with_peer(AdminPeer::new(addr, true, None));
        let (status, _, body) = send(&bare, request(Method::GET, "/who", &[])).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(body.contains("or present a client certificate"), "{body}");
        let second = bearer(SECOND);
        let (status, _, body) = send(
            &bare,
            request(Method::GET, "/who", &[(header::AUTHORIZATION, &second)]),
        )
        .await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "token#2"));
    }

    #[test]
    fn an_origin_matches_its_host_by_host_and_port() {
        let headers = |origin: &str, host: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::ORIGIN,
                HeaderValue::from_str(origin).expect("value"),
            );
            headers.insert(header::HOST, HeaderValue::from_str(host).expect("value"));
            headers
        };
        for (origin, host, tls) in [
            ("http://127.0.0.1:9644", "127.0.0.1:9644", false),
            ("http://LOCALHOST:9644", "localhost:9644", false),
            ("http://admin.example", "admin.example", false),
            ("http://admin.example:80", "admin.example", false),
            ("https://admin.example", "admin.example", true),
            ("http://[::1]:9644", "[::1]:9644", false),
        ] {
            assert_eq!(
                cross_origin(&headers(origin, host), tls),
                None,
                "{origin} {host}"
            );
        }
        for (origin, host) in [
            ("http://evil.example", "127.0.0.1:9644"),
            ("http://127.0.0.1:8080", "127.0.0.1:9644"),
            ("https://127.0.0.1:9644/", "127.0.0.1:9645"),
            ("null", "127.0.0.1:9644"),
            ("file://", "127.0.0.1:9644"),
            ("http://[::1]:9644", "[::2]:9644"),
        ] {
            assert!(
                cross_origin(&headers(origin, host), false).is_some(),
                "{origin} {host}"
            );
        }
        let mut no_host = HeaderMap::new();
        no_host.insert(header::ORIGIN, HeaderValue::from_static("http://a:1"));
        assert!(cross_origin(&no_host, false).is_some());
        assert_eq!(cross_origin(&HeaderMap::new(), false), None, "no Origin");
    }

    #[test]
    fn tokens_come_from_a_bearer_header_or_the_cookie() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  abc "),
        );
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer_token(&headers), None);
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; weir_admin_token=xyz; other=1"),
        );
        assert_eq!(cookie_token(&headers), Some("xyz"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("weir_admin_token="),
        );
        assert_eq!(cookie_token(&headers), None);
    }

    #[test]
    fn principals_are_named_for_the_write_log() {
        assert_eq!(AdminPrincipal::Anonymous.to_string(), "anonymous");
        assert_eq!(AdminPrincipal::Token(2).to_string(), "token#2");
        assert_eq!(
            AdminPrincipal::Certificate("User:CN=ops".into()).to_string(),
            "User:CN=ops"
        );
    }
}
