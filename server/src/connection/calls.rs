//! The in-flight table: the calls of one connection whose handler had to wait and runs in a
//! task of its own, and the one channel through which those tasks hand their results back.
//!
//! The connection's task alone decides when a call ends: it takes a call off the table when
//! its result arrives, when the client cancels it, when the grace period is over, or when the
//! connection ends. A result whose call is no longer on the table (or whose id was reused
//! since: each call carries a token) is dropped, so each call gets at most one answer.
//! Taking a call off the table drops its cancel sender, which ends the call's task.
//!
//! With metrics on, the table records each call it takes off (outcome and latency, on its
//! method's handles) and keeps the in-flight gauge.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use async_channel::{Receiver, Sender};
use futures_lite::StreamExt;
use rpckit_proto::RpcError;

use crate::metrics::{CallOutcome, MethodId, ServerMetrics};
use crate::stats::ServerStats;

/// What a call's task hands back: the handler's result, or the error that replaced it.
#[derive(Debug)]
pub(crate) struct Finished<R> {
    /// The call's id.
    pub(crate) id: u64,
    /// Which call of that id this was.
    token: u64,
    /// What to answer.
    pub(crate) result: Result<R, RpcError>,
}

/// What a call's task needs to report back, and to hear that it is cancelled.
#[derive(Debug)]
pub(crate) struct CallTicket<R> {
    /// The call's id.
    id: u64,
    /// Which call of that id this is.
    token: u64,
    /// Where the result goes.
    results: Sender<Finished<R>>,
    /// Fails once the connection's task has taken the call off its table.
    pub(crate) cancelled: Receiver<()>,
}

impl<R> CallTicket<R> {
    /// Hands the result back to the connection's task (nothing happens if it has gone).
    pub(crate) fn report(self, result: Result<R, RpcError>) {
        let _ = self.results.try_send(Finished {
            id: self.id,
            token: self.token,
            result,
        });
    }
}

/// A call on the table.
#[derive(Debug)]
struct InFlight<'m> {
    /// Distinguishes this call from an earlier call that used the same id.
    token: u64,
    /// Dropping this cancels the call's task.
    _cancel: Sender<()>,
    /// Keeps the server-wide in-flight gauges up while the call is on the table.
    gauge: InFlightGauge<'m>,
}

/// What the metrics record of a call when it ends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meter {
    /// Its method.
    pub(crate) method: MethodId,
    /// When its frame was read.
    pub(crate) started: Instant,
}

/// The calls of one connection running in tasks of their own.
#[derive(Debug)]
pub(crate) struct Calls<'m, R> {
    /// Calls by id.
    table: HashMap<u64, InFlight<'m>>,
    /// Token of the next call.
    next_token: u64,
    /// Cloned into each call's task. Unbounded, yet bounded by the table: each call sends
    /// at most once.
    results_tx: Sender<Finished<R>>,
    /// Pinned: it is polled as a stream, which keeps its listener between waits.
    results_rx: Pin<Box<Receiver<Finished<R>>>>,
    /// For the in-flight gauge.
    stats: Arc<ServerStats>,
    /// The server's metrics, if on.
    metrics: Option<&'m ServerMetrics>,
}

impl<'m, R> Calls<'m, R> {
    /// An empty table.
    pub(crate) fn new(stats: Arc<ServerStats>, metrics: Option<&'m ServerMetrics>) -> Self {
        let (results_tx, results_rx) = async_channel::unbounded();
        Calls {
            table: HashMap::new(),
            next_token: 0,
            results_tx,
            results_rx: Box::pin(results_rx),
            stats,
            metrics,
        }
    }

    /// Calls on the table.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no call is on the table.
    pub(crate) fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Whether call `id` is on the table.
    pub(crate) fn contains(&self, id: u64) -> bool {
        self.table.contains_key(&id)
    }

    /// Puts call `id` on the table (`meter`: what the metrics record when it ends, if they
    /// are on); its task reports through the ticket.
    pub(crate) fn start(&mut self, id: u64, meter: Option<Meter>) -> CallTicket<R> {
        let token = self.next_token;
        self.next_token += 1;
        let (cancel, cancelled) = async_channel::bounded(1);
        let call = InFlight {
            token,
            _cancel: cancel,
            gauge: InFlightGauge::new(&self.stats, self.metrics.zip(meter)),
        };
        self.table.insert(id, call);
        CallTicket {
            id,
            token,
            results: self.results_tx.clone(),
            cancelled,
        }
    }

    /// Takes call `id` off the table (its task is cancelled; the metrics count it
    /// cancelled). Returns whether it was there.
    pub(crate) fn cancel(&mut self, id: u64) -> bool {
        match self.table.remove(&id) {
            Some(call) => {
                call.gauge.ended(CallOutcome::Cancelled);
                true
            }
            None => false,
        }
    }

