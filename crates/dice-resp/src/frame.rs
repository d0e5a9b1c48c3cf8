//! RESP on the wire, sans-IO: requests in ([`RequestParser`]), replies out (the `write_*`
//! encoders, RESP2 and RESP3: see [`Protocol`]).
//!
//! A request is what Redis accepts from a client: an array of bulk strings
//! (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`, what every client library sends), or an inline command
//! (`GET k\r\n`, what telnet and some `redis-cli` modes send), split on blanks with Redis's
//! quoting rules. The parser works on a byte buffer that starts at the first byte of the
//! pending request: it answers [`Parse::Incomplete`] when more bytes are needed, a
//! [`Request`] borrowing its arguments from the buffer when one is complete, or a
//! [`FrameError`] when the client broke the protocol (the connection replies with the error
//! and closes, like Redis).
//!
//! Every input is bounded ([`FrameLimits`]): a header announcing more than the bound is
//! refused as soon as the header is read, before anything is buffered for it.
//!
//! ```
//! use dice_resp::frame::{FrameLimits, Parse, RequestParser};
//! let mut parser = RequestParser::new(FrameLimits::default());
//! let input = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n";
//! let Ok(Parse::Request { request, consumed }) = parser.parse(input) else { panic!() };
//! assert_eq!(request.args().collect::<Vec<_>>(), [&b"GET"[..], b"k"]);
//! assert_eq!(consumed, 20);
//! let Ok(Parse::Request { request, .. }) = parser.parse(&input[20..]) else { panic!() };
//! assert_eq!(request.arg(0), b"PING");
//! assert!(matches!(parser.parse(b"*2\r\n$3\r\nGE"), Ok(Parse::Incomplete)));
//! ```

use std::ops::Range;

/// Bounds on what one request may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FrameLimits {
    /// Largest bulk string (default: the default cache value limit plus 4 KiB).
    pub max_bulk_len: usize,
    /// Most arguments in one request (default 1024 * 1024, like Redis).
    pub max_args: usize,
    /// Longest inline command line, and longest header line (default 64 KiB, like Redis).
    pub max_inline_len: usize,
    /// Most bytes buffered for one request before it completes (default 128 MiB).
    pub max_request_len: usize,
}

dice_core::__option_setters!(FrameLimits {
    with_max_bulk_len => max_bulk_len: usize,
    with_max_args => max_args: usize,
    with_max_inline_len => max_inline_len: usize,
    with_max_request_len => max_request_len: usize,
});

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits::for_cache(&dice_core::Limits::default())
    }
}

impl FrameLimits {
    /// The limits that fit a cache's key and value limits: a bulk string may hold the largest
    /// value or key plus 4 KiB (so that a value just past the limit gets the cache's clear
    /// error rather than a protocol error).
    pub fn for_cache(limits: &dice_core::Limits) -> Self {
        FrameLimits {
            max_bulk_len: limits.max_value_len.max(limits.max_key_len) + 4096,
            max_args: 1024 * 1024,
            max_inline_len: 64 * 1024,
            max_request_len: 128 * 1024 * 1024,
        }
    }
}

/// Most arguments a client that has not authenticated yet may send in one request (Redis's
/// bound too): enough for `AUTH` and `HELLO`, too few to make the server buffer much.
pub const UNAUTHENTICATED_MAX_ARGS: usize = 10;
/// Largest bulk string a client that has not authenticated yet may send (Redis's bound too).
pub const UNAUTHENTICATED_MAX_BULK_LEN: usize = 16 * 1024;

/// A protocol violation. The text is Redis's, so clients show what they would show with
/// Redis; the connection answers `-ERR <text>` and closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// `*` not followed by a valid count, or a count past [`FrameLimits::max_args`].
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// `$` not followed by a valid length, or a length past [`FrameLimits::max_bulk_len`].
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// More than [`UNAUTHENTICATED_MAX_ARGS`] arguments before authentication.
    #[error("Protocol error: unauthenticated multibulk length")]
    UnauthenticatedMultibulkLength,
    /// A bulk past [`UNAUTHENTICATED_MAX_BULK_LEN`] before authentication.
    #[error("Protocol error: unauthenticated bulk length")]
    UnauthenticatedBulkLength,
    /// An array element that is not a bulk string.
    #[error("Protocol error: expected '$', got '{0}'")]
    ExpectedBulk(char),
    /// A `*` header line longer than [`FrameLimits::max_inline_len`].
    #[error("Protocol error: too big mbulk count string")]
    TooBigMultibulkCount,
    /// A `$` header line longer than [`FrameLimits::max_inline_len`].
    #[error("Protocol error: too big bulk count string")]
    TooBigBulkCount,
    /// An inline command longer than [`FrameLimits::max_inline_len`].
    #[error("Protocol error: too big inline request")]
    TooBigInline,
    /// An inline command with an unterminated quote, or a closing quote followed by
    /// something other than a blank.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// A bulk string whose announced length is not followed by `\r\n`.
    #[error("Protocol error: bulk string not terminated by CRLF")]
    MissingCrlf,
    /// A request larger than [`FrameLimits::max_request_len`].
    #[error("Protocol error: request of {len} bytes or more exceeds the limit of {max} bytes")]
    RequestTooLarge {
        /// The announced or buffered size.
        len: usize,
        /// The bound.
        max: usize,
    },
}

