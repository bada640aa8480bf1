//! Turning a peer away: the refusal a connection gets before its handshake (busy, rate
//! limited), written and lingered over (`linger.rs`) so the peer can read it.

use std::net::{Shutdown, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_io::{Async, Timer};
use futures_lite::future;
use futures_lite::io::AsyncWriteExt;
use rpckit_proto::handshake::server_refusal;
use rpckit_proto::Refusal;

use crate::linger::linger_and_close;
use crate::server::Shared;
use crate::spawn::spawn;

/// Refusals being sent at once; past it a connection to refuse is just closed.
const MAX_REFUSALS_IN_PROGRESS: usize = 256;
/// Time a refused peer gets to read the refusal.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// Most bytes read and discarded while lingering over a refusal.
const LINGER_READ_LIMIT: usize = 16 * 1024;

/// Tells a peer why it is refused, then closes, in a task of its own. Bounded in time (by
/// [`REFUSAL_LINGER`]) and in number (by [`MAX_REFUSALS_IN_PROGRESS`]).
pub(crate) fn refuse<S: Send + Sync + 'static>(
    shared: &Arc<Shared<S>>,
    stream: Async<TcpStream>,
    reason: Refusal,
) {
    if shared.refusals.fetch_add(1, Ordering::Relaxed) >= MAX_REFUSALS_IN_PROGRESS {
        shared.refusals.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let shared = shared.clone();
    spawn(async move {
        let refused = async {
            let mut writer = &stream;
            let written = async {
                writer.write_all(&server_refusal(reason)).await?;
                writer.flush().await
            };
            if written.await.is_ok() {
                linger_and_close(&stream, REFUSAL_LINGER, LINGER_READ_LIMIT).await;
            }
        };
        // The whole refusal, written and lingered over, takes at most REFUSAL_LINGER.
        future::or(refused, async {
            Timer::after(REFUSAL_LINGER).await;
        })
        .await;
        let _ = stream.get_ref().shutdown(Shutdown::Both);
        shared.refusals.fetch_sub(1, Ordering::Relaxed);
    });
}