    /// Takes every call off the table (their tasks are cancelled; the metrics count them
    /// with `outcome`) and returns their ids.
    pub(crate) fn cancel_all(&mut self, outcome: CallOutcome) -> Vec<u64> {
        self.table
            .drain()
            .map(|(id, call)| {
                call.gauge.ended(outcome);
                id
            })
            .collect()
    }

    /// A result that has arrived, of a call still on the table (now taken off), without
    /// waiting. Results of calls no longer on the table are dropped on the way.
    pub(crate) fn try_finished(&mut self) -> Option<Finished<R>> {
        if self.table.is_empty() {
            // What the channel may hold now is stale (calls cancelled or drained).
            return None;
        }
        while let Ok(finished) = self.results_rx.try_recv() {
            if self.claim(&finished) {
                return Some(finished);
            }
        }
        None
    }

    /// Waits for the next result of a call still on the table (now taken off).
    pub(crate) async fn finished(&mut self) -> Finished<R> {
        loop {
            // Never `None`: this table holds a sender.
            if let Some(finished) = self.results_rx.next().await {
                if self.claim(&finished) {
                    return finished;
                }
            }
        }
    }

    /// Takes the result's call off the table, if it is still there (and not an earlier call
    /// of the same id).
    fn claim(&mut self, finished: &Finished<R>) -> bool {
        let current = self
            .table
            .get(&finished.id)
            .is_some_and(|call| call.token == finished.token);
        if current {
            if let Some(call) = self.table.remove(&finished.id) {
                call.gauge.ended(CallOutcome::of(&finished.result));
            }
        }
        current
    }
}

/// Counts a call in the server's in-flight gauges while it lives, and in the total after.
#[derive(Debug)]
struct InFlightGauge<'m> {
    /// The server's counters.
    stats: Arc<ServerStats>,
    /// The metrics and what they record of this call, if they are on.
    metered: Option<(&'m ServerMetrics, Meter)>,
}

impl<'m> InFlightGauge<'m> {
    fn new(stats: &Arc<ServerStats>, metered: Option<(&'m ServerMetrics, Meter)>) -> Self {
        stats.calls_in_flight.fetch_add(1, Ordering::Relaxed);
        if let Some((metrics, _)) = metered {
            metrics.call_started();
        }
        InFlightGauge {
            stats: stats.clone(),
            metered,
        }
    }

    /// The call ended with `outcome`: the metrics record it on its method.
    fn ended(self, outcome: CallOutcome) {
        if let Some((metrics, meter)) = self.metered {
            metrics
                .method_by_id(meter.method)
                .record(outcome, meter.started.elapsed());
        }
    }
}

impl Drop for InFlightGauge<'_> {
    fn drop(&mut self) {
        self.stats.calls_in_flight.fetch_sub(1, Ordering::Relaxed);
        self.stats.calls_total.fetch_add(1, Ordering::Relaxed);
        if let Some((metrics, _)) = self.metered {
            metrics.call_finished();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> (Calls<'static, u32>, Arc<ServerStats>) {
        let stats = Arc::new(ServerStats::default());
        (Calls::new(stats.clone(), None), stats)
    }

    #[test]
    fn a_result_is_taken_once_and_frees_the_slot() {
        let (mut calls, stats) = table();
        let ticket = calls.start(7, None);
        assert!(calls.contains(7));
        assert_eq!(stats.snapshot().calls_in_flight, 1);
        ticket.report(Ok(70));
        let finished = calls.try_finished().expect("the result");
        assert_eq!((finished.id, finished.result), (7, Ok(70)));
        assert!(calls.is_empty());
        assert!(calls.try_finished().is_none());
        let now = stats.snapshot();
        assert_eq!((now.calls_in_flight, now.calls_total), (0, 1));
    }

    #[test]
    fn a_cancelled_call_is_told_and_its_late_result_is_dropped() {
        let (mut calls, _) = table();
        let ticket = calls.start(1, None);
        assert!(calls.cancel(1));
        assert!(ticket.cancelled.is_closed(), "the task hears of it");
        ticket.report(Ok(1));
        // The id is reused; only the new call's result counts.
        let again = calls.start(1, None);
        again.report(Ok(2));
        let finished = calls.try_finished().expect("the new call's result");
        assert_eq!(finished.result, Ok(2));
        assert!(calls.try_finished().is_none());
    }

    #[test]
    fn cancel_all_empties_the_table_and_later_results_are_dropped() {
        let (mut calls, stats) = table();
        let tickets: Vec<_> = (0..3).map(|id| calls.start(id, None)).collect();
        let mut ids = calls.cancel_all(CallOutcome::Cancelled);
        ids.sort_unstable();
        assert_eq!(ids, [0, 1, 2]);
        for ticket in tickets {
            ticket.report(Ok(0));
        }
        assert!(calls.try_finished().is_none());
        assert_eq!(stats.snapshot().calls_in_flight, 0);
    }
}
