//! The session endpoints (feature `axum`): get the session, list the user's devices,
//! revoke one, the others or all, sign out.
//!
//! They are a plain axum [`Router`] that the app nests where it likes (the demo uses
//! `/api/auth`) inside [`SessionManager::layer`]; they read everything from the
//! [`SessionHandle`] the layer puts in each request. Every response says
//! `Cache-Control: no-store`, no body ever contains a token, and every POST passes the
//! cross-site guard ([`CrossSiteGuard`]) before anything else happens.

use axum::body::Bytes;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use crate::error::SessionError;
use crate::extract::CrossSiteGuard;
use crate::handle::{RevokeStatus, SessionHandle};
use crate::manager::SessionManager;
use crate::rejection::{SessionRejection, error_response};
use crate::session::Session;

/// Longest session id accepted in a revoke body; ours are 22 characters.
const MAX_SESSION_ID_LEN: usize = 128;

impl SessionManager {
    /// The session endpoints, to nest inside an app that runs [`layer`](Self::layer):
    ///
    /// | route | answer |
    /// |---|---|
    /// | `GET /get-session` | 200 `{"session": {…}}`, or 200 `null` without a valid session |
    /// | `GET /list-sessions` | 200 `[{…session, "current": bool}, …]`: the caller's live sessions, oldest first; 401 without a session. With `?limit=N` (1–100; more is 100) one page of them, and an `x-next-cursor` header when more follow: pass it back as `?limit=N&cursor=…`; a bad `limit` or `cursor` is 400 |
    /// | `POST /revoke-session` | body `{"id": "…"}`: revokes that session if it is the caller's; 200 `{"status": true}` either way; 401 without a session |
    /// | `POST /revoke-other-sessions` | revokes the caller's other sessions; 200 `{"status": true}`; 401 without a session |
    /// | `POST /revoke-sessions` | revokes all the caller's sessions and clears its cookies; 200 `{"status": true}`; 401 without a session |
    /// | `POST /sign-out` | revokes the current session and clears its cookies; 200 `{"success": true}` |
    /// | `POST /update-session` | body: a JSON object of app fields to set (`null` removes one), each one the [`field_policy`](crate::SessionManagerBuilder::field_policy) lets a client write; 200 `{"session": {…}}`; 403 `field_not_writable` for a field it keeps for the server; 400 for a built-in name or a body that is not an object; 409 when concurrent writes kept winning; 401 without a session |
    ///
    /// POSTs refused by the cross-site guard answer 403 `{"error":"cross_site_request"}`
    /// (configure [`trusted_origins`](crate::SessionManagerBuilder::trusted_origins)); a
    /// store outage answers 503 and signs nobody out.
    ///
    /// ```
    /// use axum::Router;
    /// use tower_auth_session::{MemoryStore, SessionManager};
    ///
    /// let manager = SessionManager::builder(MemoryStore::new())
    ///     .secret(b"an example secret of at least 32 bytes!")
    ///     .trusted_origins(["https://app.example.com"])
    ///     .build()
    ///     .unwrap();
    /// let app: Router = Router::new()
    ///     .nest("/api/auth", manager.router())
    ///     .layer(manager.layer());
    /// # let _ = app;
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    pub fn router<S>(&self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        Router::new()
            .route("/get-session", get(get_session))
            .route("/list-sessions", get(list_sessions))
            .route("/revoke-session", post(revoke_session))
            .route("/revoke-other-sessions", post(revoke_other_sessions))
            .route("/revoke-sessions", post(revoke_sessions))
            .route("/sign-out", post(sign_out))
            .route("/update-session", post(update_session))
            .merge(self.identity_routes())
            .layer(axum::middleware::map_response(no_store))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                trusted_cors,
            ))
    }
}

impl SessionManager {
    /// [`router`](Self::router) with every endpoint counted against `budget` per client IP
    /// (feature `rate-limit`): past it, 429 with `Retry-After`, no cookie set and no
    /// endpoint run. The session was read before the count (the routes sit inside the
    /// layer); for a limit that keeps a request from reaching the session layer at all,
    /// put [`rate_limit_layer`](Self::rate_limit_layer) outside `layer()` instead.
    ///
    /// ```
    /// use std::time::Duration;
    /// use axum::Router;
    /// use tower_auth_session::{Budget, MemoryStore, SessionManager};
    ///
    /// let manager = SessionManager::builder(MemoryStore::new())
    ///     .secret(b"an example secret of at least 32 bytes!")
    ///     .build()
    ///     .unwrap();
    /// let app: Router = Router::new()
    ///     .nest(
    ///         "/api/auth",
    ///         manager.rate_limited_router(Budget::new(30, Duration::from_secs(10))),
    ///     )
    ///     .layer(manager.layer());
    /// # let _ = app;
    /// ```
    #[cfg(feature = "rate-limit")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rate-limit")))]
    pub fn rate_limited_router<S>(&self, budget: crate::rate_limit::Budget) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let limits = crate::rate_limit::RateLimit::new().every_request(budget);
        self.router().layer(self.rate_limit_layer(limits))
    }
}

