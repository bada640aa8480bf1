//! From a verified frame to an answer: decode the envelope, then admit, refuse or run each
//! call. A handler is polled once in place; one that answers at once (most do) is answered
//! there, with no task and no channel. One that has to wait moves to a task of its own,
//! racing its deadline and its cancellation, and hands its result back through the in-flight
//! table's channel ([`super::calls`]).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use async_io::Timer;
use futures_lite::future::FutureExt;
use rpckit_proto::message::decode_client;
use rpckit_proto::{ClientMessage, DecodeError, RpcError, ServerMessage};
use serde::Serialize;
use tracing::{debug, warn};

use super::calls::{CallTicket, Meter};
use super::close::Close;
use super::event_loop::{fatal, Connection};
use super::outgoing::{Outgoing, PushError};
use crate::metrics::{CallOutcome, OTHER_METHOD};
use crate::service::{CallContext, Service};
use crate::spawn::spawn;

/// The handler's future, boxed so it can move into a task if it does not finish at once.
type CallFuture<R> = Pin<Box<dyn Future<Output = Result<R, RpcError>> + Send>>;

impl<S: Service> Connection<'_, S> {
    /// Decodes one verified payload and acts on it.
    pub(super) fn on_frame(&mut self, payload: &[u8]) -> Result<(), Close> {
        let message = decode_client::<S::Request>(payload).map_err(Close::Undecodable)?;
        match message {
            ClientMessage::Call {
                id,
                deadline,
                request,
            } => {
                self.timers.last_call = self.timers.last_received;
                self.on_call(id, deadline, request)
            }
            ClientMessage::Cancel { id } => {
                if self.calls.cancel(id) {
                    debug!(peer = %self.peer, id, "call cancelled by client");
                }
                Ok(())
            }
            ClientMessage::Ping { nonce } => self
                .out
                .push(&ServerMessage::<S::Response>::Pong { nonce })
                .map_err(fatal),
            ClientMessage::Pong { .. } => Ok(()),
            ClientMessage::Goodbye => Err(Close::ClientGoodbye),
        }
    }

    /// Admits, refuses or answers a call. `deadline` counts from the frame's arrival
    /// (PROTOCOL.md §9.2).
    fn on_call(
        &mut self,
        id: u64,
        deadline: Option<Duration>,
        request: Result<S::Request, DecodeError>,
    ) -> Result<(), Close> {
        // Free the slots of calls that have finished, so that a client that sends its next
        // call as soon as it sees an answer is not refused for a slot already free.
        self.reply_finished()?;
        // An id still in flight: answering this call would give the id two answers, and
        // refusing it too (PROTOCOL.md §9.1). The connection ends instead.
        if self.calls.contains(id) {
            // The close is logged (within its log budget) with the reason.
            debug!(peer = %self.peer, key_id = %self.key_id, id, "call id reused while in flight; closing");
            return Err(Close::ReusedCallId(id));
        }
        // With metrics on: the call's method, looked up once, and when its frame was read.
        let meter = self.shared.metrics.as_ref().map(|m| Meter {
            method: m.method_id(request.as_ref().map_or(OTHER_METHOD, S::method_name)),
            started: self.timers.last_received,
        });
        let refusal = if self.timers.draining() {
            Some(RpcError::ShuttingDown)
        } else if deadline == Some(Duration::ZERO) {
            // Already expired, however fast the handler would be.
            Some(RpcError::DeadlineExceeded)
        } else if self.calls.len() >= self.shared.config.max_in_flight {
            Some(RpcError::Overloaded)
        } else {
            None
        };
        let request = match (refusal, request) {
            (Some(error), _) => {
                self.count_call(meter, &error);
                return reply::<S::Response>(&mut self.out, id, Err(error));
            }
            (None, Err(e)) => {
                debug!(peer = %self.peer, id, error = %e, "undecodable request");
                let error = RpcError::UnknownMethod(e.to_string());
                self.count_call(meter, &error);
                return reply::<S::Response>(&mut self.out, id, Err(error));
            }
            (None, Ok(request)) => request,
        };
        // One too far off for the clock to represent means none.
        let deadline = deadline.and_then(|d| self.timers.last_received.checked_add(d));
        let ctx = CallContext {
            id,
            peer: self.peer,
            key_id: self.key_id.clone(),
            deadline,
        };
        let service = self.shared.service.clone();
        let mut handler: CallFuture<S::Response> =
            Box::pin(guarded(async move { service.call(request, ctx).await }));
        // One poll in place. A handler that is not ready registers this no-op waker, and
        // registers its task's waker again at the task's first poll, so nothing is lost.
        let mut first = Context::from_waker(Waker::noop());
        if let Poll::Ready(result) = handler.as_mut().poll(&mut first) {
            self.shared
                .stats
                .calls_total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let (Some(metrics), Some(meter)) = (&self.shared.metrics, meter) {
                metrics
                    .method_by_id(meter.method)
                    .record(CallOutcome::of(&result), meter.started.elapsed());
            }
            return reply(&mut self.out, id, result);
        }
        spawn(run_call(handler, deadline, self.calls.start(id, meter)));
        Ok(())
    }

    /// Counts a call answered without running its handler, if metrics are on.
    fn count_call(&self, meter: Option<Meter>, error: &RpcError) {
        if let (Some(metrics), Some(meter)) = (&self.shared.metrics, meter) {
            let outcome = CallOutcome::of_error(error);
            metrics.method_by_id(meter.method).count(outcome);
        }
    }
}

