//! [`RateLimitService`]: decide, then call the inner service or answer 429.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::limiter::Limiter;
use crate::rate_limit::future::ResponseFuture;

/// The service [`RateLimitLayer`](super::RateLimitLayer) wraps around another.
#[derive(Debug, Clone)]
#[must_use]
pub struct RateLimitService<S> {
    inner: S,
    limiter: Arc<Limiter>,
}

impl<S> RateLimitService<S> {
    pub(super) fn new(inner: S, limiter: Arc<Limiter>) -> Self {
        Self { inner, limiter }
    }
}

impl<S, B, ResBody> Service<Request<B>> for RateLimitService<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    B: Send + 'static,
    ResBody: From<String>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let Some(rule) = self.limiter.rule_for(request.uri().path()) else {
            return ResponseFuture::inner(self.inner.call(request));
        };
        let client = self.limiter.client_of(&request);
        #[cfg(feature = "redis")]
        if self.limiter.shared.is_some() {
            // The inner service that was made ready goes with the request (tower's advice).
            let clone = self.inner.clone();
            let inner = std::mem::replace(&mut self.inner, clone);
            let limiter = self.limiter.clone();
            let check = Box::pin(async move { limiter.check_shared(rule, client).await });
            return ResponseFuture::checking(check, inner, request);
        }
        match self.limiter.check_in_memory(rule, client) {
            None => ResponseFuture::inner(self.inner.call(request)),
            Some(retry_after) => ResponseFuture::refused(retry_after),
        }
    }
}
