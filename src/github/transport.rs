//! The HTTP stack under octocrab, which every REST call goes through: octocrab's own layers
//! (user agent, base URI, authorization) over a metered hyper client, so each request is
//! counted by route template and status and timed, and GitHub's rate-limit headers are
//! kept as gauges. octocrab's default stack takes no extra layer, hence building it here.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use anyhow::Context as _;
use http::header::USER_AGENT;
use http::{HeaderValue, Request, Response, Uri};
use octocrab::service::middleware::auth_header::AuthHeaderLayer;
use octocrab::service::middleware::base_uri::BaseUriLayer;
use octocrab::service::middleware::extra_headers::ExtraHeadersLayer;
use octocrab::{AuthState, OctoBody, Octocrab, OctocrabBuilder};
use tower::{Layer, Service};

use crate::metrics;

/// An octocrab client for the REST API at `api_url`, without credentials (callers add a
/// token per call).
pub fn octocrab(api_url: &str) -> anyhow::Result<Octocrab> {
    let base: Uri = api_url
        .parse()
        .with_context(|| format!("GITHUB_API_URL: {api_url:?} is not a URL"))?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .context("loading the system's TLS roots")?
        .https_or_http()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector);
    let headers = vec![(USER_AGENT, HeaderValue::from_static("conveyor"))];
    let octocrab = OctocrabBuilder::new_empty()
        .with_service(client)
        .with_layer(&MeteredLayer {
            base_path: base.path().trim_end_matches('/').to_owned(),
        })
        .with_layer(&ExtraHeadersLayer::new(std::sync::Arc::new(headers)))
        .with_layer(&BaseUriLayer::new(base.clone()))
        .with_layer(&AuthHeaderLayer::new(None, base.clone(), base))
        .with_auth(AuthState::None)
        .build()
        .expect("building the client cannot fail");
    Ok(octocrab)
}

#[derive(Clone)]
struct MeteredLayer {
    /// The API base's path (`/api/v3` on GitHub Enterprise), not part of a route.
    base_path: String,
}

impl<S> Layer<S> for MeteredLayer {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Metered {
            inner,
            base_path: self.base_path.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Metered<S> {
    inner: S,
    base_path: String,
}

impl<S, B> Service<Request<OctoBody>> for Metered<S>
where
    S: Service<Request<OctoBody>, Response = Response<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<OctoBody>) -> Self::Future {
        let path = request.uri().path();
        let route = path.strip_prefix(&self.base_path).unwrap_or(path);
        let endpoint = endpoint(request.method().as_str(), route);
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            let status = match &response {
                Ok(response) => {
                    let headers = response.headers();
                    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
                    if let Some(remaining) = header("x-ratelimit-remaining")
                        .and_then(|remaining| remaining.parse::<f64>().ok())
                    {
                        metrics::github_rate_limit(
                            header("x-ratelimit-resource").unwrap_or("core"),
                            remaining,
                        );
                    }
                    Some(response.status().as_u16())
                }
                Err(_) => None,
            };
            metrics::github_request(endpoint, status, started.elapsed());
            response
        })
    }
}

/// The routes Conveyor calls, as GitHub's documentation names them but with `:name` for
/// `{name}`: braces in a label value trip up common exposition parsers.
const ROUTES: &[&str] = &[
    "POST /app/installations/:installation_id/access_tokens",
    "GET /app/hook/deliveries",
    "POST /app/hook/deliveries/:delivery_id/attempts",
    "POST /app-manifests/:code/conversions",
    "GET /repos/:owner/:repo/issues/:issue_number/comments",
    "POST /repos/:owner/:repo/issues/:issue_number/comments",
    "PATCH /repos/:owner/:repo/issues/comments/:comment_id",
    "POST /repos/:owner/:repo/issues/comments/:comment_id/reactions",
    "POST /repos/:owner/:repo/pulls/comments/:comment_id/reactions",
    "GET /repos/:owner/:repo/pulls",
    "POST /repos/:owner/:repo/pulls",
    "GET /repos/:owner/:repo/pulls/:pull_number",
    "POST /repos/:owner/:repo/check-runs",
    "PATCH /repos/:owner/:repo/check-runs/:check_run_id",
    "GET /repos/:owner/:repo/commits/:ref/check-runs",
    "GET /repos/:owner/:repo/collaborators/:username/permission",
    "GET /repos/:owner/:repo/git/ref/heads/:branch",
    "GET /repos/:owner/:repo/contents/:path",
    "GET /user",
];

/// Placeholders that, last in a route, take the rest of the path: file paths and branch
/// names hold slashes.
const REST_OF_PATH: &[&str] = &[":path", ":branch"];

/// The route template `path` was asked on with `method`, or `other`: never the path itself,
/// which holds owners, numbers and ids.
pub fn endpoint(method: &str, path: &str) -> &'static str {
    let asked: Vec<&str> = path.trim_matches('/').split('/').collect();
    ROUTES
        .iter()
        .find(|route| {
            let (route_method, template) = route.split_once(' ').expect("method and path");
            let template: Vec<&str> = template.trim_matches('/').split('/').collect();
            let placeholder = |segment: &str| segment.starts_with(':');
            let tail = template
                .last()
                .is_some_and(|last| REST_OF_PATH.contains(last));
            route_method == method
                && (asked.len() == template.len() || (tail && asked.len() > template.len()))
                && template
                    .iter()
                    .zip(&asked)
                    .all(|(expected, given)| placeholder(expected) || expected == given)
                && asked.iter().all(|segment| !segment.is_empty())
        })
        .copied()
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::endpoint;

    #[test]
    fn requests_are_named_by_their_route_template() {
        let cases = [
            (
                "POST",
                "/repos/o/r/check-runs",
                "POST /repos/:owner/:repo/check-runs",
            ),
            (
                "PATCH",
                "/repos/o/r/check-runs/99",
                "PATCH /repos/:owner/:repo/check-runs/:check_run_id",
            ),
            (
                "GET",
                "/repos/o/r/contents/docs/a b.md",
                "GET /repos/:owner/:repo/contents/:path",
            ),
            (
                "GET",
                "/repos/o/r/git/ref/heads/conveyor/12",
                "GET /repos/:owner/:repo/git/ref/heads/:branch",
            ),
            (
                "POST",
                "/app/installations/7/access_tokens",
                "POST /app/installations/:installation_id/access_tokens",
            ),
            ("GET", "/repos/o/r/check-runs", "other"),
            ("DELETE", "/repos/o/r/pulls", "other"),
            ("GET", "/repos/o/r/pulls/7/files", "other"),
            ("GET", "/repos/o//pulls", "other"),
        ];
        for (method, path, expected) in cases {
            assert_eq!(endpoint(method, path), expected, "{method} {path}");
        }
    }
}
