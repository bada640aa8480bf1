//! Fuzzes the frame decoder: `split_frame` on the raw input, and `FrameReader` reading the
//! input in chunks whose sizes come from the input's first byte. Neither may panic, and no
//! frame may exceed the limits.
#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::io::AsyncRead;
use libfuzzer_sys::fuzz_target;
use rpckit_proto::frame::{split_frame, FrameLimits, FrameReader};

struct Chunks<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl AsyncRead for Chunks<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        let n = self.chunk.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(n))
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = FrameLimits { min: 32, max: 4096 };
    if let Ok(Some(len)) = split_frame(data, limits) {
        assert!(len as u32 <= limits.max && len as u32 >= limits.min);
    }
    let Some((&first, rest)) = data.split_first() else { return };
    let chunk = usize::from(first % 64) + 1;
    futures_lite::future::block_on(async {
        let mut reader = FrameReader::new(Chunks { data: rest, chunk }, limits);
        // Bounded: each frame consumes at least 4 bytes of the input.
        for _ in 0..=rest.len() / 4 {
            match reader.next_frame().await {
                Ok(Some(body)) => assert!(body.len() <= limits.max as usize),
                Ok(None) | Err(_) => break,
            }
        }
    });
});
