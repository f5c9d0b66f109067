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
    #[error("{call}: rate limited for {}s", wait.as_secs())]
    RateLimited { call: &'static str, wait: Duration },
    #[error("{call}: GitHub answered {status}: {message}")]
    Status {
        call: &'static str,
        status: u16,
        message: String,
    },
    #[error("{call}: {message}")]
    Transport { call: &'static str, message: String },
    /// The path names something other than a file (a directory, a submodule).
    #[error("{call}: {path} is a {kind}, not a file")]
    NotAFile {
        call: &'static str,
        path: String,
        kind: String,
    },
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

    /// How long GitHub asked callers to wait before trying again, when it said so (a rate
    /// limit, from `retry-after` or `x-ratelimit-reset`). A caller that keeps the work for
    /// later reschedules it no sooner than this.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { wait, .. } => Some(*wait),
            _ => None,
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
                wait: rate_limit_wait(
                    header("retry-after").as_deref(),
                    header("x-ratelimit-remaining").as_deref(),
                    header("x-ratelimit-reset").as_deref(),
                    chrono::Utc::now().timestamp(),
                ),
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

/// How long GitHub asks us to wait: `retry-after`, else until `x-ratelimit-reset` when the
/// quota is spent, else a minute (GitHub's advice for secondary limits without headers).
fn rate_limit_wait(
    retry_after: Option<&str>,
    remaining: Option<&str>,
    reset: Option<&str>,
    now: i64,
) -> Duration {
    const SECONDARY_LIMIT_WAIT: Duration = Duration::from_secs(60);
    if let Some(secs) = retry_after.and_then(|v| v.trim().parse::<u64>().ok()) {
        return Duration::from_secs(secs);
    }
    match (remaining, reset.and_then(|v| v.trim().parse::<i64>().ok())) {
        (Some("0"), Some(reset)) => Duration::from_secs((reset - now).max(0) as u64 + 1),
        _ => SECONDARY_LIMIT_WAIT,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_rate_limit_says_when_to_come_back() {
        let limited = GitHubError::RateLimited {
            call: "x",
            wait: Duration::from_secs(7),
        };
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(7)));
        let outage = GitHubError::Status {
            call: "x",
            status: 502,
            message: "Bad Gateway".to_owned(),
        };
        assert!(outage.is_retryable());
        assert_eq!(outage.retry_after(), None);
    }

    #[test]
    fn rate_limit_waits_follow_githubs_headers() {
        assert_eq!(
            rate_limit_wait(Some("7"), Some("0"), Some("9999"), 0),
            Duration::from_secs(7)
        );
        assert_eq!(
            rate_limit_wait(None, Some("0"), Some("1010"), 1000),
            Duration::from_secs(11)
        );
        assert_eq!(
            rate_limit_wait(None, Some("0"), Some("900"), 1000),
            Duration::from_secs(1)
        );
        assert_eq!(
            rate_limit_wait(None, Some("12"), Some("1010"), 1000),
            Duration::from_secs(60)
        );
        assert_eq!(
            rate_limit_wait(None, None, None, 1000),
            Duration::from_secs(60)
        );
    }
}