/// A call's own task: the handler against its deadline, until the connection cancels it.
async fn run_call<R: Send>(
    handler: CallFuture<R>,
    deadline: Option<Instant>,
    ticket: CallTicket<R>,
) {
    let expired = async {
        match deadline {
            Some(at) => Timer::at(at).await,
            None => Timer::never().await,
        };
        Err(RpcError::DeadlineExceeded)
    };
    let work = async { Some(handler.or(expired).await) };
    let cancelled = async {
        // Nothing is sent: this returns when the connection drops the sender.
        let _ = ticket.cancelled.recv().await;
        None
    };
    if let Some(result) = work.or(cancelled).await {
        ticket.report(result);
    }
}

/// Queues the answer to call `id`; an answer too large for a frame becomes an `Internal`
/// error for that call instead.
pub(super) fn reply<R: Serialize>(
    out: &mut Outgoing,
    id: u64,
    result: Result<R, RpcError>,
) -> Result<(), Close> {
    match out.push(&ServerMessage::Reply { id, result }) {
        Ok(()) => Ok(()),
        Err(PushError::Encode(e)) => {
            let error = RpcError::Internal(format!("response cannot be sent: {e}"));
            let answer = ServerMessage::<R>::Reply {
                id,
                result: Err(error),
            };
            out.push(&answer).map_err(fatal)
        }
        Err(PushError::Close(close)) => Err(close),
    }
}

/// Runs a handler, turning a panic into an error for its call.
async fn guarded<R>(handler: impl Future<Output = Result<R, RpcError>>) -> Result<R, RpcError> {
    match AssertUnwindSafe(handler).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "handler panicked".into());
            warn!(panic = %what, "handler panicked");
            Err(RpcError::Internal(format!("handler panicked: {what}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use crate::stats::ServerStats;

    #[test]
    fn a_panic_becomes_internal_for_that_call() {
        let result: Result<(), RpcError> =
            future::block_on(guarded(async { panic!("on purpose") }));
        assert_eq!(
            result,
            Err(RpcError::Internal("handler panicked: on purpose".into()))
        );
    }

    #[test]
    fn a_call_task_reports_deadline_exceeded_and_nothing_once_cancelled() {
        let mut calls =
            super::super::calls::Calls::<u8>::new(Arc::new(ServerStats::default()), None);
        // Past its deadline: reports DeadlineExceeded.
        let never: CallFuture<u8> = Box::pin(future::pending());
        let ticket = calls.start(1, None);
        future::block_on(run_call(never, Some(Instant::now()), ticket));
        let finished = calls.try_finished().expect("a result");
        assert_eq!(finished.result, Err(RpcError::DeadlineExceeded));

        // Cancelled: the handler is dropped and nothing is reported.
        let dropped = Arc::new(AtomicBool::new(false));
        struct OnDrop(Arc<AtomicBool>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let guard = OnDrop(dropped.clone());
        let waits: CallFuture<u8> = Box::pin(async move {
            let _guard = guard;
            Timer::after(Duration::from_secs(3600)).await;
            Ok(0)
        });
        let ticket = calls.start(2, None);
        assert!(calls.cancel(2));
        future::block_on(run_call(waits, None, ticket));
        assert!(dropped.load(Ordering::SeqCst), "the handler was dropped");
        assert!(calls.try_finished().is_none());
    }
}