/// What [`RequestParser::parse`] found.
#[derive(Debug)]
pub enum Parse<'a> {
    /// The buffer holds only part of a request: read more, then call again with the same
    /// buffer start.
    Incomplete,
    /// A complete request. It may have no arguments (an empty inline line, `*0`), which
    /// Redis ignores without a reply.
    Request {
        /// The request.
        request: Request<'a>,
        /// How many bytes of the buffer it took.
        consumed: usize,
    },
}

/// One request's arguments, borrowed from the input buffer (or, for an inline command, from
/// the parser's own unquoted copy).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    data: &'a [u8],
    spans: &'a [Range<usize>],
}

impl<'a> Request<'a> {
    /// A request whose arguments are the `spans` of `data` (each within it, or [`arg`]
    /// panics): how a queued `MULTI` command is read back.
    ///
    /// [`arg`]: Request::arg
    pub fn new(data: &'a [u8], spans: &'a [Range<usize>]) -> Self {
        Request { data, spans }
    }

    /// Number of arguments, the command name included.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are no arguments at all.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Argument `i`; panics if `i >= len()`.
    pub fn arg(&self, i: usize) -> &'a [u8] {
        &self.data[self.spans[i].clone()]
    }

    /// Argument `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<&'a [u8]> {
        self.spans.get(i).map(|r| &self.data[r.clone()])
    }

    /// The arguments in order.
    pub fn args(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + 'a {
        let data = self.data;
        self.spans.iter().map(move |r| &data[r.clone()])
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Nothing of the pending request parsed yet.
    Start,
    /// Inside an array: `remaining` bulks still to come, the next one at `pos`.
    Multibulk { remaining: usize, pos: usize },
    /// Inside an inline line: no `\n` in the first `scanned` bytes.
    Inline { scanned: usize },
}

/// The request parser. It keeps what it learned about a pending incomplete request, so a
/// request arriving in many reads is not parsed again from its start each time; the caller
/// must pass the buffer starting at the same request until it completes.
#[derive(Debug)]
pub struct RequestParser {
    limits: FrameLimits,
    unauthenticated: bool,
    state: State,
    /// The bytes a pending request needs at least, when known.
    needed: usize,
    spans: Vec<Range<usize>>,
    inline: Vec<u8>,
}