/// CORS for the trusted origins (feature `axum`), so a single-page app on another origin
/// (a dev server on `localhost:5173`, an app domain) can call the session endpoints with
/// credentials and read `set-auth-token`: a preflight from a trusted origin is answered
/// (204), and responses to it echo the origin with `Access-Control-Allow-Credentials`.
/// Other origins get no CORS headers, so the browser keeps them out. The endpoints of
/// [`SessionManager::router`] have it; add it to the app's own routes with
/// `axum::middleware::from_fn_with_state(manager.clone(), trusted_cors)`.
///
/// ```
/// use axum::{Router, routing::get};
/// use tower_auth_session::{MemoryStore, SessionManager, trusted_cors};
///
/// let manager = SessionManager::builder(MemoryStore::new())
///     .secret(b"an example secret of at least 32 bytes!")
///     .trusted_origins(["http://localhost:5173"])
///     .build()
///     .unwrap();
/// let app: Router = Router::new()
///     .route("/api/me", get(|| async { "me" }))
///     .layer(axum::middleware::from_fn_with_state(manager.clone(), trusted_cors))
///     .layer(manager.layer());
/// # let _ = app;
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub async fn trusted_cors(
    axum::extract::State(manager): axum::extract::State<SessionManager>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .filter(|origin| manager.is_trusted_origin(origin.as_bytes()))
        .cloned();
    let Some(origin) = origin else {
        return next.run(request).await;
    };
    let preflight = request.method() == http::Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type, authorization"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        response
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    if headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
        // Applied twice (the router's own and the app's around it): once is enough.
        return response;
    }
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    headers.append(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("set-auth-token"),
    );
    response
}

/// Session answers are personal: no shared cache may keep them, no browser may reuse them.
async fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A handler's failure, as the response it becomes.
enum Failure {
    Rejected(SessionRejection),
    BadRequest(&'static str),
    /// A session error with a status of its own (a field the client may not write, a
    /// conflicting write).
    Session(SessionError),
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Self::Rejected(rejection) => rejection.into_response(),
            Self::Session(error) => error.into_response(),
            Self::BadRequest(error) => {
                let message = match error {
                    "invalid_body" => "the request body is not what this endpoint takes",
                    "invalid_query" => "the query string is not what this endpoint takes",
                    "invalid_cursor" => "the cursor is not one this server issued",
                    "invalid_session_fields" => {
                        "session fields must be a JSON object of plain ASCII names, none of them a built-in field, with no NUL characters"
                    }
                    _ => "bad request",
                };
                error_response(StatusCode::BAD_REQUEST, error, message)
            }
        }
    }
}

impl From<SessionError> for Failure {
    fn from(error: SessionError) -> Self {
        match error {
            SessionError::NoSession => Self::Rejected(SessionRejection::Unauthenticated),
            SessionError::InvalidCursor => Self::BadRequest("invalid_cursor"),
            SessionError::Fields(_) => Self::BadRequest("invalid_session_fields"),
            // Their own status and body: 403 field_not_writable, 409 session_conflict.
            error @ (SessionError::FieldNotWritable(_)
            | SessionError::Conflict
            | SessionError::Forbidden
            | SessionError::NotImpersonating
            | SessionError::Refused(_)) => Self::Session(error),
            error => {
                tracing::error!(error = %crate::error::chain(&error), "session endpoint could not reach the store");
                Self::Rejected(SessionRejection::Unavailable)
            }
        }
    }
}

/// The caller's session, or 401 (503 when a store was down: that is not a sign-out).
/// A refresh an app hook refused answers the hook's status.
fn require_session(handle: &SessionHandle) -> Result<Session, Failure> {
    handle.require().map_err(Failure::Rejected)
}

fn status_true() -> Json<Value> {
    Json(json!({ "status": true }))
}

