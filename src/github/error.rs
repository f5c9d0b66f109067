//! GitHub failures, classified so callers can branch on them.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    #[error("{call}: not found")]
    NotFound { call: &'static str },
    #[error("{call}: validation failed: {message}")]
    Unprocessable { call: &'static str, message: String },
    #[error("{call}: credentials refused")]
    Unauthorized { call: &'static str },
    #[error("{call}: rate limited")]
    RateLimited {
        call: &'static str,
        retry_after: Option<Duration>,
    },
    #[error("{call}: GitHub answered {status}: {message}")]
    Status {
        call: &'static str,
        status: u16,
        message: String,
    },
    #[error("{call}: {message}")]
    Transport { call: &'static str, message: String },
}

impl GitHubError {
    /// Whether the same call may succeed if made again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::RateLimited { .. } | Self::Transport { .. } => true,
            Self::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }

    pub(crate) fn classify(call: &'static str, err: octocrab::Error) -> Self {
        let octocrab::Error::GitHub { source, .. } = err else {
            return Self::Transport {
                call,
                message: transport_message(&err),
            };
        };
        let status = source.status_code.as_u16();
        let header = |name: &str| {
            source
                .headers
                .as_ref()
                .and_then(|h| h.get(name))
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let rate_limited = status == 429
            || (status == 403
                && (header("x-ratelimit-remaining").as_deref() == Some("0")
                    || header("retry-after").is_some()
                    || source.message.to_lowercase().contains("rate limit")));
        match status {
            _ if rate_limited => Self::RateLimited {
                call,
                retry_after: header("retry-after")
                    .and_then(|v| v.parse().ok())
                    .map(Duration::from_secs),
            },
            401 => Self::Unauthorized { call },
            404 => Self::NotFound { call },
            422 => Self::Unprocessable {
                call,
                message: validation_message(&source),
            },
            _ => Self::Status {
                call,
                status,
                message: source.message.clone(),
            },
        }
    }
}

/// GitHub puts the useful part of a 422 in `errors[].message` (or code/field).
fn validation_message(err: &octocrab::GitHubError) -> String {
    let details: Vec<String> = err
        .errors
        .iter()
        .flatten()
        .map(|e| match e.get("message").and_then(|m| m.as_str()) {
            Some(message) => message.to_owned(),
            None => format!(
                "{} {}",
                e.get("field").and_then(|f| f.as_str()).unwrap_or("request"),
                e.get("code").and_then(|c| c.as_str()).unwrap_or("invalid")
            ),
        })
        .collect();
    if details.is_empty() {
        err.message.clone()
    } else {
        format!("{} ({})", err.message, details.join("; "))
    }
}

/// octocrab's Display for transport errors includes a backtrace; keep the first line.
fn transport_message(err: &octocrab::Error) -> String {
    err.to_string()
        .lines()
        .next()
        .unwrap_or("transport error")
        .to_owned()
}
