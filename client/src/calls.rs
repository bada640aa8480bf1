//! The table of calls in flight on one connection, owned by the connection's task (no lock):
//! where each call's outcome goes, its request (handed back if it provably never ran), whether
//! it was written, and when it times out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use rpckit_proto::RpcError;

use crate::deadline::Deadline;
use crate::error::{CallError, ConnectionLost};

/// What a connection tells a waiting caller.
#[derive(Debug)]
pub(crate) enum Outcome<Req, Resp> {
    /// The answer, or a final error.
    Done(Result<Resp, CallError>),
    /// The call provably never ran (not written when the connection died, or unanswered when
    /// the server said goodbye): here is its request back, for another connection.
    NotSent(Req),
    /// The server answered `ShuttingDown`: it did not run the call. Here is its request back,
    /// for another server.
    ShuttingDown(Req),
}

/// Where a call's outcome goes.
pub(crate) type Reply<Req, Resp> = oneshot::Sender<Outcome<Req, Resp>>;

/// A call whose frame is sealed for the socket, waiting for its answer.
#[derive(Debug)]
pub(crate) struct Pending<Req, Resp> {
    /// Where its outcome goes.
    pub(crate) reply: Reply<Req, Resp>,
    /// Its request, handed back if the call provably never ran.
    pub(crate) request: Req,
    /// Whether any byte of its frame reached the socket (then, if the connection dies, the
    /// server may have run it).
    pub(crate) written: bool,
    /// When the caller stops waiting.
    pub(crate) deadline: Option<Deadline>,
}

/// Calls in flight by id. Ids are handed out by this client one after the other, so std's
/// hasher needs no help; an answer whose id is not here (cancelled, timed out) is dropped.
#[derive(Debug)]
pub(crate) struct Calls<Req, Resp> {
    /// Calls by id.
    by_id: HashMap<u64, Pending<Req, Resp>>,
}

impl<Req, Resp> Calls<Req, Resp> {
    /// An empty table.
    pub(crate) fn new() -> Self {
        Calls {
            by_id: HashMap::new(),
        }
    }

    /// Enters call `id`.
    pub(crate) fn insert(&mut self, id: u64, call: Pending<Req, Resp>) {
        self.by_id.insert(id, call);
    }

    /// Notes that call `id`'s frame started to reach the socket.
    pub(crate) fn mark_written(&mut self, id: u64) {
        if let Some(call) = self.by_id.get_mut(&id) {
            call.written = true;
        }
    }

    /// Hands call `id` its answer; `false` if no such call waits (it was cancelled or timed
    /// out, or its caller went away).
    pub(crate) fn answer(&mut self, id: u64, result: Result<Resp, CallError>) -> bool {
        match self.by_id.remove(&id) {
            Some(call) => {
                let outcome = match result {
                    Err(CallError::Rpc(RpcError::ShuttingDown)) => {
                        Outcome::ShuttingDown(call.request)
                    }
                    result => Outcome::Done(result),
                };
                call.reply.send(outcome).is_ok()
            }
            None => false,
        }
    }

    /// Forgets call `id`, whose caller stopped waiting; `true` if it was here (its frame is
    /// sealed, so the server must be told to cancel it).
    pub(crate) fn cancel(&mut self, id: u64) -> bool {
        self.by_id.remove(&id).is_some()
    }

    /// Ends every call whose deadline is not after `now` with [`CallError::Timeout`], pushing
    /// their ids onto `expired` (their frames are sealed: the server must be told to cancel
    /// them). Returns the earliest deadline left.
    pub(crate) fn expire(&mut self, now: Instant, expired: &mut Vec<u64>) -> Option<Instant> {
        let due =
            |_: &u64, call: &mut Pending<Req, Resp>| call.deadline.is_some_and(|d| d.at <= now);
        for (id, call) in self.by_id.extract_if(due) {
            expired.push(id);
            let left = call.deadline.map_or(Duration::ZERO, |d| d.left);
            let _ = call
                .reply
                .send(Outcome::Done(Err(CallError::Timeout(left))));
        }
        self.by_id
            .values()
            .filter_map(|call| call.deadline.map(|d| d.at))
            .min()
    }

    /// Ends every call: the connection is gone because of `lost`. A written call's outcome
    /// is unknown, unless `none_ran` (the server said goodbye, which it does only after
    /// answering every call it read); every other call is handed back as not sent.
    pub(crate) fn end_all(&mut self, lost: &ConnectionLost, none_ran: bool) {
        for (_, call) in self.by_id.drain() {
            let outcome = if call.written && !none_ran {
                Outcome::Done(Err(CallError::OutcomeUnknown(lost.clone())))
            } else {
                Outcome::NotSent(call.request)
            };
            let _ = call.reply.send(outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(
        written: bool,
        deadline: Option<Deadline>,
    ) -> (
        Pending<&'static str, u32>,
        oneshot::Receiver<Outcome<&'static str, u32>>,
    ) {
        let (reply, answer) = oneshot::channel();
        let call = Pending {
            reply,
            request: "request",
            written,
            deadline,
        };
        (call, answer)
    }

    #[test]
    fn expire_times_out_only_calls_past_their_deadline_and_returns_the_next() {
        let now = Instant::now();
        let left = Duration::from_secs(1);
        let mut calls = Calls::new();
        let (due, mut due_answer) = pending(true, Some(Deadline { at: now, left }));
        let later_at = now + Duration::from_secs(5);
        let (later, mut later_answer) = pending(true, Some(Deadline { at: later_at, left }));
        let (never, _never_answer) = pending(true, None);
        calls.insert(1, due);
        calls.insert(2, later);
        calls.insert(3, never);
        let mut expired = Vec::new();
        assert_eq!(calls.expire(now, &mut expired), Some(later_at));
        assert_eq!(expired, [1]);
        assert!(matches!(
            due_answer.try_recv(),
            Ok(Some(Outcome::Done(Err(CallError::Timeout(t))))) if t == left
        ));
        assert!(matches!(later_answer.try_recv(), Ok(None)));
        assert!(!calls.cancel(1), "gone once timed out");
        assert!(calls.cancel(2));
    }

    #[test]
    fn a_lost_connection_hands_back_unwritten_calls_and_goodbye_hands_back_all() {
        for none_ran in [false, true] {
            let mut calls = Calls::new();
            let (written, mut written_answer) = pending(false, None);
            let (unwritten, mut unwritten_answer) = pending(false, None);
            calls.insert(1, written);
            calls.insert(2, unwritten);
            calls.mark_written(1);
            calls.end_all(&ConnectionLost::ServerClosed, none_ran);
            let written = written_answer.try_recv();
            if none_ran {
                assert!(matches!(written, Ok(Some(Outcome::NotSent("request")))));
            } else {
                assert!(matches!(
                    written,
                    Ok(Some(Outcome::Done(Err(CallError::OutcomeUnknown(
                        ConnectionLost::ServerClosed
                    )))))
                ));
            }
            assert!(matches!(
                unwritten_answer.try_recv(),
                Ok(Some(Outcome::NotSent("request")))
            ));
        }
    }

    #[test]
    fn an_answer_reaches_its_caller_once() {
        let mut calls = Calls::new();
        let (call, mut answer) = pending(true, None);
        calls.insert(7, call);
        assert!(calls.answer(7, Ok(42)));
        assert!(
            !calls.answer(7, Ok(43)),
            "a second answer for the id is dropped"
        );
        assert!(matches!(answer.try_recv(), Ok(Some(Outcome::Done(Ok(42))))));
    }
}
