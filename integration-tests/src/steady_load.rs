//! Steady load for restart tests: worker threads that keep calling through the client
//! library, each call carrying a payload no other call carries, and a tally of how every call
//! ended, so that a test can check each call was answered exactly once, with its own payload.
//!
//! Every wait here is on the tally's condition variable, woken by each finished call (or a
//! worker parking), and bounded by a time limit: no sleeps.

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rpckit_client::{CallError, Client};
use rpckit_proto::demo::{Request, Response};
use rpckit_proto::RpcError;

/// The most calls one worker makes (bounds every worker's loop).
pub const MAX_CALLS_PER_WORKER: u64 = 1_000_000;

/// How the calls of a [`SteadyLoad`] ended so far.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Calls started (a call resent after `ShuttingDown` counts once).
    pub started: u64,
    /// Calls answered with their own payload.
    pub answered: u64,
    /// Answers `ShuttingDown` (the server did not run the call), after which the worker
    /// sent the same call again: with a client of one address (a proxy in front) this is the
    /// caller's to do; a client of several does it by itself.
    pub resent_after_shutting_down: u64,
    /// Calls that ended `OutcomeUnknown` (the connection was lost after they were written).
    pub outcome_unknown: u64,
    /// Calls that ended with any other error, or a wrong answer: what went wrong.
    pub failed: Vec<String>,
    /// Payloads that came back twice (must stay empty).
    pub answered_twice: Vec<String>,
    /// Calls started after [`SteadyLoad::mark`].
    pub started_after_mark: u64,
    /// Of those, the ones not answered (outcome unknown or failed).
    pub not_answered_after_mark: u64,
}

impl Tally {
    /// Calls that finished one way or another.
    pub fn finished(&self) -> u64 {
        self.answered + self.outcome_unknown + self.failed.len() as u64
    }

    /// Calls that did not end answered (outcome unknown or failed).
    pub fn not_answered(&self) -> u64 {
        self.outcome_unknown + self.failed.len() as u64
    }
}

/// What the workers and the test share.
#[derive(Debug, Default)]
struct State {
    /// The counts.
    tally: Tally,
    /// Every payload answered so far.
    seen: HashSet<Vec<u8>>,
    /// Workers stop before their next call.
    stop: bool,
    /// Workers park before their next call until resumed.
    paused: bool,
    /// Workers parked now.
    parked: usize,
    /// Calls started from now on are counted in `started_after_mark`.
    marked: bool,
}

/// The tally and its condition variable.
#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Worker threads calling `Echo` with unique payloads until stopped.
#[derive(Debug)]
pub struct SteadyLoad {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl SteadyLoad {
    /// Starts `per_client` worker threads on each of `clients`; each makes one call at a time,
    /// so `clients.len() * per_client` calls are in flight at once.
    pub fn start(clients: &[Client<Request, Response>], per_client: usize) -> Self {
        let shared = Arc::new(Shared::default());
        let mut workers = Vec::new();
        for (c, client) in clients.iter().enumerate() {
            for w in 0..per_client {
                let (client, shared) = (client.clone(), shared.clone());
                let name = format!("load-{c}-{w}");
                let worker = std::thread::Builder::new()
                    .name(name.clone())
                    .spawn(move || work(&name, &client, &shared))
                    .expect("spawn a load worker");
                workers.push(worker);
            }
        }
        SteadyLoad { shared, workers }
    }

    /// The tally now.
    pub fn tally(&self) -> Tally {
        self.shared.lock().tally.clone()
    }

    /// Waits until `n` more calls than now have been answered; panics with the tally after
    /// `limit` (the load has stalled).
    pub fn wait_for_progress(&self, n: u64, limit: Duration) {
        let target = self.shared.lock().tally.answered + n;
        self.wait_until(limit, |s| s.tally.answered >= target, "answers");
    }