async fn get_session(handle: SessionHandle) -> Result<Json<Value>, Failure> {
    let session = match handle.current() {
        Some(session) => session,
        None if handle.is_unavailable() => {
            return Err(Failure::Rejected(SessionRejection::Unavailable));
        }
        None => return Ok(Json(Value::Null)),
    };
    match handle.manager().load_user(&session.user_id).await {
        Ok(Some(user)) => {
            let mut body = json!({ "session": session, "user": user });
            // Better Auth's `deferSessionRefresh`: the client learns a refresh is owed.
            if handle.manager().inner.config.defer_refresh && handle.needs_refresh() {
                body["needsRefresh"] = Value::Bool(true);
            }
            Ok(Json(body))
        }
        // A session whose user is gone is no session to show.
        Ok(None) => Ok(Json(Value::Null)),
        Err(error) => Err(SessionError::Store(error).into()),
    }
}

/// `POST /update-session`: merges a JSON object into the session's app fields.
async fn update_session(
    _: CrossSiteGuard,
    handle: SessionHandle,
    body: Bytes,
) -> Result<Json<Value>, Failure> {
    require_session(&handle)?;
    let Ok(Value::Object(changes)) = serde_json::from_slice::<Value>(&body) else {
        return Err(Failure::BadRequest("invalid_session_fields"));
    };
    // The body is the client's: only fields the policy opens to it.
    let session = handle.update_fields_from_client(changes).await?;
    Ok(Json(json!({ "session": session })))
}

/// The header that carries the next page's cursor on `GET /list-sessions?limit=N`.
pub(crate) const NEXT_CURSOR: &str = "x-next-cursor";

/// `?limit=N&cursor=…` of `GET /list-sessions`; both optional.
#[derive(Debug, serde::Deserialize)]
struct ListQuery {
    limit: Option<usize>,
    cursor: Option<String>,
}

async fn list_sessions(
    handle: SessionHandle,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    let current = require_session(&handle)?;
    let Ok(Query(query)) = query else {
        return Err(Failure::BadRequest("invalid_query"));
    };
    // Without `limit`: the whole list, as Better Auth's client expects.
    let (sessions, next_cursor) = match (query.limit, query.cursor) {
        (None, None) => (handle.list().await?, None),
        (Some(0), _) => return Err(Failure::BadRequest("invalid_query")),
        // A cursor without a limit pages by the largest page.
        (limit, cursor) => {
            let limit = limit.unwrap_or(usize::MAX);
            let page = handle.list_page(limit, cursor.as_deref()).await?;
            (page.sessions, page.next_cursor)
        }
    };
    let listed: Vec<Value> = sessions
        .into_iter()
        .map(|session| {
            let is_current = session.id == current.id;
            let mut value = serde_json::to_value(session).unwrap_or(Value::Null);
            if let Value::Object(map) = &mut value {
                // Better Auth's client passes `token` back to revoke-session; ours is the
                // public id, never a credential.
                let id = map.get("id").cloned().unwrap_or(Value::Null);
                map.insert("token".to_owned(), id);
                map.insert("current".to_owned(), Value::Bool(is_current));
            }
            value
        })
        .collect();
    let mut response = Json(listed).into_response();
    if let Some(next) = next_cursor.and_then(|c| HeaderValue::try_from(c).ok()) {
        response.headers_mut().insert(NEXT_CURSOR, next);
        response.headers_mut().append(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(NEXT_CURSOR),
        );
    }
    Ok(response)
}

/// The session id of a revoke body: `{"id": "…"}`, or `{"token": "…"}` as Better Auth's
/// client sends it (our `token` is the public id), or both when they agree. Parsed by
/// hand so that any content type works (the cross-site guard, not the content type, is
/// what stops forged requests) and a bad body is a 400 with a JSON answer.
fn session_id_from(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let named = |key| value.get(key).map(Value::as_str);
    let id = match (named("id"), named("token")) {
        (Some(Some(id)), None) | (None, Some(Some(id))) => id,
        (Some(Some(id)), Some(Some(token))) if id == token => id,
        _ => return None,
    };
    (!id.is_empty() && id.len() <= MAX_SESSION_ID_LEN).then(|| id.to_owned())
}

async fn revoke_session(
    _: CrossSiteGuard,
    handle: SessionHandle,
    body: Bytes,
) -> Result<Json<Value>, Failure> {
    require_session(&handle)?;
    let id = session_id_from(&body).ok_or(Failure::BadRequest("invalid_body"))?;
    // Whether it was ours or existed at all is not the caller's business: same answer.
    handle.revoke(&id).await?;
    Ok(status_true())
}

async fn revoke_other_sessions(
    _: CrossSiteGuard,
    handle: SessionHandle,
) -> Result<Json<Value>, Failure> {
    require_session(&handle)?;
    handle.revoke_others().await?;
    Ok(status_true())
}

async fn revoke_sessions(_: CrossSiteGuard, handle: SessionHandle) -> Result<Json<Value>, Failure> {
    require_session(&handle)?;
    handle.revoke_all().await?;
    Ok(status_true())
}

