//! A socket with bytes already read put back in front, so a connection the lean path has
//! started reading can be handed to hyper mid-stream.

use super::buffer::Buf;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `inner`, read after the bytes in `prefix`.
#[derive(Debug)]
pub struct Rewind<T> {
    prefix: Option<Buf>,
    inner: T,
}

impl<T> Rewind<T> {
    /// `inner` with `prefix` (bytes read from it earlier) to be read first.
    pub fn new(inner: T, prefix: Buf) -> Rewind<T> {
        Rewind { prefix: (!prefix.is_empty()).then_some(prefix), inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(prefix) = &mut self.prefix {
            let n = prefix.len().min(out.remaining());
            out.put_slice(&prefix.filled()[..n]);
            prefix.consume(n);
            if prefix.is_empty() {
                self.prefix = None;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, out)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn buffered_bytes_are_read_before_the_socket() {
        let mut prefix = Buf::with_capacity(16);
        prefix.spare()[..5].copy_from_slice(b"hello");
        prefix.advance(5);
        prefix.consume(1);
        let mut r = Rewind::new(&b" world"[..], prefix);
        let mut s = String::new();
        r.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "ello world");
    }
}
