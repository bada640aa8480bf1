//! Helpers shared by this crate's tests.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_lite::io::AsyncWrite;

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
