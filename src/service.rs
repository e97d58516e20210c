//! [`SessionService`]: the synchronous half of a request (token, MAC) and the hand-off to
//! the response future for the asynchronous half (stores) when one is needed.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, Request, Response, header};
use tower_service::Service;

use crate::client::ClientFacts;
use crate::config::{AuthTokenHeader, WANT_AUTH_TOKEN};
use crate::cookie_cache::CacheState;
use crate::cookie_cache::chunks::Presence;
use crate::future::{Pending, ResponseFuture};
use crate::handle::{HandleState, RequestFacts, SessionHandle, VerifiedToken};
use crate::manager::{InProcess, ManagerInner, SessionManager};
use crate::rejection::RejectionReason;
use crate::request_cookies::RequestCookies;
use crate::request_token::{
    Deferred, PresentedToken, TokenSource, presented_token_deferred, presented_token_with,
};
use crate::session::Session;
use crate::token::TokenHash;

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

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The clone is not necessarily ready; keep the one that is (tower's advice).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let manager = &self.manager.inner;
        let cache_tier = manager.cookie_cache.as_ref();
        // One pass over the `Cookie` headers finds every cookie this request needs.
        let cookies =
            RequestCookies::parse(&manager.names, cache_tier.is_some(), request.headers());
        let facts = RequestFacts {
            client: ClientFacts::from_request(&request, &manager.tracking),
            had_dont_remember: cookies.dont_remember,
            asked_for_auth_token: manager.config.auth_token_header == AuthTokenHeader::OnRequest
                && request.headers().contains_key(WANT_AUTH_TOKEN),
            cookie_headers: if manager.keeps_cookie_headers() {
                request
                    .headers()
                    .get_all(header::COOKIE)
                    .iter()
                    .cloned()
                    .collect()
            } else {
                Vec::new()
            },
        };
        let cached = cache_tier.zip(cookies.cache.as_ref());
        let (presented, read_cache) = match present(manager, request.headers(), &cookies) {
            Presented::CacheHit(state) => {
                return self.call_inner(request, inner, facts, Some(TokenSource::Cookie), state);
            }
            Presented::Token(presented, read_cache) => (presented, read_cache),
        };
        let (source, state) = match presented {
            PresentedToken::None => {
                let cache = CacheState::seen(cookies.cache_presence());
                (None, HandleState::anonymous(None, None, cache))
            }
            PresentedToken::Invalid(source, error) => {
                tracing::debug!(%error, ?source, "refused a session token");
                let cache = CacheState::seen(cookies.cache_presence());
                let rejection = Some(RejectionReason::Invalid);
                (
                    Some(source),
                    HandleState::anonymous(Some(source), rejection, cache),
                )
            }
            PresentedToken::Valid { token, source } => {
                // A cache that was read and missed already hashed these token bytes.
                let hash = match &read_cache {
                    Some((_, hash)) => *hash,
                    None => token.hash(),
                };
                let token = VerifiedToken {
                    hash,
                    token,
                    source,
                };
                // Bearer clients keep no cookies, so only a cookie request has a cache.
                let cache = match (source, cached, read_cache) {
                    (TokenSource::Cookie, _, Some((read, _))) => read,
                    (TokenSource::Cookie, Some((tier, gathered)), None) => {
                        let now = manager.clock.now();
                        let keys = &manager.keys;
                        match tier.read_hit(keys, &manager.config, gathered, &token.hash, now) {
                            (cache, Some(hit)) => {
                                let state = HandleState::cached(token, hit, cache);
                                return self.call_inner(request, inner, facts, Some(source), state);
                            }
                            (cache, None) => cache,
                        }
                    }
                    _ => CacheState::default(),
                };
                // An in-process store (memory) answers at once: no future, no copy.
                let found = match manager.resolve_in_process(&token.hash) {
                    InProcess::Resolved(resolved) => {
                        let state = HandleState::resolved(manager, token, resolved, cache);
                        return self.call_inner(request, inner, facts, Some(source), state);
                    }
                    InProcess::Found(session) => Some(session),
                    InProcess::Unknown => None,
                };
                return self.resolving(request, inner, token, facts, cache, found);
            }
        };
        self.call_inner(request, inner, facts, source, state)
    }
}

