//! Sending a request again: [`Replayable`] keeps a copy of the head and records the body
//! *as the first try streams it*, so a retry can replay it.
//!
//! Linkerd's rule: bodies are recorded up to [`MAX_REPLAY_BYTES`]; a larger one is not
//! retried. A body whose known length already exceeds the limit is not wrapped at all. One
//! of unknown length streams to the first try frame by frame, never waiting for the whole
//! body; once it outgrows the limit the recording is dropped ("capped") while the first try
//! carries on, and no copy can be made after it.
//!
//! Only one copy reads the original body at a time. A copy that has read it to the end
//! leaves a complete recording behind, so any number of later copies replay from memory
//! even while the previous try's HTTP client still holds its copy. A copy dropped midway
//! hands the unread rest back for the next one. A copy can be made only when the next try
//! can be given the whole body: not capped, the original not failed, and the original not
//! half-read by a copy still held elsewhere (then [`Replayable::again`] says no rather than
//! send a truncated body).
//!
//! Which requests may be sent twice at all is [`is_retryable_request`]'s question; this
//! module only makes it possible.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Extensions, HeaderMap, HeaderName, Method, Request, Uri, Version, header};
use http_body::{Body, Frame, SizeHint};

use crate::body::{BoxError, ProxyBody, boxed, empty};
use crate::retry::{is_idempotent, is_known_empty};

/// The largest request body recorded for replay (Linkerd's limit).
pub(crate) const MAX_REPLAY_BYTES: usize = 64 * 1024;

/// `Idempotency-Key` (IETF httpapi draft): the client says that sending this request twice
/// has the effect of sending it once.
pub(crate) static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Whether sending `request` twice is harmless: an idempotent method (RFC 9110 §9.2.2),
/// or any method carrying `Idempotency-Key` — and not a protocol upgrade, whose exchange
/// becomes a tunnel that cannot be replayed.
pub(crate) fn is_retryable_request<B>(request: &Request<B>) -> bool {
    let headers = request.headers();
    (is_idempotent(request.method()) || headers.contains_key(&IDEMPOTENCY_KEY))
        && !headers.contains_key(header::UPGRADE)
}

/// Why a copy's body could not be produced.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplayError {
    /// The body outgrew [`MAX_REPLAY_BYTES`] and its recording was dropped.
    #[error("request body over {MAX_REPLAY_BYTES} bytes cannot be replayed")]
    Capped,
    /// Another copy is reading the original body (a copy was made while it was held).
    #[error("request body is being read by another try")]
    Busy,
    /// The original body failed, so no copy of it is complete.
    #[error("request body failed while it was read for an earlier try")]
    Failed,
}

/// A request's copy for retries (see the [module docs](self)).
#[derive(Debug)]
pub(crate) struct Replayable {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    extensions: Extensions,
    body: Source,
}

#[derive(Debug)]
enum Source {
    /// Known empty: every copy gets an empty body, nothing is recorded.
    Empty,
    Recorded(Arc<Shared>),
}

impl Replayable {
    /// Splits `request` into the request to send first and its [`Replayable`], or gives it
    /// back untouched (and `None`) when its body is known to exceed `max_bytes`.
    pub(crate) fn new(
        request: Request<ProxyBody>,
        max_bytes: usize,
    ) -> (Request<ProxyBody>, Option<Replayable>) {
        let hint = request.body().size_hint();
        if hint.lower() > u64::try_from(max_bytes).unwrap_or(u64::MAX) {
            return (request, None);
        }
        let (parts, body) = request.into_parts();
        let (first, source) = if is_known_empty(&body) {
            (body, Source::Empty)
        } else {
            let shared = Arc::new(Shared::new(body, hint, max_bytes));
            (
                boxed(ReplayBody::new(Arc::clone(&shared))),
                Source::Recorded(shared),
            )
        };
        let replayable = Replayable {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            extensions: parts.extensions.clone(),
            body: source,
        };
        (Request::from_parts(parts, first), Some(replayable))
    }

    /// The request again, if its whole body can be given to another try now.
    pub(crate) fn again(&self) -> Result<Request<ProxyBody>, ReplayError> {
        let body = match &self.body {
            Source::Empty => empty(),
            Source::Recorded(shared) => {
                shared.lock().replayable()?;
                boxed(ReplayBody::new(Arc::clone(shared)))
            }
        };
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        *request.extensions_mut() = self.extensions.clone();
        Ok(request)
    }
}

/// What every copy of one body shares.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// The original's size hint: the same bytes, so every copy's too (an exact length
    /// keeps h1's `content-length` framing).
    hint: SizeHint,
}

