//! Webhook bodies held in memory, bounded. Each body being buffered takes its size from one
//! budget of bytes shared by every request, and must arrive before a deadline, so a flood of
//! large or slow posts costs a bounded amount of memory instead of the process.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{MAX_WEBHOOK_BYTES, Refusal};

/// What a request refused for lack of budget is told: bodies in flight are answered within
/// milliseconds once they have arrived.
const RETRY_AFTER: HeaderValue = HeaderValue::from_static("1");

#[derive(Clone)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    timeout: Duration,
}

/// A buffered body with its share of the budget, given back when this is dropped: after the
/// request is answered, since the body stays in memory until its delivery is stored.
pub struct Buffered {
    pub bytes: Bytes,
    _share: OwnedSemaphorePermit,
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("body larger than GitHub's 25 MB cap")]
    TooLarge,
    #[error("too many webhook bodies are being received; retry shortly")]
    OverBudget,
    #[error("body not received within {} s", .0.as_secs())]
    TimedOut(Duration),
    #[error("reading the body failed: {0}")]
    Read(axum::Error),
}

impl IntoResponse for BodyError {
    fn into_response(self) -> Response {
        let status = match self {
            BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::OverBudget => StatusCode::SERVICE_UNAVAILABLE,
            BodyError::TimedOut(_) => StatusCode::REQUEST_TIMEOUT,
            BodyError::Read(_) => StatusCode::BAD_REQUEST,
        };
        let over_budget = matches!(self, BodyError::OverBudget);
        let mut response = Refusal(status, self.to_string()).into_response();
        if over_budget {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, RETRY_AFTER);
        }
        response
    }
}

impl BodyBudget {
    pub fn new(megabytes: u32, timeout: Duration) -> Self {
        let bytes = (megabytes as usize)
            .saturating_mul(1 << 20)
            .min(Semaphore::MAX_PERMITS);
        Self {
            bytes: Arc::new(Semaphore::new(bytes)),
            timeout,
        }
    }

    pub async fn buffer(&self, body: Body) -> Result<Buffered, BodyError> {
        tokio::time::timeout(self.timeout, self.read(body))
            .await
            .map_err(|_| BodyError::TimedOut(self.timeout))?
    }

    async fn read(&self, mut body: Body) -> Result<Buffered, BodyError> {
        // With a Content-Length the whole share is taken before any byte is read, so a body
        // that cannot fit costs nothing; without one it is taken chunk by chunk.
        let declared = body.size_hint().exact();
        let declared = match declared.map(usize::try_from) {
            Some(Ok(len)) if len <= MAX_WEBHOOK_BYTES => len,
            Some(_) => return Err(BodyError::TooLarge),
            None => 0,
        };
        let mut share = self.take(declared)?;
        let mut chunks = Chunks::default();
        while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            let Ok(chunk) = frame.map_err(BodyError::Read)?.into_data() else {
                continue;
            };
            let total = chunks.len() + chunk.len();
            if total > MAX_WEBHOOK_BYTES {
                return Err(BodyError::TooLarge);
            }
            if total > share.num_permits() {
                share.merge(self.take(total - share.num_permits())?);
            }
            chunks.push(chunk, declared);
        }
        Ok(Buffered {
            bytes: chunks.into_bytes(),
            _share: share,
        })
    }

    fn take(&self, bytes: usize) -> Result<OwnedSemaphorePermit, BodyError> {
        let bytes = u32::try_from(bytes).map_err(|_| BodyError::TooLarge)?;
        self.bytes
            .clone()
            .try_acquire_many_owned(bytes)
            .map_err(|_| BodyError::OverBudget)
    }
}

/// The body so far. A body that arrives in one chunk (most webhooks) is kept as it is;
/// others are copied once into one buffer, sized up front when the length is known.
#[derive(Default)]
enum Chunks {
    #[default]
    None,
    One(Bytes),
    Joined(BytesMut),
}

impl Chunks {
    fn len(&self) -> usize {
        match self {
            Chunks::None => 0,
            Chunks::One(bytes) => bytes.len(),
            Chunks::Joined(bytes) => bytes.len(),
        }
    }

    fn push(&mut self, chunk: Bytes, declared: usize) {
        *self = match std::mem::take(self) {
            Chunks::None => Chunks::One(chunk),
            Chunks::One(first) => {
                let mut joined = BytesMut::with_capacity(declared.max(first.len() + chunk.len()));
                joined.extend_from_slice(&first);
                joined.extend_from_slice(&chunk);
                Chunks::Joined(joined)
            }
            Chunks::Joined(mut joined) => {
                joined.extend_from_slice(&chunk);
                Chunks::Joined(joined)
            }
        };
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Chunks::None => Bytes::new(),
            Chunks::One(bytes) => bytes,
            Chunks::Joined(bytes) => bytes.freeze(),
        }
    }
}