impl RequestParser {
    /// A parser with these limits.
    pub fn new(limits: FrameLimits) -> Self {
        RequestParser {
            limits,
            unauthenticated: false,
            state: State::Start,
            needed: 0,
            spans: Vec::new(),
            inline: Vec::new(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> FrameLimits {
        self.limits
    }

    /// Applies (or lifts) the tighter bounds for a client that has not authenticated:
    /// [`UNAUTHENTICATED_MAX_ARGS`] and [`UNAUTHENTICATED_MAX_BULK_LEN`].
    pub fn set_unauthenticated(&mut self, on: bool) {
        self.unauthenticated = on;
    }

    /// The size the buffer must reach before the pending request can complete, when a header
    /// told it (0 if unknown): lets the caller reserve room once for a large value.
    pub fn needed(&self) -> usize {
        self.needed
    }

    /// Parses the request at the start of `buf`. After [`Parse::Incomplete`], call again with
    /// a buffer holding the same bytes and more. After an error the parser is reset, but the
    /// stream is out of step and should be closed.
    pub fn parse<'a>(&'a mut self, buf: &'a [u8]) -> Result<Parse<'a>, FrameError> {
        let result = self.parse_inner(buf);
        match &result {
            Ok(Some(_)) | Err(_) => {
                self.state = State::Start;
                self.needed = 0;
            }
            Ok(None) => {
                if buf.len() > self.limits.max_request_len {
                    self.state = State::Start;
                    self.needed = 0;
                    return Err(FrameError::RequestTooLarge {
                        len: buf.len(),
                        max: self.limits.max_request_len,
                    });
                }
            }
        }
        Ok(match result? {
            None => Parse::Incomplete,
            Some((consumed, inline)) => Parse::Request {
                request: Request {
                    data: if inline { &self.inline } else { buf },
                    spans: &self.spans,
                },
                consumed,
            },
        })
    }

    /// `Some((consumed, is_inline))` when a request is complete, `None` when incomplete.
    fn parse_inner(&mut self, buf: &[u8]) -> Result<Option<(usize, bool)>, FrameError> {
        let (remaining, pos) = match self.state {
            State::Start => {
                let Some(&first) = buf.first() else {
                    return Ok(None);
                };
                if first != b'*' {
                    self.state = State::Inline { scanned: 0 };
                    return self.parse_inline(buf);
                }
                let Some((text, next)) = header_line(
                    buf,
                    1,
                    self.limits.max_inline_len,
                    FrameError::TooBigMultibulkCount,
                )?
                else {
                    return Ok(None);
                };
                let count = parse_i64(text).ok_or(FrameError::InvalidMultibulkLength)?;
                if count < 0 || count as u64 > self.limits.max_args as u64 {
                    return Err(FrameError::InvalidMultibulkLength);
                }
                let count = count as usize;
                if self.unauthenticated && count > UNAUTHENTICATED_MAX_ARGS {
                    return Err(FrameError::UnauthenticatedMultibulkLength);
                }
                self.spans.clear();
                // Bounded up front: a header alone never makes us allocate much.
                self.spans.reserve(count.min(1024));
                (count, next)
            }
            State::Multibulk { remaining, pos } => (remaining, pos),
            State::Inline { .. } => return self.parse_inline(buf),
        };
        self.parse_bulks(buf, remaining, pos)
    }

    fn parse_bulks(
        &mut self,
        buf: &[u8],
        mut remaining: usize,
        mut pos: usize,
    ) -> Result<Option<(usize, bool)>, FrameError> {
        let max_bulk = if self.unauthenticated {
            self.limits.max_bulk_len.min(UNAUTHENTICATED_MAX_BULK_LEN)
        } else {
            self.limits.max_bulk_len
        };
        while remaining > 0 {
            self.state = State::Multibulk { remaining, pos };
            let Some(&first) = buf.get(pos) else {
                return Ok(None);
            };
            if first != b'$' {
                let shown = if first.is_ascii_graphic() || first == b' ' {
                    first as char
                } else {
                    '?'
                };
                return Err(FrameError::ExpectedBulk(shown));
            }
            let Some((text, start)) = header_line(
                buf,
                pos + 1,
                self.limits.max_inline_len,
                FrameError::TooBigBulkCount,
            )?
            else {
                return Ok(None);
            };
            let len = parse_i64(text).ok_or(FrameError::InvalidBulkLength)?;
            if len < 0 || len as u64 > self.limits.max_bulk_len as u64 {
                return Err(FrameError::InvalidBulkLength);
            }
            let len = len as usize;
            if len > max_bulk {
                return Err(FrameError::UnauthenticatedBulkLength);
            }
            let end = start + len;
            if end + 2 > self.limits.max_request_len {
                return Err(FrameError::RequestTooLarge {
                    len: end + 2,
                    max: self.limits.max_request_len,
                });
            }
            if buf.len() < end + 2 {
                self.needed = end + 2;
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(FrameError::MissingCrlf);
            }
            self.spans.push(start..end);
            pos = end + 2;
            remaining -= 1;
        }
        Ok(Some((pos, false)))
    }

    fn parse_inline(&mut self, buf: &[u8]) -> Result<Option<(usize, bool)>, FrameError> {
        let State::Inline { scanned } = self.state else {
            unreachable!("parse_inline outside of an inline request")
        };
        let max = self.limits.max_inline_len;
        let lo = scanned.min(buf.len());
        let window = &buf[lo..buf.len().min(max + 2).max(lo)];
        let Some(nl) = window.iter().position(|&b| b == b'\n').map(|i| i + lo) else {
            if buf.len() > max {
                return Err(FrameError::TooBigInline);
            }
            self.state = State::Inline { scanned: buf.len() };
            return Ok(None);
        };
        let line_end = if nl > 0 && buf[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        if line_end > max {
            return Err(FrameError::TooBigInline);
        }
        split_args(&buf[..line_end], &mut self.inline, &mut self.spans)?;
        Ok(Some((nl + 1, true)))
    }
}

/// The header line starting at `from` (after the type byte): its text and where the next
/// element starts. `None` if the line is not complete yet.
fn header_line(
    buf: &[u8],
    from: usize,
    max: usize,
    too_big: FrameError,
) -> Result<Option<(&[u8], usize)>, FrameError> {
    let window = &buf[from.min(buf.len())..buf.len().min(from + max + 1)];
    match window.iter().position(|&b| b == b'\r') {
        Some(i) => {
            let cr = from + i;
            // Like Redis, the byte after '\r' is taken as the '\n'.
            if cr + 1 >= buf.len() {
                return Ok(None);
            }
            Ok(Some((&buf[from..cr], cr + 2)))
        }
        None if buf.len().saturating_sub(from) > max => Err(too_big),
        None => Ok(None),
    }
}

/// Parses a decimal `i64` the way Redis's `string2ll` does: an optional `-`, digits, no `+`,
/// no blanks, no leading zeros (`0` itself aside), no `-0`.
///
/// ```
/// use dice_resp::frame::parse_i64;
/// assert_eq!(parse_i64(b"-42"), Some(-42));
/// assert_eq!(parse_i64(b"0"), Some(0));
/// assert_eq!(parse_i64(b"007"), None);
/// assert_eq!(parse_i64(b"+1"), None);
/// assert_eq!(parse_i64(b"9223372036854775808"), None);
/// ```
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s[0] {
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        if v > i64::MAX as u64 + 1 {
            return None;
        }
        Some((v as i64).wrapping_neg())
    } else {
        i64::try_from(v).ok()
    }
}

fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Splits an inline line into arguments like Redis's `sdssplitargs`: blanks separate,
/// `"..."` takes `\n \r \t \b \a \\ \" \xHH` escapes, `'...'` takes `\'`; a closing quote
/// must be followed by a blank or the end. A NUL byte ends the line, as in Redis.
fn split_args(
    line: &[u8],
    out: &mut Vec<u8>,
    spans: &mut Vec<Range<usize>>,
) -> Result<(), FrameError> {
    out.clear();
    spans.clear();
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let mut p = 0;
    loop {
        while p < line.len() && is_blank(line[p]) {
            p += 1;
        }
        if at(p) == 0 {
            return Ok(());
        }
        let start = out.len();
        let (mut in_double, mut in_single) = (false, false);
        loop {
            let c = at(p);
            if in_double {
                if c == b'\\'
                    && at(p + 1) == b'x'
                    && let (Some(h), Some(l)) = (hex_value(at(p + 2)), hex_value(at(p + 3)))
                {
                    out.push(h * 16 + l);
                    p += 3;
                } else if c == b'\\' && at(p + 1) != 0 {
                    p += 1;
                    out.push(match at(p) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    if at(p + 1) != 0 && !is_blank(at(p + 1)) {
                        return Err(FrameError::UnbalancedQuotes);
                    }
                    p += 1;
                    break;
                } else if c == 0 {
                    return Err(FrameError::UnbalancedQuotes);
                } else {
                    out.push(c);
                }
            } else if in_single {
                if c == b'\\' && at(p + 1) == b'\'' {
                    p += 1;
                    out.push(b'\'');
                } else if c == b'\'' {
                    if at(p + 1) != 0 && !is_blank(at(p + 1)) {
                        return Err(FrameError::UnbalancedQuotes);
                    }
                    p += 1;
                    break;
                } else if c == 0 {
                    return Err(FrameError::UnbalancedQuotes);
                } else {
                    out.push(c);
                }
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' => {
                        p += 1;
                        break;
                    }
                    0 => break,
                    b'"' => in_double = true,
                    b'\'' => in_single = true,
                    other => out.push(other),
                }
            }
            p += 1;
        }
        spans.push(start..out.len());
    }
}

// ---------------------------------------------------------------------------------------
// Replies.

/// Appends `n` in decimal.
fn write_decimal(out: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[i..]);
}

fn write_line_text(out: &mut Vec<u8>, text: &str) {
    // A line reply cannot hold CR or LF; Redis replaces them with spaces too.
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// Appends a simple string: `+OK\r\n`.
///
/// ```
/// let mut out = Vec::new();
/// dice_resp::frame::write_simple(&mut out, "OK");
/// assert_eq!(out, b"+OK\r\n");
/// ```
pub fn write_simple(out: &mut Vec<u8>, text: &str) {
    out.push(b'+');
    write_line_text(out, text);
}

/// Appends an error. `text` starts with the error code (`ERR syntax error`); a leading `-`
/// is accepted and not doubled. CR and LF become spaces.
///
/// ```
/// let mut out = Vec::new();
/// dice_resp::frame::write_error(&mut out, "ERR syntax error");
/// assert_eq!(out, b"-ERR syntax error\r\n");
/// ```
pub fn write_error(out: &mut Vec<u8>, text: &str) {
    out.push(b'-');
    write_line_text(out, text.strip_prefix('-').unwrap_or(text));
}

/// Appends an integer: `:42\r\n`.
pub fn write_integer(out: &mut Vec<u8>, n: i64) {
    out.push(b':');
    write_decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Appends a bulk string, binary-safe: `$5\r\nhello\r\n`.
///
/// ```
/// let mut out = Vec::new();
/// dice_resp::frame::write_bulk(&mut out, b"a\r\nb");
/// assert_eq!(out, b"$4\r\na\r\nb\r\n");
/// ```
pub fn write_bulk(out: &mut Vec<u8>, data: &[u8]) {
    out.reserve(data.len() + 16);
    out.push(b'$');
    write_decimal(out, data.len() as i64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends the null bulk string, `$-1\r\n` (a missing value).
pub fn write_null_bulk(out: &mut Vec<u8>) {
    out.extend_from_slice(b"$-1\r\n");
}

/// Appends an array header: `*3\r\n`; the `len` elements follow.
pub fn write_array_len(out: &mut Vec<u8>, len: usize) {
    out.push(b'*');
    write_decimal(out, len as i64);
    out.extend_from_slice(b"\r\n");
}

/// Appends the null array, `*-1\r\n`.
pub fn write_null_array(out: &mut Vec<u8>) {
    out.extend_from_slice(b"*-1\r\n");
}

/// Which reply protocol a connection speaks: RESP2 (the default) or RESP3 (after
/// `HELLO 3`). Requests are the same in both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Protocol {
    /// RESP2: nulls are `$-1`/`*-1`, maps are flat arrays, `INFO` a bulk string.
    #[default]
    Resp2,
    /// RESP3: nulls are `_`, maps `%`, sets `~`, doubles `,`, booleans `#`, verbatim
    /// strings `=`, big numbers `(`, pushes `>`.
    Resp3,
}

impl Protocol {
    /// The version number `HELLO` takes and reports.
    pub fn version(self) -> i64 {
        match self {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        }
    }
}

fn write_header(out: &mut Vec<u8>, kind: u8, len: usize) {
    out.push(kind);
    write_decimal(out, len as i64);
    out.extend_from_slice(b"\r\n");
}

/// Appends the RESP3 null, `_\r\n`.
pub fn write_null3(out: &mut Vec<u8>) {
    out.extend_from_slice(b"_\r\n");
}

/// Appends a missing value in `proto`: `$-1` in RESP2, `_` in RESP3.
///
/// ```
/// use dice_resp::frame::{Protocol, write_null};
/// let mut out = Vec::new();
/// write_null(&mut out, Protocol::Resp2);
/// write_null(&mut out, Protocol::Resp3);
/// assert_eq!(out, b"$-1\r\n_\r\n");
/// ```
pub fn write_null(out: &mut Vec<u8>, proto: Protocol) {
    match proto {
        Protocol::Resp2 => write_null_bulk(out),
        Protocol::Resp3 => write_null3(out),
    }
}

/// Appends a missing array in `proto`: `*-1` in RESP2, `_` in RESP3.
pub fn write_null_aggregate(out: &mut Vec<u8>, proto: Protocol) {
    match proto {
        Protocol::Resp2 => write_null_array(out),
        Protocol::Resp3 => write_null3(out),
    }
}

/// Appends a map header for `len` key-value pairs (the `2 * len` elements follow, key
/// then value): `%len` in RESP3, a flat array `*2len` in RESP2.
///
/// ```
/// use dice_resp::frame::{Protocol, write_map_len};
/// let mut out = Vec::new();
/// write_map_len(&mut out, 3, Protocol::Resp3);
/// write_map_len(&mut out, 3, Protocol::Resp2);
/// assert_eq!(out, b"%3\r\n*6\r\n");
/// ```
pub fn write_map_len(out: &mut Vec<u8>, len: usize, proto: Protocol) {
    match proto {
        Protocol::Resp2 => write_header(out, b'*', len * 2),
        Protocol::Resp3 => write_header(out, b'%', len),
    }
}

/// Appends a set header (`~len` in RESP3, an array in RESP2); the elements follow.
pub fn write_set_len(out: &mut Vec<u8>, len: usize, proto: Protocol) {
    match proto {
        Protocol::Resp2 => write_header(out, b'*', len),
        Protocol::Resp3 => write_header(out, b'~', len),
    }
}

/// Appends a push header (`>len`, RESP3 only: out-of-band data such as pub/sub messages);
/// the elements follow. In RESP2, pushes are plain arrays.
pub fn write_push_len(out: &mut Vec<u8>, len: usize, proto: Protocol) {
    match proto {
        Protocol::Resp2 => write_header(out, b'*', len),
        Protocol::Resp3 => write_header(out, b'>', len),
    }
}

/// Appends a double: `,1.5` in RESP3 (`inf`, `-inf`, `nan` as RESP3 spells them), a bulk
/// string of the same text in RESP2 (as Redis does).
///
/// ```
/// use dice_resp::frame::{Protocol, write_double};
/// let mut out = Vec::new();
/// write_double(&mut out, 1.5, Protocol::Resp3);
/// write_double(&mut out, f64::NEG_INFINITY, Protocol::Resp3);
/// write_double(&mut out, 2.0, Protocol::Resp2);
/// assert_eq!(out, b",1.5\r\n,-inf\r\n$3\r\n2.0\r\n");
/// ```
pub fn write_double(out: &mut Vec<u8>, value: f64, proto: Protocol) {
    let text = if value.is_nan() {
        "nan".to_string()
    } else if value.is_infinite() {
        if value > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        // The shortest form that reads back the same: "1.5", "2.0", "1e300".
        format!("{value:?}")
    };
    match proto {
        Protocol::Resp2 => write_bulk(out, text.as_bytes()),
        Protocol::Resp3 => {
            out.push(b',');
            out.extend_from_slice(text.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Appends a boolean: `#t`/`#f` in RESP3, the integer 1/0 in RESP2.
pub fn write_boolean(out: &mut Vec<u8>, value: bool, proto: Protocol) {
    match proto {
        Protocol::Resp2 => write_integer(out, i64::from(value)),
        Protocol::Resp3 => out.extend_from_slice(if value { b"#t\r\n" } else { b"#f\r\n" }),
    }
}

/// Appends a big number given as decimal digits (an optional `-` then digits): `(digits`
/// in RESP3, a bulk string in RESP2. Panics (debug) on anything but digits.
pub fn write_big_number(out: &mut Vec<u8>, digits: &str, proto: Protocol) {
    debug_assert!(
        !digits.is_empty()
            && digits
                .strip_prefix('-')
                .unwrap_or(digits)
                .bytes()
                .all(|b| b.is_ascii_digit()),
        "not a big number: {digits:?}"
    );
    match proto {
        Protocol::Resp2 => write_bulk(out, digits.as_bytes()),
        Protocol::Resp3 => {
            out.push(b'(');
            out.extend_from_slice(digits.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Appends a verbatim string with its three-letter format (`txt`, `mkd`): `=len\r\ntxt:...`
/// in RESP3, a plain bulk string in RESP2.
///
/// ```
/// use dice_resp::frame::{Protocol, write_verbatim};
/// let mut out = Vec::new();
/// write_verbatim(&mut out, "txt", b"a\r\nb", Protocol::Resp3);
/// assert_eq!(out, b"=8\r\ntxt:a\r\nb\r\n");
/// ```
pub fn write_verbatim(out: &mut Vec<u8>, format: &str, text: &[u8], proto: Protocol) {
    debug_assert_eq!(format.len(), 3, "a verbatim format is three bytes");
    match proto {
        Protocol::Resp2 => write_bulk(out, text),
        Protocol::Resp3 => {
            write_header(out, b'=', text.len() + 4);
            out.extend_from_slice(format.as_bytes());
            out.push(b':');
            out.extend_from_slice(text);
            out.extend_from_slice(b"\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn parse_all(parser: &mut RequestParser, buf: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, FrameError> {
        let mut pos = 0;
        let mut out = Vec::new();
        loop {
            match parser.parse(&buf[pos..])? {
                Parse::Incomplete => return Ok(out),
                Parse::Request { request, consumed } => {
                    out.push(request.args().map(<[u8]>::to_vec).collect());
                    pos += consumed;
                }
            }
        }
    }

    /// Feeds `stream` one byte more at a time to the same parser, like reads that each bring
    /// one byte: the result must be the same as parsing it whole.
    fn parse_growing(stream: &[u8], cuts: &[usize]) -> Result<Vec<Vec<Vec<u8>>>, FrameError> {
        let mut parser = RequestParser::new(FrameLimits::default());
        let mut start = 0;
        let mut out = Vec::new();
        for &end in cuts.iter().chain(std::iter::once(&stream.len())) {
            let end = end.max(start).min(stream.len());
            loop {
                match parser.parse(&stream[start..end])? {
                    Parse::Incomplete => break,
                    Parse::Request { request, consumed } => {
                        out.push(request.args().map(<[u8]>::to_vec).collect());
                        start += consumed;
                    }
                }
            }
        }
        Ok(out)
    }

    fn encode_request(args: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        write_array_len(&mut out, args.len());
        for a in args {
            write_bulk(&mut out, a);
        }
        out
    }

    #[test]
    fn multibulk_and_inline() {
        let mut p = RequestParser::new(FrameLimits::default());
        let got = parse_all(
            &mut p,
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\nGET k\r\n\r\n  ECHO \"x y\\n\" 'it\\'s'\n",
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                vec![b"SET".to_vec(), b"k".to_vec(), b"a\r\nb".to_vec()],
                vec![b"GET".to_vec(), b"k".to_vec()],
                vec![],
                vec![b"ECHO".to_vec(), b"x y\n".to_vec(), b"it's".to_vec()],
            ]
        );
    }

    #[test]
    fn empty_array_and_empty_bulk() {
        let mut p = RequestParser::new(FrameLimits::default());
        let got = parse_all(&mut p, b"*0\r\n*1\r\n$0\r\n\r\n").unwrap();
        assert_eq!(got, vec![vec![], vec![vec![]]]);
    }

    #[test]
    fn inline_quotes() {
        let mut p = RequestParser::new(FrameLimits::default());
        let got = parse_all(&mut p, b"SET \"\\x41\\x4a\" ab\"cd\"\r\n").unwrap();
        assert_eq!(
            got,
            vec![vec![b"SET".to_vec(), b"AJ".to_vec(), b"abcd".to_vec()]]
        );
        for bad in [
            &b"GET \"k\r\n"[..],
            b"GET 'k\n",
            b"GET \"k\"x\n",
            b"GET 'k'x\n",
        ] {
            let mut p = RequestParser::new(FrameLimits::default());
            assert_eq!(
                parse_all(&mut p, bad).unwrap_err(),
                FrameError::UnbalancedQuotes,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn protocol_violations() {
        let cases: &[(&[u8], FrameError)] = &[
            (b"*-5\r\n", FrameError::InvalidMultibulkLength),
            (b"*abc\r\n", FrameError::InvalidMultibulkLength),
            (b"*\r\n", FrameError::InvalidMultibulkLength),
            (b"*9999999999\r\n", FrameError::InvalidMultibulkLength),
            (b"*1\r\n$abc\r\n", FrameError::InvalidBulkLength),
            (b"*1\r\n$-1\r\n", FrameError::InvalidBulkLength),
            (b"*1\r\n$99999999999\r\n", FrameError::InvalidBulkLength),
            (b"*1\r\n:1\r\n", FrameError::ExpectedBulk(':')),
            (b"*1\r\n$1\r\nab\r\n", FrameError::MissingCrlf),
        ];
        for (input, want) in cases {
            let mut p = RequestParser::new(FrameLimits::default());
            assert_eq!(parse_all(&mut p, input).unwrap_err(), *want, "{input:?}");
        }
    }

    #[test]
    fn bounds() {
        let limits = FrameLimits {
            max_bulk_len: 100,
            max_args: 3,
            max_inline_len: 16,
            max_request_len: 1000,
        };
        let mut p = RequestParser::new(limits);
        assert_eq!(
            parse_all(&mut p, b"*4\r\n").unwrap_err(),
            FrameError::InvalidMultibulkLength
        );
        assert_eq!(
            parse_all(&mut p, b"*1\r\n$101\r\n").unwrap_err(),
            FrameError::InvalidBulkLength
        );
        assert_eq!(
            parse_all(&mut p, &[b'a'; 17]).unwrap_err(),
            FrameError::TooBigInline
        );
        assert_eq!(
            parse_all(&mut p, b"*00000000000000000000").unwrap_err(),
            FrameError::TooBigMultibulkCount
        );
        assert_eq!(
            parse_all(&mut p, b"*1\r\n$1000000000000000000").unwrap_err(),
            FrameError::TooBigBulkCount
        );
        // Within the bulk bound, but the request as a whole would not fit.
        let limits = FrameLimits {
            max_request_len: 64,
            ..limits
        };
        let mut p = RequestParser::new(limits);
        assert!(matches!(
            parse_all(&mut p, b"*3\r\n$60\r\n").unwrap_err(),
            FrameError::RequestTooLarge { .. }
        ));
        // The unauthenticated bounds.
        let mut p = RequestParser::new(FrameLimits::default());
        p.set_unauthenticated(true);
        assert_eq!(
            parse_all(&mut p, b"*11\r\n").unwrap_err(),
            FrameError::UnauthenticatedMultibulkLength
        );
        assert_eq!(
            parse_all(&mut p, b"*1\r\n$16385\r\n").unwrap_err(),
            FrameError::UnauthenticatedBulkLength
        );
        p.set_unauthenticated(false);
        assert_eq!(
            parse_all(&mut p, b"*11\r\n").unwrap(),
            Vec::<Vec<Vec<u8>>>::new()
        );
    }

    #[test]
    fn needed_hint() {
        let mut p = RequestParser::new(FrameLimits::default());
        let buf = b"*1\r\n$10\r\nabc";
        assert!(matches!(p.parse(buf), Ok(Parse::Incomplete)));
        assert_eq!(p.needed(), 4 + 5 + 12);
    }

    #[test]
    fn resp3_encoders_and_their_resp2_forms() {
        use Protocol::{Resp2, Resp3};
        let enc = |f: &dyn Fn(&mut Vec<u8>, Protocol)| {
            let (mut two, mut three) = (Vec::new(), Vec::new());
            f(&mut two, Resp2);
            f(&mut three, Resp3);
            (
                String::from_utf8(two).unwrap(),
                String::from_utf8(three).unwrap(),
            )
        };
        type Case<'a> = ((String, String), (&'a str, &'a str));
        let cases: Vec<Case> = vec![
            (enc(&|o, p| write_null(o, p)), ("$-1\r\n", "_\r\n")),
            (
                enc(&|o, p| write_null_aggregate(o, p)),
                ("*-1\r\n", "_\r\n"),
            ),
            (enc(&|o, p| write_map_len(o, 2, p)), ("*4\r\n", "%2\r\n")),
            (enc(&|o, p| write_map_len(o, 0, p)), ("*0\r\n", "%0\r\n")),
            (enc(&|o, p| write_set_len(o, 3, p)), ("*3\r\n", "~3\r\n")),
            (enc(&|o, p| write_push_len(o, 3, p)), ("*3\r\n", ">3\r\n")),
            (enc(&|o, p| write_boolean(o, true, p)), (":1\r\n", "#t\r\n")),
            (
                enc(&|o, p| write_boolean(o, false, p)),
                (":0\r\n", "#f\r\n"),
            ),
            (
                enc(&|o, p| write_double(o, 3.25, p)),
                ("$4\r\n3.25\r\n", ",3.25\r\n"),
            ),
            (
                enc(&|o, p| write_double(o, -0.5, p)),
                ("$4\r\n-0.5\r\n", ",-0.5\r\n"),
            ),
            (
                enc(&|o, p| write_double(o, 1e300, p)),
                ("$5\r\n1e300\r\n", ",1e300\r\n"),
            ),
            (
                enc(&|o, p| write_double(o, f64::INFINITY, p)),
                ("$3\r\ninf\r\n", ",inf\r\n"),
            ),
            (
                enc(&|o, p| write_double(o, f64::NAN, p)),
                ("$3\r\nnan\r\n", ",nan\r\n"),
            ),
            (
                enc(&|o, p| write_big_number(o, "-3492890328409238509324850943850943825024385", p)),
                (
                    "$44\r\n-3492890328409238509324850943850943825024385\r\n",
                    "(-3492890328409238509324850943850943825024385\r\n",
                ),
            ),
            (
                enc(&|o, p| write_verbatim(o, "txt", b"Some string", p)),
                ("$11\r\nSome string\r\n", "=15\r\ntxt:Some string\r\n"),
            ),
            (
                enc(&|o, p| write_verbatim(o, "mkd", b"", p)),
                ("$0\r\n\r\n", "=4\r\nmkd:\r\n"),
            ),
        ];
        for ((two, three), (want2, want3)) in cases {
            assert_eq!(two, want2);
            assert_eq!(three, want3);
        }
        assert_eq!(Resp2.version(), 2);
        assert_eq!(Resp3.version(), 3);
    }

    #[test]
    fn integers() {
        for (s, v) in [
            (&b"0"[..], Some(0)),
            (b"-1", Some(-1)),
            (b"9223372036854775807", Some(i64::MAX)),
            (b"-9223372036854775808", Some(i64::MIN)),
            (b"-0", None),
            (b"01", None),
            (b" 1", None),
            (b"1 ", None),
            (b"", None),
            (b"-", None),
            (b"1e3", None),
        ] {
            assert_eq!(parse_i64(s), v, "{s:?}");
        }
        let mut out = Vec::new();
        write_integer(&mut out, i64::MIN);
        write_integer(&mut out, 0);
        write_integer(&mut out, 1234);
        assert_eq!(out, b":-9223372036854775808\r\n:0\r\n:1234\r\n");
    }

    fn arb_request() -> impl Strategy<Value = Vec<Vec<u8>>> {
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..6)
    }

    fn arb_inline() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop::sample::select(vec![b'a', b'b', b' ', b'"', b'\'', b'\\', b'x', b'4']),
            0..30,
        )
        .prop_map(|mut v| {
            v.extend_from_slice(b"\r\n");
            v
        })
    }

    proptest! {
        /// Every split point of a stream of valid requests parses the same.
        #[test]
        fn every_split_parses_the_same(
            requests in prop::collection::vec(arb_request(), 1..6),
            cuts in prop::collection::vec(0usize..2000, 0..8),
        ) {
            let stream: Vec<u8> = requests.iter().flat_map(|r| encode_request(r)).collect();
            let mut whole = RequestParser::new(FrameLimits::default());
            prop_assert_eq!(&parse_all(&mut whole, &stream).unwrap(), &requests);
            let mut cuts = cuts;
            cuts.sort_unstable();
            prop_assert_eq!(&parse_growing(&stream, &cuts).unwrap(), &requests);
        }

        /// Byte by byte, including inline lines (valid or not), gives what parsing whole gives.
        #[test]
        fn byte_by_byte_is_the_same(
            requests in prop::collection::vec(arb_request(), 0..4),
            lines in prop::collection::vec(arb_inline(), 0..4),
        ) {
            let mut stream: Vec<u8> = Vec::new();
            for (i, r) in requests.iter().enumerate() {
                stream.extend(encode_request(r));
                if let Some(l) = lines.get(i) { stream.extend_from_slice(l); }
            }
            for l in lines.iter().skip(requests.len()) { stream.extend_from_slice(l); }
            let mut whole = RequestParser::new(FrameLimits::default());
            let expect = parse_all(&mut whole, &stream);
            let cuts: Vec<usize> = (0..stream.len()).collect();
            let got = parse_growing(&stream, &cuts);
            prop_assert_eq!(got, expect);
        }

        /// Garbage never panics and never asks for more than the request bound.
        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let mut p = RequestParser::new(FrameLimits::default());
            let _ = parse_all(&mut p, &bytes);
            prop_assert!(p.needed() <= FrameLimits::default().max_request_len);
        }
    }
}
