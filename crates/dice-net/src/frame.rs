//! Length-prefixed frames: a 4-byte big-endian length, then that many bytes.
//!
//! The decoder is sans-IO: feed it bytes as they arrive, take complete frames out. A length
//! header above the bound is refused at once, before anything is buffered for it.

/// A frame that breaks the size bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("frame of {len} bytes exceeds the limit of {max} bytes")]
pub struct FrameTooLarge {
    /// The announced or actual length.
    pub len: usize,
    /// The bound.
    pub max: usize,
}

/// Prepends the length header to `payload`.
///
/// ```
/// let framed = dice_net::frame::encode(b"abc", 16).unwrap();
/// assert_eq!(framed, [0, 0, 0, 3, b'a', b'b', b'c']);
/// ```
pub fn encode(payload: &[u8], max: usize) -> Result<Vec<u8>, FrameTooLarge> {
    if payload.len() > max || payload.len() > u32::MAX as usize {
        return Err(FrameTooLarge {
            len: payload.len(),
            max,
        });
    }
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Splits a byte stream into frames.
///
/// ```
/// use dice_net::frame::{FrameDecoder, encode};
/// let mut d = FrameDecoder::new(1024);
/// let bytes = [encode(b"one", 1024).unwrap(), encode(b"two", 1024).unwrap()].concat();
/// d.extend(&bytes[..5]);
/// assert_eq!(d.next_frame().unwrap(), None);
/// d.extend(&bytes[5..]);
/// assert_eq!(d.next_frame().unwrap().as_deref(), Some(&b"one"[..]));
/// assert_eq!(d.next_frame().unwrap().as_deref(), Some(&b"two"[..]));
/// assert_eq!(d.next_frame().unwrap(), None);
/// ```
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max: usize,
}

impl FrameDecoder {
    /// A decoder refusing frames longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            max,
        }
    }

    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `None` if more bytes are needed, or an error if the next
    /// frame announces a length past the bound (the stream should then be closed).
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameTooLarge> {
        let Some(header) = self.buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*header) as usize;
        if len > self.max {
            return Err(FrameTooLarge { len, max: self.max });
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let frame = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(frame))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn oversized_header_is_refused_before_buffering_the_body() {
        let mut d = FrameDecoder::new(100);
        d.extend(&u32::MAX.to_be_bytes());
        assert_eq!(
            d.next_frame(),
            Err(FrameTooLarge {
                len: u32::MAX as usize,
                max: 100
            })
        );
        assert!(encode(&[0; 101], 100).is_err());
    }

    proptest! {
        #[test]
        fn frames_survive_any_split(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let stream: Vec<u8> = payloads.iter().flat_map(|p| encode(p, 64).unwrap()).collect();
            let at = if stream.is_empty() { 0 } else { cut.index(stream.len()) };
            let mut d = FrameDecoder::new(64);
            let mut out = Vec::new();
            for part in [&stream[..at], &stream[at..]] {
                d.extend(part);
                while let Some(f) = d.next_frame().unwrap() {
                    out.push(f);
                }
            }
            prop_assert_eq!(out, payloads);
            prop_assert_eq!(d.buffered(), 0);
        }
    }
}
