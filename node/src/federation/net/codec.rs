//! The request-response codec: raw bytes, one value per stream direction. The writer
//! writes the bytes and closes its side; the reader reads to the end through a cap and
//! fails past it. This is the framing of libp2p's `request_response::cbor` codec, so a
//! peer using that codec with the same caps interoperates. As there, an empty stream is
//! not a value: it is what a responder that gives no answer leaves (the handler closes the
//! stream), so reading zero bytes fails with `UnexpectedEof`.

use std::io;

use libp2p::StreamProtocol;
use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response;

/// Raw-bytes codec with per-direction size caps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawCodec {
    max_request: usize,
    max_response: usize,
}

impl RawCodec {
    pub(crate) fn new(max_request: usize, max_response: usize) -> Self {
        Self {
            max_request,
            max_response,
        }
    }
}

/// Reads a whole stream, failing with `InvalidData` if it holds more than `cap` bytes and
/// with `UnexpectedEof` if it holds none. Never buffers more than `cap + 1` bytes.
pub(crate) async fn read_capped<T>(io: &mut T, cap: usize) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin + Send,
{
    let mut buf = Vec::new();
    io.take(cap as u64 + 1).read_to_end(&mut buf).await?;
    if buf.len() > cap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message over the {cap}-byte cap"),
        ));
    }
    if buf.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "stream closed without a message",
        ));
    }
    Ok(buf)
}

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_capped(io, self.max_request).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_capped(io, self.max_response).await
    }

    // The request-response handler closes the stream after each write.
    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&req).await
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
        io.write_all(&res).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::futures::io::Cursor;

    #[tokio::test]
    async fn reads_up_to_the_cap_and_fails_past_it() {
        let mut at_cap = Cursor::new(vec![7u8; 10]);
        assert_eq!(read_capped(&mut at_cap, 10).await.unwrap(), vec![7u8; 10]);
        let mut empty = Cursor::new(Vec::new());
        let err = read_capped(&mut empty, 10).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let mut over = Cursor::new(vec![7u8; 11]);
        let err = read_capped(&mut over, 10).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
