//! What a WebSocket client can make the server hold before it has proved anything.
//!
//! - [`guard`] wraps the raw bytes of an upgraded connection before actix-ws sees them and
//!   reads the WebSocket frame headers as they pass. actix-ws buffers a whole frame before
//!   it compares the frame's length with its limit, so a header that claims 256 MB would
//!   make it buffer 256 MB; the guard fails the stream as soon as a header (or the running
//!   total of a fragmented message) is over the limit, before any of that payload is kept.
//!   The failure reaches the session as a read error that [`is_too_big`] recognises.
//! - [`PendingSockets`] caps the sockets that have not joined a room (signaling) or
//!   authenticated (admin stream) yet, overall and per peer address. A [`PendingSlot`] is
//!   held from the upgrade until the socket joins, authenticates or closes.

use crate::error::ApiError;
use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::web::Bytes;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::Stream;
use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// Largest payload of a control frame (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// Why the guard refused the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TooBig {
    /// One data frame declared more than the limit.
    Frame,
    /// The frames of one fragmented message add up to more than the limit.
    Message,
    /// A control frame declared more than 125 bytes.
    Control,
}

/// Reads WebSocket frame headers incrementally and checks every declared length.
#[derive(Debug)]
pub struct FrameLimit {
    max: u64,
    /// The header being read (at most 2 + 8 + 4 bytes) and how much of it has arrived.
    header: [u8; 14],
    have: usize,
    /// Payload bytes of the current frame still to pass.
    remaining: u64,
    /// Running total of the fragmented data message in progress, if any.
    message: Option<u64>,
}

impl FrameLimit {
    pub fn new(max: usize) -> Self {
        Self {
            max: max as u64,
            header: [0; 14],
            have: 0,
            remaining: 0,
            message: None,
        }
    }

    /// Takes the next bytes of the connection; fails at the first header over a limit.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), TooBig> {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let skip = self.remaining.min(bytes.len() as u64);
                self.remaining -= skip;
                bytes = &bytes[skip as usize..];
                continue;
            }
            // Copy header bytes one at a time until the header is complete: its length is
            // known once its first two bytes are.
            self.header[self.have] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            if self.have >= 2 && self.have == self.header_len() {
                self.header_done()?;
            }
        }
        Ok(())
    }

    fn header_len(&self) -> usize {
        let masked = self.header[1] & 0x80 != 0;
        let extended = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        2 + extended + if masked { 4 } else { 0 }
    }

    fn header_done(&mut self) -> Result<(), TooBig> {
        let h = &self.header;
        let fin = h[0] & 0x80 != 0;
        let opcode = h[0] & 0x0f;
        let length = match h[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
            127 => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
            n => u64::from(n),
        };
        self.have = 0;
        self.remaining = length;
        if opcode >= 8 {
            // Control frames may come between the fragments of a message.
            return if length > MAX_CONTROL_PAYLOAD {
                Err(TooBig::Control)
            } else {
                Ok(())
            };
        }
        if length > self.max {
            return Err(TooBig::Frame);
        }
        // A continuation adds to the message in progress; a new data frame starts one.
        // (A continuation without a first frame, or a data frame inside a message, is a
        // protocol error that actix-ws reports; the guard only counts bytes.)
        let total = match (opcode, self.message) {
            (0, Some(sum)) => sum.saturating_add(length),
            _ => length,
        };
        if total > self.max {
            return Err(TooBig::Message);
        }
        self.message = if fin { None } else { Some(total) };
        Ok(())
    }
}

/// The connection's bytes, checked by a [`FrameLimit`]; fails with
/// `PayloadError::Overflow` (then ends) at the first frame over the limit.
struct Guarded {
    inner: Payload,
    limit: FrameLimit,
    failed: bool,
}

impl Stream for Guarded {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(bytes))) => match this.limit.feed(&bytes) {
                Ok(()) => Poll::Ready(Some(Ok(bytes))),
                Err(_) => {
                    // Neither this chunk nor anything after it is handed on; the caller
                    // drops the connection's payload, so nothing more is read into memory.
                    this.failed = true;
                    Poll::Ready(Some(Err(PayloadError::Overflow)))
                }
            },
            other => other,
        }
    }
}