/// What a request presents, read with the cookie cache in mind.
// Returned once per request and moved into the handle; boxing the state would be the
// allocation the hit path avoids.
#[allow(clippy::large_enum_variant)]
enum Presented {
    /// A cookie-cache hit, decided: the cache vouched for the token, whose own MAC was not
    /// needed (ARCHITECTURE.md, "The token MAC on a cache hit").
    CacheHit(HandleState),
    /// The token, its MAC checked, and, if the cache was already read, its state and the
    /// token hash it was read with.
    Token(PresentedToken, Option<(CacheState, TokenHash)>),
}

/// The request's token. When cache cookies were sent, a cookie token's MAC waits until
/// the cache has been read: a hit needs no MAC check, a miss checks it before anything else.
fn present(manager: &ManagerInner, headers: &HeaderMap, cookies: &RequestCookies<'_>) -> Presented {
    let (keys, names) = (&manager.keys, &manager.names);
    let transport = manager.config.token_transport;
    let cookie = cookies.session_token;
    let sent = manager
        .cookie_cache
        .as_ref()
        .zip(cookies.cache.as_ref())
        .filter(|(_, gathered)| gathered.presence() != Presence::default());
    let Some((tier, gathered)) = sent else {
        let presented = presented_token_with(keys, names, transport, headers, cookie);
        return Presented::Token(presented, None);
    };
    let unchecked = match presented_token_deferred(keys, names, transport, headers, cookie) {
        Deferred::Checked(presented) => return Presented::Token(presented, None),
        Deferred::Cookie(unchecked) => unchecked,
    };
    let mut read_cache = None;
    if let Some(token) = unchecked.token() {
        let hash = token.hash();
        let now = manager.clock.now();
        match tier.read_hit(keys, &manager.config, gathered, &hash, now) {
            (cache, Some(hit)) => {
                let source = TokenSource::Cookie;
                let token = VerifiedToken {
                    token: token.clone(),
                    hash,
                    source,
                };
                return Presented::CacheHit(HandleState::cached(token, hit, cache));
            }
            (cache, None) => read_cache = Some((cache, hash)),
        }
    }
    let presented = match unchecked.verify(&names.session_token) {
        Ok(token) => PresentedToken::Valid {
            token,
            source: TokenSource::Cookie,
        },
        Err(error) => PresentedToken::Invalid(TokenSource::Cookie, error),
    };
    Presented::Token(presented, read_cache)
}

impl<S> SessionService<S> {
    /// The paths decided without I/O: the handle goes in the request, and the inner
    /// service is called at once.
    fn call_inner<ReqBody>(
        &self,
        mut request: Request<ReqBody>,
        mut inner: S,
        facts: RequestFacts,
        source: Option<TokenSource>,
        state: HandleState,
    ) -> ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        let handle = SessionHandle::new(self.manager.clone(), facts, source, state);
        request.extensions_mut().insert(handle.clone());
        ResponseFuture::inner(inner.call(request), handle)
    }

    /// The I/O path: ask the stores, then call `inner` with the handle they decide.
    fn resolving<ReqBody>(
        &self,
        request: Request<ReqBody>,
        inner: S,
        token: VerifiedToken,
        facts: RequestFacts,
        cache: CacheState,
        found: Option<Arc<Session>>,
    ) -> ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        let manager = self.manager.clone();
        let hash = token.hash;
        let client = facts.client.clone();
        let read_only = manager.inner.config.read_only(&request);
        let resolution =
            Box::pin(async move { manager.inner.resolve(hash, &client, found, read_only).await });
        ResponseFuture::resolving(
            resolution,
            Pending {
                request,
                inner,
                manager: self.manager.clone(),
                token,
                facts,
                cache,
            },
        )
    }
}
