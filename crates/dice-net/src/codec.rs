//! The sync protocol's stream codec for libp2p request-response: one length-prefixed frame
//! per request and per response (see [`crate::frame`]), bounded before anything is read.
//!
//! Requests and responses are raw bytes here; the node decodes them with
//! [`dice_core::SyncMessage::decode`], so that it can count and refuse malformed messages per
//! peer. An empty response frame acknowledges a push.

use futures::{AsyncRead, AsyncWrite};
use libp2p::StreamProtocol;
use libp2p::request_response;
use std::io;

/// Frames sync messages on libp2p streams, refusing frames above `max` bytes.
#[derive(Clone, Debug)]
pub struct FrameCodec {
    max: usize,
}

impl FrameCodec {
    /// A codec that refuses frames longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        FrameCodec { max }
    }
}

impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        crate::frame::read_frame(io, self.max).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        crate::frame::read_frame(io, self.max).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        crate::frame::write_frame(io, &req, self.max).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        crate::frame::write_frame(io, &res, self.max).await
    }
}
