//! Helpers shared by this crate's tests.

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_std::os::unix::net::UnixStream;
use futures_lite::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::keyring::{KeyId, Keyring, SecretKey};

/// Upper bound on any single test; only reached if something hangs.
pub(crate) const WATCHDOG: Duration = Duration::from_secs(30);

/// Runs `fut` to completion, failing the test if it takes longer than [`WATCHDOG`].
pub(crate) fn run<F: Future>(fut: F) -> F::Output {
    async_std::task::block_on(futures_lite::future::or(fut, async {
        async_io::Timer::after(WATCHDOG).await;
        panic!("test did not finish within {WATCHDOG:?}");
    }))
}

/// The tests' shared secret: bytes 0x00 to 0x1f.
pub(crate) fn key() -> SecretKey {
    SecretKey::new((0u8..32).collect()).unwrap()
}

/// The tests' key id, `test-key`.
pub(crate) fn id() -> KeyId {
    KeyId::new("test-key").unwrap()
}

/// A keyring holding [`key`] under [`id`].
pub(crate) fn ring() -> Keyring {
    let mut ring = Keyring::new();
    ring.insert(id(), key());
    ring
}

/// Copies `from` to `to` until the end of the stream, XORing the byte at offset `at` with
/// `flip` (`usize::MAX` to change nothing), then shuts `to` for writing.
pub(crate) async fn relay(mut from: UnixStream, mut to: UnixStream, at: usize, flip: u8) {
    let mut offset = 0;
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        if (offset..offset + n).contains(&at) {
            buf[at - offset] ^= flip;
        }
        offset += n;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// A writer that passes everything through to `inner` and records each write.
#[derive(Debug)]
pub(crate) struct Recorder<W> {
    inner: W,
    log: WriteLog,
}

impl<W> Recorder<W> {
    /// A recorder in front of `inner`, and the log it writes to.
    pub(crate) fn new(inner: W) -> (Self, WriteLog) {
        let log = WriteLog::default();
        (
            Recorder {
                inner,
                log: log.clone(),
            },
            log,
        )
    }
}

/// What a [`Recorder`] saw, shared with it.
#[derive(Debug, Clone, Default)]
pub(crate) struct WriteLog(Arc<Mutex<Vec<Vec<u8>>>>);

impl WriteLog {
    /// The bytes of each write, in order.
    pub(crate) fn writes(&self) -> Vec<Vec<u8>> {
        self.0.lock().unwrap().clone()
    }

    /// Everything written, as one byte string.
    pub(crate) fn bytes(&self) -> Vec<u8> {
        self.writes().concat()
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Recorder<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            this.log.0.lock().unwrap().push(buf[..n].to_vec());
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