    /// Waits until `done` holds for the state, woken by each change; panics after `limit`.
    fn wait_until(&self, limit: Duration, done: impl Fn(&State) -> bool, what: &str) {
        let end = Instant::now() + limit;
        let mut state = self.shared.lock();
        // Bounded: each turn is a change of the state or the end of the time limit.
        while !done(&state) {
            let Some(left) = end.checked_duration_since(Instant::now()) else {
                panic!("waited {limit:?} for {what}; tally: {:?}", state.tally);
            };
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Has every worker park before its next call, and waits until all but `busy()` of them
    /// have parked (`busy` is read under the tally's lock each time it changes: for example the
    /// calls stuck on a frozen server). Returns the tally then.
    pub fn pause(&self, limit: Duration, busy: impl Fn() -> usize) -> Tally {
        self.shared.lock().paused = true;
        let workers = self.workers.len();
        self.wait_until(limit, |s| s.parked + busy() >= workers, "workers to park");
        self.tally()
    }

    /// Counts the calls started from now on apart ([`Tally::started_after_mark`]).
    pub fn mark(&self) {
        self.shared.lock().marked = true;
    }

    /// Lets parked workers go on.
    pub fn resume(&self) {
        self.shared.lock().paused = false;
        self.shared.changed.notify_all();
    }

    /// Stops the workers after their calls in flight and returns the final tally.
    pub fn stop(self) -> Tally {
        {
            let mut state = self.shared.lock();
            state.stop = true;
            state.paused = false;
        }
        self.shared.changed.notify_all();
        for worker in self.workers {
            worker.join().expect("a load worker panicked");
        }
        let state = self.shared.lock();
        assert_eq!(
            state.tally.started,
            state.tally.finished(),
            "a call neither answered nor failed"
        );
        state.tally.clone()
    }
}

/// One worker: calls until stopped, parking while paused.
fn work(name: &str, client: &Client<Request, Response>, shared: &Shared) {
    for seq in 0..MAX_CALLS_PER_WORKER {
        let after_mark = {
            let mut state = shared.lock();
            if state.paused && !state.stop {
                state.parked += 1;
                shared.changed.notify_all();
                while state.paused && !state.stop {
                    state = shared
                        .changed
                        .wait(state)
                        .unwrap_or_else(|e| e.into_inner());
                }
                state.parked -= 1;
            }
            if state.stop {
                return;
            }
            state.tally.started += 1;
            if state.marked {
                state.tally.started_after_mark += 1;
            }
            state.marked
        };
        let payload = format!("{name}:{seq}").into_bytes();
        let ended = call_once(client, &payload);
        let mut state = shared.lock();
        if after_mark && !matches!(ended, Ended::Answered(_)) {
            state.tally.not_answered_after_mark += 1;
        }
        match ended {
            Ended::Answered(resent) => {
                state.tally.resent_after_shutting_down += resent;
                state.tally.answered += 1;
                if !state.seen.insert(payload.clone()) {
                    let text = String::from_utf8_lossy(&payload).into_owned();
                    state.tally.answered_twice.push(text);
                }
            }
            Ended::Unknown(resent) => {
                state.tally.resent_after_shutting_down += resent;
                state.tally.outcome_unknown += 1;
            }
            Ended::Failed(what) => state.tally.failed.push(what),
        }
        drop(state);
        shared.changed.notify_all();
    }
}

/// How one call ended (with the times it was answered `ShuttingDown` and sent again).
enum Ended {
    Answered(u64),
    Unknown(u64),
    Failed(String),
}

/// Calls `Echo(payload)`, sending it again after each `ShuttingDown` (bounded).
fn call_once(client: &Client<Request, Response>, payload: &[u8]) -> Ended {
    const MAX_RESENDS: u64 = 1_000;
    let text = || String::from_utf8_lossy(payload).into_owned();
    for resent in 0..MAX_RESENDS {
        let outcome = async_std::task::block_on(client.call(Request::Echo(payload.to_vec())));
        return match outcome {
            Ok(Response::Echo(back)) if back == payload => Ended::Answered(resent),
            Ok(other) => Ended::Failed(format!("{}: answered {other:?}", text())),
            Err(CallError::Rpc(RpcError::ShuttingDown)) => continue,
            Err(CallError::OutcomeUnknown(_)) => Ended::Unknown(resent),
            Err(e) => Ended::Failed(format!("{}: {e}", text())),
        };
    }
    Ended::Failed(format!(
        "{}: answered ShuttingDown {MAX_RESENDS} times",
        text()
    ))
}