/// Wraps an upgrade request's payload so that no frame or fragmented message over `max`
/// bytes (nor a control frame over 125) is buffered: the stream fails at its header.
pub async fn guard(req: &HttpRequest, body: web::Payload, max: usize) -> web::Payload {
    let guarded: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> = Box::pin(Guarded {
        inner: body.into_inner(),
        limit: FrameLimit::new(max),
        failed: false,
    });
    let mut payload = Payload::from(guarded);
    web::Payload::from_request(req, &mut payload)
        .await
        .expect("taking a payload never fails")
}

/// Whether a read error of actix-ws means "over the size limit": one frame over it
/// (`Overflow`, from actix-ws's own check), a message in several frames whose sum is over
/// it (an I/O error with this text, from actix-ws's aggregation), or the [`guard`]'s
/// refusal (a payload `Overflow` that actix-ws wraps in an I/O error).
pub fn is_too_big(e: &actix_ws::ProtocolError) -> bool {
    use actix_ws::ProtocolError;
    match e {
        ProtocolError::Overflow => true,
        ProtocolError::Io(io) => {
            matches!(
                io.get_ref()
                    .and_then(|inner| inner.downcast_ref::<PayloadError>()),
                Some(PayloadError::Overflow)
            ) || (io.kind() == std::io::ErrorKind::Other
                && io.to_string() == "Exceeded maximum continuation size")
        }
        _ => false,
    }
}

/// Counts of the sockets that have not joined or authenticated yet.
#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// The cap on sockets that have not joined a room or authenticated yet: `max` in all,
/// `max_per_ip` from one peer address.
#[derive(Debug, Clone)]
pub struct PendingSockets {
    max: usize,
    max_per_ip: usize,
    counts: Arc<Mutex<Counts>>,
}

impl PendingSockets {
    pub fn new(max: usize, max_per_ip: usize) -> Self {
        Self {
            max,
            max_per_ip,
            counts: Arc::default(),
        }
    }

    /// A slot for one more pending socket from `ip`, or the error that refuses the upgrade.
    pub fn acquire(&self, ip: Option<IpAddr>) -> Result<PendingSlot, ApiError> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ip) = ip
            && counts.per_ip.get(&ip).copied().unwrap_or(0) >= self.max_per_ip
        {
            return Err(ApiError::too_many_connections(self.max_per_ip));
        }
        if counts.total >= self.max {
            return Err(ApiError::too_many_pending_connections());
        }
        counts.total += 1;
        if let Some(ip) = ip {
            *counts.per_ip.entry(ip).or_insert(0) += 1;
        }
        Ok(PendingSlot {
            counts: self.counts.clone(),
            ip,
        })
    }

    /// Pending sockets now: in all, and from `ip`.
    #[cfg(test)]
    pub fn count(&self, ip: Option<IpAddr>) -> (usize, usize) {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let from = ip.and_then(|ip| counts.per_ip.get(&ip).copied());
        (counts.total, from.unwrap_or(0))
    }
}

