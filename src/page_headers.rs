//! Headers for an app's own HTML pages that show session data (a device list, an account
//! page): no framing by other sites (clickjacking a "revoke" or "sign out" button) and no
//! MIME sniffing.
//!
//! The session layer never adds these itself: it cannot know which responses are pages,
//! and an API response does not need them. Apply [`html_page_headers`] to the pages that
//! need them.

use http::{HeaderMap, HeaderValue, header};

/// The `Content-Security-Policy` directive [`html_page_headers`] adds.
const FRAME_ANCESTORS_NONE: &str = "frame-ancestors 'none'";

/// Adds `X-Frame-Options: DENY`, `Content-Security-Policy: frame-ancestors 'none'` and
/// `X-Content-Type-Options: nosniff` to a response's headers.
///
/// The two single-valued headers are replaced. The policy is *appended* as its own
/// `Content-Security-Policy` header, so a policy the page already has keeps applying (a
/// browser enforces every policy it receives) and framing is refused in addition.
///
/// ```
/// use tower_auth_session::http::{HeaderMap, header};
/// use tower_auth_session::html_page_headers;
///
/// let mut headers = HeaderMap::new();
/// html_page_headers(&mut headers);
/// assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
/// assert_eq!(headers[header::CONTENT_SECURITY_POLICY], "frame-ancestors 'none'");
/// assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
/// ```
///
/// With axum, on the routes that render pages:
///
/// ```
/// # #[cfg(feature = "axum")]
/// # {
/// use axum::{Router, middleware, response::Response, routing::get};
///
/// let pages: Router = Router::new()
///     .route("/account", get(|| async { axum::response::Html("<h1>Your devices</h1>") }))
///     .layer(middleware::map_response(|mut response: Response| async move {
///         tower_auth_session::html_page_headers(response.headers_mut());
///         response
///     }));
/// # let _ = pages;
/// # }
/// ```
pub fn html_page_headers(headers: &mut HeaderMap) {
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let already = headers
        .get_all(header::CONTENT_SECURITY_POLICY)
        .iter()
        .any(|v| v == FRAME_ANCESTORS_NONE);
    if !already {
        headers.append(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(FRAME_ANCESTORS_NONE),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_an_existing_policy_and_does_not_repeat_itself() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'self'"),
        );
        headers.insert(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("SAMEORIGIN"),
        );
        html_page_headers(&mut headers);
        html_page_headers(&mut headers);
        let policies: Vec<_> = headers
            .get_all(header::CONTENT_SECURITY_POLICY)
            .iter()
            .collect();
        assert_eq!(policies, ["default-src 'self'", FRAME_ANCESTORS_NONE]);
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
    }
}
