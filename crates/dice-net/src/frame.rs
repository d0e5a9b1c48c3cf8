//! Length-prefixed frames: a 4-byte big-endian length, then that many bytes.
//!
//! [`read_frame`] refuses a length header above the bound at once, before anything is allocated or
//! read for the body; [`encode`] and [`write_frame`] refuse to send one.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use std::io;

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

/// Reads one frame of at most `max` bytes. A longer one is an [`io::ErrorKind::InvalidData`]
/// error holding a [`FrameTooLarge`], returned before its body is read.
///
/// ```
/// # futures::executor::block_on(async {
/// let bytes = [dice_net::frame::encode(b"one", 16).unwrap(), vec![0, 0, 1, 0]].concat();
/// let mut stream = futures::io::Cursor::new(bytes);
/// assert_eq!(dice_net::frame::read_frame(&mut stream, 16).await.unwrap(), b"one");
/// assert!(dice_net::frame::read_frame(&mut stream, 16).await.is_err()); // 256 bytes announced
/// # });
/// ```
pub async fn read_frame<T: AsyncRead + Unpin>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut header = [0u8; 4];
    io.read_exact(&mut header).await?;
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            FrameTooLarge { len, max },
        ));
    }
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    Ok(body)
}

/// Writes `body` as one frame and closes the stream (one frame per request-response
/// stream). A body over `max` bytes is an [`io::ErrorKind::InvalidInput`] error and nothing
/// is written.
pub async fn write_frame<T: AsyncWrite + Unpin>(
    io: &mut T,
    body: &[u8],
    max: usize,
) -> io::Result<()> {
    let framed = encode(body, max).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    io.write_all(&framed).await?;
    io.close().await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::io::Cursor;
    use proptest::prelude::*;

    #[test]
    fn oversized_header_is_refused_before_reading_the_body() {
        // Only the header is there: reading the body would fail with UnexpectedEof instead.
        let mut stream = Cursor::new(u32::MAX.to_be_bytes().to_vec());
        let err = block_on(read_frame(&mut stream, 100)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let inner = err
            .into_inner()
            .unwrap()
            .downcast::<FrameTooLarge>()
            .unwrap();
        assert_eq!(
            *inner,
            FrameTooLarge {
                len: u32::MAX as usize,
                max: 100
            }
        );
        assert_eq!(stream.position(), 4);
        assert!(encode(&[0; 101], 100).is_err());
        let mut sink = Cursor::new(Vec::new());
        let err = block_on(write_frame(&mut sink, &[0; 101], 100)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(sink.get_ref().is_empty());
    }

    #[test]
    fn a_truncated_frame_is_an_error() {
        let mut bytes = encode(b"abcdef", 16).unwrap();
        bytes.truncate(7);
        let err = block_on(read_frame(&mut Cursor::new(bytes), 16)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    proptest! {
        #[test]
        fn frames_read_back_what_was_written(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8),
        ) {
            let mut stream = Vec::new();
            for p in &payloads {
                let mut one = Cursor::new(Vec::new());
                block_on(write_frame(&mut one, p, 64)).unwrap();
                stream.extend(one.into_inner());
            }
            let mut reader = Cursor::new(stream);
            let out: Vec<Vec<u8>> =
                payloads.iter().map(|_| block_on(read_frame(&mut reader, 64)).unwrap()).collect();
            prop_assert_eq!(out, payloads);
            let end = block_on(read_frame(&mut reader, 64)).unwrap_err();
            prop_assert_eq!(end.kind(), io::ErrorKind::UnexpectedEof);
        }
    }
}