/// One pending socket's place under the cap; dropping it (at join, authentication or
/// close) frees the place.
#[derive(Debug)]
pub struct PendingSlot {
    counts: Arc<Mutex<Counts>>,
    ip: Option<IpAddr>,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(ip) = self.ip
            && let Some(n) = counts.per_ip.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame header (masked) with this first byte and payload length.
    fn header(first: u8, len: u64) -> Vec<u8> {
        let mut h = vec![first];
        if len < 126 {
            h.push(0x80 | len as u8);
        } else if len <= u64::from(u16::MAX) {
            h.push(0x80 | 126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            h.push(0x80 | 127);
            h.extend_from_slice(&len.to_be_bytes());
        }
        h.extend_from_slice(&[1, 2, 3, 4]);
        h
    }

    fn frame(first: u8, len: u64) -> Vec<u8> {
        let mut f = header(first, len);
        f.extend(std::iter::repeat_n(b'x', len as usize));
        f
    }

    const TEXT: u8 = 0x81;
    const TEXT_FIRST: u8 = 0x01;
    const CONT: u8 = 0x00;
    const CONT_LAST: u8 = 0x80;
    const PING: u8 = 0x89;

    /// Feeds `bytes` split at `at`: answers the first failure.
    fn feed_split(max: usize, bytes: &[u8], at: usize) -> Result<(), TooBig> {
        let mut limit = FrameLimit::new(max);
        limit.feed(&bytes[..at])?;
        limit.feed(&bytes[at..])
    }

    /// Every split of `bytes` into two chunks, and byte by byte, answers `expected`.
    fn assert_every_split(max: usize, bytes: &[u8], expected: Result<(), TooBig>) {
        for at in 0..=bytes.len() {
            assert_eq!(feed_split(max, bytes, at), expected, "split at {at}");
        }
        let mut limit = FrameLimit::new(max);
        let got = bytes.iter().try_for_each(|b| limit.feed(&[*b]));
        assert_eq!(got, expected, "byte by byte");
    }

    #[test]
    fn frames_up_to_the_limit_pass_with_7_16_and_64_bit_lengths() {
        for len in [0, 1, 125, 126, 127, 1000, 65535, 65536, 70000] {
            let mut bytes = frame(TEXT, len);
            bytes.extend(frame(PING, 4));
            bytes.extend(frame(TEXT, len.min(3)));
            assert_every_split(len as usize, &bytes, Ok(()));
        }
    }

    #[test]
    fn a_header_over_the_limit_fails_before_its_payload() {
        for (max, len) in [(100, 101), (125, 126), (65535, 65536), (1000, 256 << 20)] {
            // Only the header: the payload has not arrived and is never needed.
            assert_every_split(max, &header(TEXT, len), Err(TooBig::Frame));
        }
        // After good frames too, and whatever the 64-bit length says.
        let mut bytes = frame(TEXT, 10);
        bytes.extend(header(0x82, u64::MAX));
        assert_every_split(100, &bytes, Err(TooBig::Frame));
    }

    #[test]
    fn fragmented_messages_count_their_total() {
        // 40 + 40 + 20 = 100: exactly the limit, with a ping between the fragments.
        let mut ok = frame(TEXT_FIRST, 40);
        ok.extend(frame(CONT, 40));
        ok.extend(frame(PING, 0));
        ok.extend(frame(CONT_LAST, 20));
        // Then a new message starts from zero.
        ok.extend(frame(TEXT_FIRST, 60));
        ok.extend(frame(CONT_LAST, 40));
        assert_every_split(100, &ok, Ok(()));

        let mut over = frame(TEXT_FIRST, 40);
        over.extend(frame(CONT, 40));
        over.extend(header(CONT_LAST, 21));
        assert_every_split(100, &over, Err(TooBig::Message));
        // A continuation's header alone decides, before its payload.
        let mut over = frame(TEXT_FIRST, 90);
        over.extend(header(CONT, 1 << 40));
        assert_every_split(100, &over, Err(TooBig::Frame));
    }

    #[test]
    fn control_frames_over_125_bytes_fail() {
        assert_every_split(1 << 20, &frame(PING, 125), Ok(()));
        assert_every_split(1 << 20, &header(PING, 126), Err(TooBig::Control));
        assert_every_split(1 << 20, &header(0x88, 1 << 30), Err(TooBig::Control));
    }

    #[test]
    fn the_guards_refusal_is_too_big_and_other_errors_are_not() {
        use actix_ws::ProtocolError;
        let wrapped = |e: PayloadError| ProtocolError::Io(std::io::Error::other(e));
        assert!(is_too_big(&ProtocolError::Overflow));
        assert!(is_too_big(&wrapped(PayloadError::Overflow)));
        assert!(is_too_big(&ProtocolError::Io(std::io::Error::other(
            "Exceeded maximum continuation size"
        ))));
        assert!(!is_too_big(&wrapped(PayloadError::EncodingCorrupted)));
        assert!(!is_too_big(&ProtocolError::Io(std::io::Error::other(
            "reset"
        ))));
        assert!(!is_too_big(&ProtocolError::UnmaskedFrame));
    }

    #[test]
    fn pending_slots_are_capped_overall_and_per_address_and_freed_on_drop() {
        let pending = PendingSockets::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = pending.acquire(Some(a)).unwrap();
        let _a2 = pending.acquire(Some(a)).unwrap();
        let refused = pending.acquire(Some(a)).unwrap_err();
        assert_eq!(refused.code, crate::error::Code::TooManyConnections);
        let _b1 = pending.acquire(Some(b)).unwrap();
        let refused = pending.acquire(Some(b)).unwrap_err();
        assert_eq!(refused.code, crate::error::Code::TooManyPendingConnections);
        assert_eq!(pending.count(Some(a)), (3, 2));
        drop(a1);
        assert_eq!(pending.count(Some(a)), (2, 1));
        let _a3 = pending.acquire(Some(a)).unwrap();
        assert_eq!(pending.count(Some(b)), (3, 1));
    }
}
