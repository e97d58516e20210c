//! [`SessionService`]: the synchronous half of a request (token, MAC) and the hand-off to
//! the response future for the asynchronous half (stores) when one is needed.

use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use crate::client::ClientFacts;
use crate::cookie_cache::{self, CacheState};
use crate::future::ResponseFuture;
use crate::handle::{CookieAction, HandleState, SessionHandle, Status};
use crate::manager::SessionManager;
use crate::request_cookies::RequestCookies;
use crate::request_token::{PresentedToken, TokenSource, presented_token_with};
use crate::resolve::{Rejection, Resolved};
use crate::token::{Token, TokenHash};

/// The middleware service built by [`SessionLayer`](crate::SessionLayer).
#[derive(Debug, Clone)]
#[must_use]
pub struct SessionService<S> {
    inner: S,
    manager: SessionManager,
}

impl<S> SessionService<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, manager: SessionManager) -> Self {
        Self { inner, manager }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The clone is not necessarily ready; keep the one that is (tower's advice).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let manager = &self.manager.inner;
        let client = ClientFacts::from_request(&request, &manager.tracking);
        // One pass over the `Cookie` headers finds every cookie this request needs.
        let cookies = RequestCookies::parse(manager, request.headers());
        let had_dont_remember = cookies.dont_remember;
        match presented_token_with(manager, request.headers(), cookies.session_token) {
            PresentedToken::None => {
                let cache = CacheState::seen(cookies.cache_presence());
                let handle = anonymous(&self.manager, client, None, had_dont_remember, None, cache);
                request.extensions_mut().insert(handle.clone());
                ResponseFuture::inner(inner.call(request), handle)
            }
            PresentedToken::Invalid(source, error) => {
                tracing::debug!(%error, ?source, "refused a session token");
                let cache = CacheState::seen(cookies.cache_presence());
                let handle = anonymous(
                    &self.manager,
                    client,
                    Some(source),
                    had_dont_remember,
                    Some(Rejection::Invalid),
                    cache,
                );
                request.extensions_mut().insert(handle.clone());
                ResponseFuture::inner(inner.call(request), handle)
            }
            PresentedToken::Valid { token, source } => {
                let hash = token.hash();
                // Bearer clients keep no cookies, so only a cookie request has a cache.
                let cache = if source == TokenSource::Cookie {
                    let now = manager.clock.now();
                    match cookie_cache::read_gathered(manager, cookies.cache.as_ref(), &hash, now) {
                        // The hit path: no I/O, no future of our own.
                        (cache, Some(session)) => {
                            let handle = cached_handle(
                                &self.manager,
                                session,
                                token,
                                hash,
                                client,
                                had_dont_remember,
                                cache,
                            );
                            request.extensions_mut().insert(handle.clone());
                            return ResponseFuture::inner(inner.call(request), handle);
                        }
                        (cache, None) => cache,
                    }
                } else {
                    CacheState::default()
                };
                let manager = self.manager.clone();
                let resolve_client = client.clone();
                let resolution =
                    Box::pin(async move { manager.resolve_hash(hash, &resolve_client).await });
                ResponseFuture::resolving(
                    resolution,
                    crate::future::Pending {
                        request,
                        inner,
                        manager: self.manager.clone(),
                        token,
                        hash,
                        source,
                        client,
                        had_dont_remember,
                        cache,
                    },
                )
            }
        }
    }
}

fn anonymous(
    manager: &SessionManager,
    client: ClientFacts,
    source: Option<TokenSource>,
    had_dont_remember: bool,
    rejection: Option<Rejection>,
    cache: CacheState,
) -> SessionHandle {
    let cookie_action = if source == Some(TokenSource::Cookie) && rejection.is_some() {
        CookieAction::Clear
    } else {
        CookieAction::Keep
    };
    SessionHandle::new(
        manager.clone(),
        client,
        source,
        had_dont_remember,
        HandleState {
            token: None,
            session: None,
            status: Status::Decided,
            rejection,
            cookie_action,
            issued: None,
            cache,
        },
    )
}

/// The handle of a request resolved from its cookie cache.
fn cached_handle(
    manager: &SessionManager,
    session: crate::session::Session,
    token: Token,
    hash: TokenHash,
    client: ClientFacts,
    had_dont_remember: bool,
    cache: CacheState,
) -> SessionHandle {
    SessionHandle::new(
        manager.clone(),
        client,
        Some(TokenSource::Cookie),
        had_dont_remember,
        HandleState {
            token: Some((token, hash)),
            session: Some(session),
            status: Status::Decided,
            rejection: None,
            cookie_action: CookieAction::Keep,
            issued: None,
            cache,
        },
    )
}

/// Turns a store resolution into the handle the inner service sees.
pub(crate) fn resolved_handle(
    manager: &SessionManager,
    resolved: Resolved,
    token: Token,
    hash: TokenHash,
    source: TokenSource,
    client: ClientFacts,
    had_dont_remember: bool,
) -> SessionHandle {
    let inner = &manager.inner;
    let state = match resolved {
        Resolved::Valid { session, refreshed } => {
            let cookie_action = if refreshed && source == TokenSource::Cookie {
                CookieAction::Set {
                    signed: inner.keys.sign_token(&inner.names.session_token, &token),
                    remember: session.remember,
                    expires_at: session.expires_at,
                }
            } else {
                CookieAction::Keep
            };
            HandleState {
                token: Some((token, hash)),
                session: Some(session),
                status: Status::Decided,
                rejection: None,
                cookie_action,
                issued: None,
                cache: CacheState::default(),
            }
        }
        Resolved::Gone(rejection) => HandleState {
            token: None,
            session: None,
            status: Status::Decided,
            rejection: Some(rejection),
            cookie_action: if source == TokenSource::Cookie {
                CookieAction::Clear
            } else {
                CookieAction::Keep
            },
            issued: None,
            cache: CacheState::default(),
        },
        Resolved::Unavailable => HandleState {
            token: Some((token, hash)),
            session: None,
            status: Status::Unavailable,
            rejection: None,
            cookie_action: CookieAction::Keep,
            issued: None,
            cache: CacheState::default(),
        },
    };
    SessionHandle::new(
        manager.clone(),
        client,
        Some(source),
        had_dont_remember,
        state,
    )
}