#[derive(Debug)]
struct State {
    /// The unread rest of the original; `None` while a copy reads it, or once it ended.
    rest: Option<ProxyBody>,
    /// Data read so far, in order (dropped when capped).
    chunks: Vec<Bytes>,
    recorded_bytes: usize,
    max_bytes: usize,
    trailers: Option<HeaderMap>,
    ended: bool,
    capped: bool,
    failed: bool,
}

impl Shared {
    fn new(body: ProxyBody, hint: SizeHint, max_bytes: usize) -> Self {
        let state = State {
            rest: Some(body),
            chunks: Vec::new(),
            recorded_bytes: 0,
            max_bytes,
            trailers: None,
            ended: false,
            capped: false,
            failed: false,
        };
        Shared {
            state: Mutex::new(state),
            hint,
        }
    }

    /// No lock is held across a poll of the original, so poisoning would need a panic in
    /// this file's own bookkeeping; the state stays consistent either way.
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Whether a new copy could replay the whole body.
    fn replayable(&self) -> Result<(), ReplayError> {
        if self.failed {
            Err(ReplayError::Failed)
        } else if self.capped {
            Err(ReplayError::Capped)
        } else if !self.ended && self.rest.is_none() {
            Err(ReplayError::Busy)
        } else {
            Ok(())
        }
    }

    /// Keeps a data frame for later copies, or stops recording for good past the limit.
    fn record(&mut self, data: &Bytes) {
        if self.capped {
            return;
        }
        self.recorded_bytes = self.recorded_bytes.saturating_add(data.len());
        if self.recorded_bytes > self.max_bytes {
            self.capped = true;
            self.chunks = Vec::new();
        } else {
            self.chunks.push(data.clone());
        }
    }
}

/// One copy of the body: replays what was recorded, then reads on from the original.
struct ReplayBody {
    shared: Arc<Shared>,
    /// The original, while this copy is the one reading it.
    rest: Option<ProxyBody>,
    /// Recorded chunks this copy has yielded.
    position: usize,
    trailers_sent: bool,
    /// Past the limit: this copy streams on without recording (or locking).
    recording: bool,
    done: bool,
}

impl ReplayBody {
    fn new(shared: Arc<Shared>) -> Self {
        ReplayBody {
            shared,
            rest: None,
            position: 0,
            trailers_sent: false,
            recording: true,
            done: false,
        }
    }

    /// The next frame from the recording, or takes over the original when caught up.
    fn replay_frame(&mut self) -> Option<Result<Frame<Bytes>, BoxError>> {
        let mut state = self.shared.lock();
        if let Some(chunk) = state.chunks.get(self.position) {
            self.position += 1;
            return Some(Ok(Frame::data(chunk.clone())));
        }
        if state.ended {
            self.done = true;
            return match (&state.trailers, self.trailers_sent) {
                (Some(trailers), false) => {
                    self.trailers_sent = true;
                    Some(Ok(Frame::trailers(trailers.clone())))
                }
                _ => None,
            };
        }
        if let Err(error) = state.replayable() {
            self.done = true;
            return Some(Err(error.into()));
        }
        self.rest = state.rest.take();
        None
    }

    /// Records what the original yielded, and notes its end for later copies.
    fn on_original(
        &mut self,
        polled: Option<Result<Frame<Bytes>, BoxError>>,
    ) -> Option<Result<Frame<Bytes>, BoxError>> {
        let finished = match &polled {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    if self.recording {
                        let mut state = self.shared.lock();
                        state.record(data);
                        self.recording = !state.capped;
                        self.position = state.chunks.len();
                    }
                    return polled;
                }
                // Trailers are the last frame.
                let mut state = self.shared.lock();
                state.trailers = frame.trailers_ref().cloned();
                state.ended = true;
                self.trailers_sent = true;
                self.rest.take()
            }
            Some(Err(_)) => {
                self.shared.lock().failed = true;
                self.done = true;
                self.rest.take()
            }
            None => {
                self.shared.lock().ended = true;
                self.done = true;
                self.rest.take()
            }
        };
        drop(finished);
        polled
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.rest.is_none()
            && let Some(frame) = this.replay_frame()
        {
            return Poll::Ready(Some(frame));
        }
        let Some(rest) = this.rest.as_mut() else {
            // The recording ended (and was fully replayed) while we looked.
            return Poll::Ready(None);
        };
        let polled = std::task::ready!(Pin::new(rest).poll_frame(cx));
        Poll::Ready(this.on_original(polled))
    }

    fn is_end_stream(&self) -> bool {
        // Exact for the copy reading the original; conservative for one replaying.
        self.done || self.rest.as_ref().is_some_and(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.shared.hint
    }
}

impl Drop for ReplayBody {
    fn drop(&mut self) {
        // A copy dropped midway hands the unread rest to the next one.
        if let Some(rest) = self.rest.take() {
            self.shared.lock().rest = Some(rest);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
