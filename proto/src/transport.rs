//! The TCP socket both sides use after accepting or connecting: one non-blocking socket shared
//! by the reading half and the writing half.
//!
//! Its reader waits for the socket to become readable *before* reading, once a read has
//! drained it, instead of reading, failing with `EAGAIN` and only then waiting. On a busy
//! connection that answers one message at a time this saves a failed `recv` and a re-arming
//! of the poller per message.

use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use async_io::Async;
use futures_lite::io::{AsyncRead, AsyncWrite};

/// A connected TCP socket, cheap to clone; clones share the socket.
#[derive(Debug, Clone)]
pub struct TcpSocket(Arc<Async<TcpStream>>);

impl TcpSocket {
    /// Wraps a socket registered with the reactor, with `TCP_NODELAY` set.
    pub fn new(stream: Async<TcpStream>) -> io::Result<Self> {
        stream.get_ref().set_nodelay(true)?;
        Ok(TcpSocket(Arc::new(stream)))
    }

    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        TcpSocket::new(Async::<TcpStream>::connect(addr).await?)
    }

    /// A reader for this socket. Use one reader per socket: two would wake each other.
    pub fn reader(&self) -> SocketReader {
        SocketReader {
            socket: self.0.clone(),
            drained: false,
        }
    }

    /// Shuts down one or both directions; pending and future reads and writes end.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.0.get_ref().shutdown(how)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().peer_addr()
    }

    /// The underlying socket (for socket options).
    pub fn get_ref(&self) -> &TcpStream {
        self.0.get_ref()
    }
}

impl AsyncWrite for &TcpSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_close(cx)
    }
}

/// The reading half of a [`TcpSocket`].
#[derive(Debug)]
pub struct SocketReader {
    /// The shared socket.
    socket: Arc<Async<TcpStream>>,
    /// Whether the last read left nothing behind, so the next one should wait for readiness
    /// first.
    drained: bool,
}

impl AsyncRead for SocketReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if this.drained {
                ready!(this.socket.poll_readable(cx))?;
                this.drained = false;
            }
            match this.socket.get_ref().read(buf) {
                Ok(n) => {
                    // A short read took everything the socket had.
                    this.drained = n < buf.len();
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => this.drained = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn reads_and_writes_across_the_shared_socket() {
        futures_lite::future::block_on(async {
            let listener = Async::<std::net::TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
            let addr = listener.get_ref().local_addr().unwrap();
            let client = TcpSocket::connect(addr).await.unwrap();
            let (server, _) = listener.accept().await.unwrap();
            let server = TcpSocket::new(server).unwrap();
            let mut reader = server.reader();
            for round in 0..3u8 {
                (&client).write_all(&[round; 10]).await.unwrap();
                let mut got = [0u8; 10];
                reader.read_exact(&mut got).await.unwrap();
                assert_eq!(got, [round; 10]);
            }
            client.shutdown(Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty());
        });
    }
}
