//! Request bodies get a deadline: a body that has not fully arrived within
//! `request_body_timeout_seconds` of its request's head is cut (408 `BASE-00019`), and a
//! shutdown cuts every body still arriving at once (503 `BASE-00020`), so a slow or stalled
//! upload can neither hold a connection forever nor make a graceful shutdown wait.
//!
//! [`deadline`] is a middleware on every resource that is not a WebSocket (a WebSocket's
//! "payload" is the socket itself, which lives as long as the session): it replaces the
//! request's payload with a stream that ends in an error at the deadline or at shutdown.
//! Whoever reads the body turns that error into the table's answer with [`payload_error`].
//! A request whose body was cut always has its connection closed after the answer: the
//! unread rest of the body is not drained, however it is framed.

use crate::error::ApiError;
use actix_web::body::{BodySize, BoxBody, EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{Error, HttpMessage};
use futures_util::StreamExt;
use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Why a body was cut; carried inside the payload's I/O error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// The deadline passed; holds the configured seconds, for the answer's text.
    Deadline(u64),
    /// The service is shutting down.
    Shutdown,
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cut::Deadline(s) => write!(f, "request body not received within {s} s"),
            Cut::Shutdown => f.write_str("request body cut by a shutdown"),
        }
    }
}

impl std::error::Error for Cut {}

/// A response body that holds the unread rest of a cut request body until the response has
/// been sent in full: while the request's payload is alive, actix-http closes the connection
/// after the response instead of draining the rest (which a trickling client could make
/// last forever, chunked bodies included).
pub struct HoldingUnread {
    body: BoxBody,
    _unread: Payload,
}

impl MessageBody for HoldingUnread {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }
}

/// Middleware body: puts a deadline of `seconds` (and `shutdown`) on the request's body.
/// `crate::api` wraps it with the service's setting and shutdown signal.
pub async fn deadline(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
    seconds: u64,
    shutdown: watch::Receiver<bool>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody, HoldingUnread>>, Error> {
    let cut_off: Rc<RefCell<Option<Payload>>> = Rc::default();
    let guarded = guard(
        req.take_payload(),
        Instant::now() + Duration::from_secs(seconds),
        seconds,
        shutdown,
        cut_off.clone(),
    );
    req.set_payload(guarded);
    let res = next.call(req).await?;
    let unread = cut_off.borrow_mut().take();
    Ok(match unread {
        None => res.map_into_left_body(),
        Some(unread) => res.map_body(|_, body| {
            EitherBody::right(HoldingUnread {
                body: BoxBody::new(body),
                _unread: unread,
            })
        }),
    })
}

/// The payload `inner`, which fails once `at` passes or `shutdown` turns true. On failure
/// the inner payload goes to `cut_off`.
fn guard(
    inner: Payload,
    at: Instant,
    seconds: u64,
    shutdown: watch::Receiver<bool>,
    cut_off: Rc<RefCell<Option<Payload>>>,
) -> Payload {
    struct State {
        inner: Option<Payload>,
        sleep: Pin<Box<tokio::time::Sleep>>,
        shutdown: watch::Receiver<bool>,
        cut_off: Rc<RefCell<Option<Payload>>>,
        seconds: u64,
    }
    let state = State {
        inner: Some(inner),
        sleep: Box::pin(tokio::time::sleep_until(at)),
        shutdown,
        cut_off,
        seconds,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        let mut inner = st.inner.take()?;
        let (receiver, sleep) = (&mut st.shutdown, &mut st.sleep);
        let shutdown = async move {
            // A dropped sender (the service is going away anyway) never cuts a body.
            if receiver.wait_for(|down| *down).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let cut = tokio::select! {
            biased;
            () = shutdown => Cut::Shutdown,
            () = sleep => Cut::Deadline(st.seconds),
            item = inner.next() => {
                let item: Result<Bytes, PayloadError> = item?;
                st.inner = Some(inner);
                return Some((item, st));
            }
        };
        *st.cut_off.borrow_mut() = Some(inner);
        let error = PayloadError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, cut));
        Some((Err(error), st))
    });
    Payload::Stream {
        payload: Box::pin(stream),
    }
}

/// The table's answer for a body that could not be read: 408 at the deadline, 503 at
/// shutdown, 413 when the HTTP layer found it too large, else the body is not valid JSON
/// (it broke off or its encoding is corrupt).
pub fn payload_error(error: &PayloadError) -> ApiError {
    let cut = match error {
        PayloadError::Io(e) => e.get_ref().and_then(|e| e.downcast_ref::<Cut>()),
        _ => None,
    };
    match (cut, error) {
        (Some(Cut::Deadline(seconds)), _) => ApiError::request_timeout(*seconds),
        (Some(Cut::Shutdown), _) => ApiError::service_unavailable(),
        (None, PayloadError::Overflow) => {
            ApiError::payload_too_large(crate::config::DEFAULT_BODY_LIMIT)
        }
        (None, _) => ApiError::invalid_json(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;

    /// A payload that never yields: a stalled upload.
    fn stalled() -> Payload {
        Payload::Stream {
            payload: Box::pin(futures_util::stream::pending()),
        }
    }

    #[actix_web::test]
    async fn a_stalled_body_is_cut_at_the_deadline_with_408() {
        let (_tx, rx) = watch::channel(false);
        let slot = Rc::default();
        let mut payload = guard(stalled(), Instant::now(), 7, rx, Rc::clone(&slot));
        let error = payload.next().await.unwrap().unwrap_err();
        let error = payload_error(&error);
        assert_eq!(error.code, Code::RequestTimeout);
        assert_eq!(error, ApiError::request_timeout(7));
        assert!(slot.borrow().is_some(), "the unread rest is kept");
        assert!(payload.next().await.is_none(), "nothing after the cut");
    }

    #[actix_web::test]
    async fn a_shutdown_cuts_a_stalled_body_with_503() {
        let (tx, rx) = watch::channel(false);
        let far = Instant::now() + Duration::from_secs(3600);
        let mut payload = guard(stalled(), far, 10, rx, Rc::default());
        tx.send(true).unwrap();
        let error = payload_error(&payload.next().await.unwrap().unwrap_err());
        assert_eq!(error.code, Code::ServiceUnavailable);
    }

    #[actix_web::test]
    async fn a_body_in_time_passes_unchanged() {
        let (_tx, rx) = watch::channel(false);
        let far = Instant::now() + Duration::from_secs(3600);
        let inner = Payload::from(Bytes::from_static(b"{}"));
        let slot: Rc<RefCell<Option<Payload>>> = Rc::default();
        let mut payload = guard(inner, far, 10, rx, slot.clone());
        assert_eq!(payload.next().await.unwrap().unwrap(), "{}");
        assert!(payload.next().await.is_none());
        assert!(slot.borrow().is_none());
    }

    #[test]
    fn other_payload_errors_keep_their_answers() {
        let broken = payload_error(&PayloadError::Incomplete(None));
        assert_eq!(broken.code, Code::InvalidJson);
        let overflow = payload_error(&PayloadError::Overflow);
        assert_eq!(overflow.code, Code::PayloadTooLarge);
    }
}