async fn sign_out(_: CrossSiteGuard, handle: SessionHandle) -> Result<Json<Value>, Failure> {
    // The browser is signed out either way; `pending` says the server is still finishing
    // the revoke (a tier was unreachable).
    match handle.sign_out().await? {
        RevokeStatus::Pending => Ok(Json(json!({ "success": true, "pending": true }))),
        _ => Ok(Json(json!({ "success": true }))),
    }
}

impl SessionManager {
    /// The routes of Better Auth's `multiSession` and (impersonation half of) `admin`
    /// plugins, for what the builder turned on.
    fn identity_routes<S>(&self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let mut routes = Router::new();
        if self.inner.multi_session > 0 {
            routes = routes
                .route(
                    "/multi-session/list-device-sessions",
                    get(list_device_sessions),
                )
                .route("/multi-session/set-active", post(set_active_session))
                .route("/multi-session/revoke", post(revoke_device_session));
        }
        if self.inner.impersonation.is_some() {
            routes = routes
                .route("/admin/impersonate-user", post(impersonate_user))
                .route("/admin/stop-impersonating", post(stop_impersonating));
        }
        routes
    }
}

/// A session as the client plugins read it: `token` is its public id, never a credential.
fn with_public_token(session: &Session) -> Value {
    let mut value = serde_json::to_value(session).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert("token".to_owned(), Value::String(session.id.clone()));
    }
    value
}

/// `{"session", "user"}` for `session`, the user from the app's loader.
async fn session_and_user(handle: &SessionHandle, session: &Session) -> Result<Value, Failure> {
    let user = handle
        .manager()
        .load_user(&session.user_id)
        .await
        .map_err(SessionError::Store)?;
    Ok(json!({ "session": with_public_token(session), "user": user }))
}

/// The string `key` of a JSON body, 1 to 255 bytes.
fn body_string(body: &[u8], key: &str) -> Result<String, Failure> {
    let value: Value =
        serde_json::from_slice(body).map_err(|_| Failure::BadRequest("invalid_body"))?;
    match value.get(key).and_then(Value::as_str) {
        Some(text) if !text.is_empty() && text.len() <= 255 => Ok(text.to_owned()),
        _ => Err(Failure::BadRequest("invalid_body")),
    }
}

async fn list_device_sessions(handle: SessionHandle) -> Result<Json<Value>, Failure> {
    require_session(&handle)?;
    let mut listed = Vec::new();
    for session in handle.device_sessions().await? {
        listed.push(session_and_user(&handle, &session).await?);
    }
    Ok(Json(Value::Array(listed)))
}

async fn set_active_session(
    _: CrossSiteGuard,
    handle: SessionHandle,
    body: Bytes,
) -> Result<Json<Value>, Failure> {
    let id = body_string(&body, "sessionToken")?;
    let session = handle.set_active_session(&id).await?;
    Ok(Json(session_and_user(&handle, &session).await?))
}

async fn revoke_device_session(
    _: CrossSiteGuard,
    handle: SessionHandle,
    body: Bytes,
) -> Result<Json<Value>, Failure> {
    require_session(&handle)?;
    let id = body_string(&body, "sessionToken")?;
    handle.revoke_device_session(&id).await?;
    Ok(status_true())
}

async fn impersonate_user(
    _: CrossSiteGuard,
    handle: SessionHandle,
    body: Bytes,
) -> Result<Json<Value>, Failure> {
    require_session(&handle)?;
    let user_id = body_string(&body, "userId")?;
    let session = handle.impersonate(user_id).await?;
    Ok(Json(session_and_user(&handle, &session).await?))
}

async fn stop_impersonating(
    _: CrossSiteGuard,
    handle: SessionHandle,
) -> Result<Json<Value>, Failure> {
    require_session(&handle)?;
    let session = handle.stop_impersonating().await?;
    Ok(Json(session_and_user(&handle, &session).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoke_body_needs_a_plausible_id() {
        assert_eq!(session_id_from(br#"{"id":"abc"}"#).as_deref(), Some("abc"));
        for bad in [
            &b""[..],
            b"null",
            b"{}",
            br#"{"id":""}"#,
            br#"{"id":7}"#,
            b"\xff\xfe",
            b"[1,2]",
        ] {
            assert_eq!(session_id_from(bad), None, "{bad:?}");
        }
        let long = format!(r#"{{"id":"{}"}}"#, "a".repeat(MAX_SESSION_ID_LEN + 1));
        assert_eq!(session_id_from(long.as_bytes()), None);
    }
}
