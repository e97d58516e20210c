//! [`ResponseFuture`]: resolve the session (only when a store must be asked), call the
//! inner service, then write the cookies the request earned.
//!
//! The state machine is a `pin_project_lite` enum. Requests without a token, with a bad
//! token, or (with the cookie cache) a valid cache start directly in `Inner` and allocate
//! no future of their own; only a store lookup holds a boxed future, next to the I/O it
//! waits for.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::cookie_cache::CacheState;
use crate::handle::{HandleState, RequestFacts, SessionHandle, VerifiedToken};
use crate::manager::{Resolved, SessionManager};
use crate::store::BoxFuture;

/// What waits while the stores are asked.
pub(crate) struct Pending<S, B> {
    pub(crate) request: Request<B>,
    pub(crate) inner: S,
    pub(crate) manager: SessionManager,
    pub(crate) token: VerifiedToken,
    pub(crate) facts: RequestFacts,
    /// The request's cache cookies; a cache is issued only if a session is found.
    pub(crate) cache: CacheState,
}

pin_project! {
    /// Response future of [`SessionService`](crate::SessionService).
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
        handle: Option<SessionHandle>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        Resolve {
            resolution: BoxFuture<'static, Resolved>,
            pending: Option<Pending<S, B>>,
        },
        Inner {
            #[pin]
            future: S::Future,
        },
    }
}

impl<S, B> std::fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Resolve { .. } => "resolving the session",
            State::Inner { .. } => "calling the inner service",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("handle", &self.handle)
            .finish()
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(crate) fn inner(future: S::Future, handle: SessionHandle) -> Self {
        Self {
            state: State::Inner { future },
            handle: Some(handle),
        }
    }

    pub(crate) fn resolving(
        resolution: BoxFuture<'static, Resolved>,
        pending: Pending<S, B>,
    ) -> Self {
        Self {
            state: State::Resolve {
                resolution,
                pending: Some(pending),
            },
            handle: None,
        }
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Resolve {
                    resolution,
                    pending,
                } => {
                    let resolved = ready!(resolution.as_mut().poll(cx));
                    let Pending {
                        mut request,
                        mut inner,
                        manager,
                        token,
                        facts,
                        cache,
                    } = pending
                        .take()
                        .expect("ResponseFuture polled after completion");
                    let source = Some(token.source);
                    let state = HandleState::resolved(&manager.inner, token, resolved, cache);
                    let handle = SessionHandle::new(manager, facts, source, state);
                    request.extensions_mut().insert(handle.clone());
                    *this.handle = Some(handle);
                    let future = inner.call(request);
                    this.state.set(State::Inner { future });
                }
                StateProj::Inner { future } => {
                    let mut response = ready!(future.poll(cx))?;
                    // A request a rate limit inside this layer refused earned no cookie.
                    #[cfg(feature = "rate-limit")]
                    if response
                        .extensions()
                        .get::<crate::rate_limit::RateLimited>()
                        .is_some()
                    {
                        this.handle.take();
                    }
                    if let Some(handle) = this.handle.take() {
                        if let Some(rejection) = handle.finish(response.headers_mut()) {
                            response.extensions_mut().insert(rejection);
                        }
                    }
                    return Poll::Ready(Ok(response));
                }
            }
        }
    }
}
