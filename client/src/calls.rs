//! The table of calls in flight on one connection, owned by the connection's task (no lock):
//! where each call's outcome goes, its request (handed back if it provably never ran), whether
//! it was written, and when it times out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_channel::oneshot;

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
            Some(call) => call.reply.send(Outcome::Done(result)).is_ok(),
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
