//! Request heads are limited to [`MAX_HEAD_BYTES`] and [`MAX_HEADERS`] header fields (both
//! in `crate::config`, so that the error table can name the limit too), and a
//! larger head gets the table's answer (431 `BASE-00021`), not actix-http's own (431 with an
//! empty body, and only past its 128 KiB buffer).
//!
//! actix-http parses request heads below the `App`, so no middleware sees an oversized one.
//! [`HeadGuard`] sits one level lower, around each accepted connection's socket: it follows
//! the bytes the client sends, request by request (a head up to its blank line, then the
//! body, framed by `Content-Length` or chunked transfer encoding, exactly as actix-http
//! frames it), and when a head grows past the limits it stops passing bytes on, tells
//! actix-http the client has finished sending, and writes the table's answer itself once
//! actix-http has sent whatever it still owed for earlier requests and closes the
//! connection. It stops watching, passing everything through unchanged, after a WebSocket
//! upgrade (or a `CONNECT`), and on anything it does not understand: actix-http refuses
//! those requests itself and closes the connection.

use crate::config::{MAX_HEAD_BYTES, MAX_HEADERS};
use crate::error::ApiError;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest line of chunked framing (a chunk-size line, with extensions) this guard follows.
const MAX_CHUNK_LINE: usize = 4096;

/// A connection's socket, watched for request heads that are too large.
pub struct HeadGuard<T> {
    io: T,
    watch: Watch,
    /// Set once a head is refused: reading answers end-of-stream from then on.
    refused: bool,
    /// The refusal still to be written before the connection is shut down, and how much of
    /// it has been.
    answer: Option<(Vec<u8>, usize)>,
}

