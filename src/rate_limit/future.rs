//! [`ResponseFuture`]: wait for a shared count (Redis) if there is one, then the inner
//! service's response or the 429.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode, header};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::RateLimited;
use crate::store::BoxFuture;

pin_project! {
    /// Response future of [`RateLimitService`](super::RateLimitService).
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        Check {
            check: BoxFuture<'static, Option<Duration>>,
            pending: Option<(S, Request<B>)>,
        },
        Inner {
            #[pin]
            future: S::Future,
        },
        Refused {
            retry_after: Duration,
        },
    }
}

impl<S, B> std::fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Check { .. } => "counting the request",
            State::Inner { .. } => "calling the inner service",
            State::Refused { .. } => "refusing: over budget",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(super) fn inner(future: S::Future) -> Self {
        Self {
            state: State::Inner { future },
        }
    }

    pub(super) fn refused(retry_after: Duration) -> Self {
        Self {
            state: State::Refused { retry_after },
        }
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(super) fn checking(
        check: BoxFuture<'static, Option<Duration>>,
        inner: S,
        request: Request<B>,
    ) -> Self {
        Self {
            state: State::Check {
                check,
                pending: Some((inner, request)),
            },
        }
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    ResBody: From<String>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Check { check, pending } => {
                    let decision = ready!(check.as_mut().poll(cx));
                    let (mut inner, request) = pending
                        .take()
                        .expect("ResponseFuture polled after completion");
                    match decision {
                        None => {
                            let future = inner.call(request);
                            this.state.set(State::Inner { future });
                        }
                        Some(retry_after) => this.state.set(State::Refused { retry_after }),
                    }
                }
                StateProj::Inner { future } => return future.poll(cx),
                StateProj::Refused { retry_after } => {
                    return Poll::Ready(Ok(too_many_requests(*retry_after)));
                }
            }
        }
    }
}

/// The 429: Better Auth's error body and both of its retry headers, in whole seconds
/// rounded up (a client that waits that long is within budget again).
fn too_many_requests<ResBody: From<String>>(retry_after: Duration) -> Response<ResBody> {
    let seconds = retry_after.as_millis().div_ceil(1000).max(1);
    let body = serde_json::json!({
        "error": "too_many_requests",
        "code": "TOO_MANY_REQUESTS",
        "message": format!("too many requests; try again in {seconds} s"),
    });
    let mut response = Response::new(ResBody::from(body.to_string()));
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let headers = response.headers_mut();
    let wait = HeaderValue::from(seconds as u64);
    headers.insert(header::RETRY_AFTER, wait.clone());
    headers.insert("x-retry-after", wait);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
        .extensions_mut()
        .insert(RateLimited { retry_after });
    response
}