impl<T> HeadGuard<T> {
    pub fn new(io: T) -> Self {
        Self {
            io,
            watch: Watch::default(),
            refused: false,
            answer: None,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for HeadGuard<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.refused {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        if let Err((at, error)) = this.watch.feed(&buf.filled()[before..]) {
            buf.set_filled(before + at);
            tracing::info!(status = 431, "request head refused: {}", error.description);
            this.refused = true;
            this.answer = Some((answer(&error), 0));
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HeadGuard<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    /// Writes a pending refusal first: actix-http shuts the connection down once it has
    /// answered every earlier request, so the refusal comes after those answers.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while let Some((bytes, written)) = &mut this.answer {
            if *written < bytes.len() {
                let n = ready!(Pin::new(&mut this.io).poll_write(cx, &bytes[*written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *written += n;
            } else {
                ready!(Pin::new(&mut this.io).poll_flush(cx))?;
                this.answer = None;
            }
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// The whole HTTP answer for a refused head: the table's body, and the connection closes.
fn answer(error: &ApiError) -> Vec<u8> {
    let body = serde_json::to_vec(&error.body()).unwrap_or_default();
    let status = error.code.status();
    let mut bytes = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\nx-request-id: {}\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
        uuid::Uuid::new_v4(),
    )
    .into_bytes();
    bytes.extend_from_slice(&body);
    bytes
}

/// Where the client is in its stream of requests.
#[derive(Debug)]
enum Phase {
    /// In a request head: the bytes so far, whether the request line has begun (blank lines
    /// before it are skipped, as actix-http does), where the current line starts, and how
    /// many header fields are complete.
    Head {
        buf: Vec<u8>,
        started: bool,
        line_start: usize,
        fields: usize,
    },
    /// In a body of known length: bytes left.
    Length(u64),
    /// In a chunked body.
    Chunked(Chunk),
    /// Not watching any more.
    Passthrough,
}

#[derive(Debug)]
enum Chunk {
    /// The chunk-size line so far.
    Size(Vec<u8>),
    /// Chunk data: bytes left.
    Data(u64),
    /// The CRLF after chunk data, so far.
    DataEnd(Vec<u8>),
    /// The trailer section after the last chunk: all of it so far, and where the current
    /// line starts.
    Trailers(Vec<u8>, usize),
}

impl Default for Phase {
    fn default() -> Self {
        Phase::Head {
            buf: Vec::new(),
            started: false,
            line_start: 0,
            fields: 0,
        }
    }
}

#[derive(Debug, Default)]
struct Watch {
    phase: Phase,
}

impl Watch {
    /// Follows `bytes`, the next bytes from the client. `Err((at, error))` when a head is
    /// too large: the bytes from `at` on must not reach the HTTP parser.
    fn feed(&mut self, bytes: &[u8]) -> Result<(), (usize, ApiError)> {
        let mut at = 0;
        while at < bytes.len() {
            let rest = &bytes[at..];
            let mut next = None;
            match &mut self.phase {
                Phase::Passthrough => return Ok(()),
                Phase::Length(left) => {
                    let n = (*left).min(rest.len() as u64);
                    *left -= n;
                    at += n as usize;
                    if *left == 0 {
                        self.phase = Phase::default();
                    }
                }
                Phase::Head {
                    buf,
                    started,
                    line_start,
                    fields,
                } => {
                    let at_line_start = buf.len() == *line_start;
                    if at_line_start && *fields == MAX_HEADERS && !matches!(rest[0], b'\r' | b'\n')
                    {
                        return Err((at, ApiError::too_many_headers(MAX_HEADERS)));
                    }
                    let newline = rest.iter().position(|&b| b == b'\n');
                    let take = newline.map_or(rest.len(), |p| p + 1);
                    let room = MAX_HEAD_BYTES - buf.len();
                    if take > room {
                        return Err((at + room, ApiError::headers_too_large(MAX_HEAD_BYTES)));
                    }
                    buf.extend_from_slice(&rest[..take]);
                    at += take;
                    if newline.is_none() {
                        continue;
                    }
                    let line = &buf[*line_start..];
                    let blank = line == b"\n" || line == b"\r\n";
                    *line_start = buf.len();
                    match (blank, *started) {
                        (true, false) => {}
                        (false, false) => *started = true,
                        (false, true) => *fields += 1,
                        (true, true) => next = Some(framing(buf)),
                    }
                }
                Phase::Chunked(chunk) => {
                    let (used, then) = chunk_step(chunk, rest);
                    at += used;
                    next = then;
                }
            }
            if let Some(phase) = next {
                self.phase = phase;
            }
        }
        Ok(())
    }
}

/// One step through a chunked body: how many bytes it used, and the next phase when the
/// body is over (or cannot be followed).
fn chunk_step(chunk: &mut Chunk, rest: &[u8]) -> (usize, Option<Phase>) {
    // A line of chunked framing: `Some((used, complete))`, or `None` when it is too long.
    fn line(buf: &mut Vec<u8>, rest: &[u8], max: usize) -> Option<(usize, bool)> {
        let newline = rest.iter().position(|&b| b == b'\n');
        let take = newline.map_or(rest.len(), |p| p + 1);
        if buf.len() + take > max {
            return None;
        }
        buf.extend_from_slice(&rest[..take]);
        Some((take, newline.is_some()))
    }
    match chunk {
        Chunk::Data(left) => {
            let n = (*left).min(rest.len() as u64);
            *left -= n;
            if *left == 0 {
                *chunk = Chunk::DataEnd(Vec::new());
            }
            (n as usize, None)
        }
        Chunk::Size(buf) => match line(buf, rest, MAX_CHUNK_LINE) {
            None => (rest.len(), Some(Phase::Passthrough)),
            Some((used, false)) => (used, None),
            Some((used, true)) => match chunk_size(buf) {
                None => (used, Some(Phase::Passthrough)),
                Some(0) => {
                    *chunk = Chunk::Trailers(Vec::new(), 0);
                    (used, None)
                }
                Some(size) => {
                    *chunk = Chunk::Data(size);
                    (used, None)
                }
            },
        },
        Chunk::DataEnd(buf) => match line(buf, rest, 2) {
            None => (rest.len(), Some(Phase::Passthrough)),
            Some((used, false)) => (used, None),
            Some((used, true)) if buf == b"\r\n" => {
                *chunk = Chunk::Size(Vec::new());
                (used, None)
            }
            Some((used, true)) => (used, Some(Phase::Passthrough)),
        },
        Chunk::Trailers(buf, line_start) => match line(buf, rest, MAX_HEAD_BYTES) {
            None => (rest.len(), Some(Phase::Passthrough)),
            Some((used, false)) => (used, None),
            Some((used, true)) => {
                let blank = &buf[*line_start..] == b"\r\n";
                *line_start = buf.len();
                (used, blank.then(Phase::default))
            }
        },
    }
}

/// The size of a chunk-size line (`1a;ext=1\r\n`), or `None` when actix-http would not
/// accept it.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r\n")?;
    let size = line.split(|&b| b == b';').next()?;
    let size = std::str::from_utf8(size)
        .ok()?
        .trim_end_matches([' ', '\t']);
    if size.is_empty() {
        return None;
    }
    u64::from_str_radix(size, 16).ok()
}

/// What follows a complete head, framed as actix-http frames it (`h1::decoder`): anything
/// it would refuse, or that is not HTTP any more (an upgrade), is passed through.
fn framing(head: &[u8]) -> Phase {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut fields);
    let Ok(httparse::Status::Complete(_)) = request.parse(head) else {
        return Phase::Passthrough;
    };
    let http11 = request.version == Some(1);
    let mut length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut chunked = false;
    let mut websocket = false;
    for field in request.headers.iter() {
        let Ok(value) = std::str::from_utf8(field.value).map(str::trim) else {
            return Phase::Passthrough;
        };
        if field.name.eq_ignore_ascii_case("content-length") {
            match value.parse::<u64>() {
                Ok(n) if length.is_none() && !value.starts_with('+') => length = Some(n),
                _ => return Phase::Passthrough,
            }
        } else if field.name.eq_ignore_ascii_case("transfer-encoding") {
            if transfer_encoding || !http11 {
                return Phase::Passthrough;
            }
            transfer_encoding = true;
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if field.name.eq_ignore_ascii_case("upgrade") {
            websocket |= value.eq_ignore_ascii_case("websocket");
        }
    }
    if transfer_encoding && (!chunked || length.is_some()) {
        return Phase::Passthrough;
    }
    if chunked {
        Phase::Chunked(Chunk::Size(Vec::new()))
    } else if websocket || request.method == Some("CONNECT") {
        Phase::Passthrough
    } else {
        match length {
            Some(n) if n > 0 => Phase::Length(n),
            _ => Phase::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;

    fn feed_all(watch: &mut Watch, bytes: &[u8]) -> Result<(), (usize, ApiError)> {
        watch.feed(bytes)
    }

    fn is_head_start(watch: &Watch) -> bool {
        matches!(&watch.phase, Phase::Head { buf, .. } if buf.is_empty())
    }

    #[test]
    fn pipelined_requests_with_bodies_are_followed() {
        let stream: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
            POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
            3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: t\r\n\r\n\
            GET /c HTTP/1.1\r\nHost: x\r\n\r\n";
        // Whole, and one byte at a time.
        let mut watch = Watch::default();
        feed_all(&mut watch, stream).unwrap();
        assert!(is_head_start(&watch), "{:?}", watch.phase);
        let mut watch = Watch::default();
        for b in stream {
            feed_all(&mut watch, std::slice::from_ref(b)).unwrap();
        }
        assert!(is_head_start(&watch), "{:?}", watch.phase);
    }

    #[test]
    fn a_body_that_looks_like_a_huge_head_is_a_body() {
        let mut watch = Watch::default();
        let head = format!(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            MAX_HEAD_BYTES * 2
        );
        feed_all(&mut watch, head.as_bytes()).unwrap();
        feed_all(&mut watch, &vec![b'a'; MAX_HEAD_BYTES * 2]).unwrap();
        assert!(is_head_start(&watch));
    }

    #[test]
    fn a_head_over_the_limit_is_refused_where_it_passes_it() {
        let mut watch = Watch::default();
        let mut head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: ".to_vec();
        head.resize(MAX_HEAD_BYTES + 10, b'a');
        let (at, error) = feed_all(&mut watch, &head).unwrap_err();
        assert_eq!(at, MAX_HEAD_BYTES);
        assert_eq!(error.code, Code::HeadersTooLarge);
    }

    #[test]
    fn a_head_of_exactly_the_limit_is_fine() {
        let mut watch = Watch::default();
        let start = b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: ";
        let mut head = start.to_vec();
        head.resize(MAX_HEAD_BYTES - 4, b'a');
        head.extend_from_slice(b"\r\n\r\n");
        assert_eq!(head.len(), MAX_HEAD_BYTES);
        feed_all(&mut watch, &head).unwrap();
        assert!(is_head_start(&watch));
    }

    #[test]
    fn too_many_fields_are_refused_at_the_first_extra_one() {
        let mut watch = Watch::default();
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            head.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        feed_all(&mut watch, &head).unwrap();
        let (at, error) = feed_all(&mut watch, b"x-extra: v\r\n\r\n").unwrap_err();
        assert_eq!(at, 0);
        assert_eq!(error.code, Code::HeadersTooLarge);
        // Exactly the maximum is fine.
        let mut watch = Watch::default();
        head.extend_from_slice(b"\r\n");
        feed_all(&mut watch, &head).unwrap();
        assert!(is_head_start(&watch));
    }

    #[test]
    fn upgrades_and_odd_framing_are_passed_through() {
        for head in [
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "CONNECT x:1 HTTP/1.1\r\nHost: x\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        ] {
            let mut watch = Watch::default();
            feed_all(&mut watch, head.as_bytes()).unwrap();
            assert!(matches!(watch.phase, Phase::Passthrough), "{head:?}");
            // After that, anything goes.
            feed_all(&mut watch, &vec![b'a'; MAX_HEAD_BYTES * 2]).unwrap();
        }
    }

    #[test]
    fn blank_lines_before_a_request_are_skipped() {
        let mut watch = Watch::default();
        feed_all(&mut watch, b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert!(is_head_start(&watch), "{:?}", watch.phase);
    }

    #[test]
    fn the_answer_is_the_tables() {
        let bytes = answer(&ApiError::headers_too_large(MAX_HEAD_BYTES));
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{text}"
        );
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["code"], "BASE-00021");
        assert_eq!(json["id"], "HEADERS_TOO_LARGE");
    }
}
