//! The load loop: connection slots, worker tasks, deadline and hard stop.
//!
//! All tasks are spawned here and their handles kept, so that once the run is
//! over nothing keeps sending: workers stop issuing calls at the deadline, and
//! whatever is still running [`HARD_STOP_GRACE`] later is cancelled.
//!
//! Idle mode has its own short path ([`crate::idle::run_idle`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_std::task::JoinHandle;

use crate::connect::{connect_once, open_initial, probe, resolve, sleep_until_at_most};
use crate::idle::{announce_held, run_idle};
use crate::progress::Progress;
use crate::recorder::Recorder;
use crate::report::{BenchReport, RunInfo};
use crate::{make_payload, BenchConfig, BenchError, Connection, Driver, HARD_STOP_GRACE};

/// Pause after a failed connection attempt before the next one.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(20);

/// Everything the workers share.
struct Ctx<D: Driver> {
    driver: Arc<D>,
    addr: SocketAddr,
    payload: Vec<u8>,
    recorder: Arc<Recorder>,
    deadline: Instant,
    /// Set at the hard stop: calls failing from then on were cut off, not broken.
    stopped: AtomicBool,
}

impl<D: Driver> Ctx<D> {
    /// Records a failed call, or a `hard_stop` if the engine is cancelling the run.
    fn call_failed(&self, index: usize, err: &BenchError) {
        if self.stopped.load(Ordering::Acquire) {
            self.recorder.record_error(index, &hard_stop_error());
        } else {
            self.recorder.record_error(index, err);
        }
    }
}

/// The error counted for each worker cut off at the hard stop.
fn hard_stop_error() -> BenchError {
    BenchError::new(
        "hard_stop",
        format!(
            "call still running {}s after the deadline, cancelled",
            HARD_STOP_GRACE.as_secs()
        ),
    )
}

/// One connection shared by the `depth` workers of a slot; empty when it must be (re)opened.
struct Slot<C> {
    current: async_std::sync::Mutex<Option<Arc<C>>>,
}

/// Runs the benchmark described by `cfg` with `driver` against `addr` (`host:port`).
///
/// Returns an error without running if the configuration is invalid, the
/// address does not resolve, or no connection at all can be opened at the
/// start (for a driver whose connections open on their first call: the one
/// call made before the clock starts cannot connect). Failures during the run
/// are counted in the report instead.
///
/// With `cfg.idle` this is [`run_idle`], which prints `holding N idle connections`.
pub async fn run<D: Driver>(
    driver: D,
    addr: &str,
    cfg: &BenchConfig,
) -> Result<BenchReport, BenchError> {
    cfg.validate()?;
    if cfg.idle {
        return run_idle(driver, addr, cfg, announce_held).await;
    }
    let duration = cfg.duration()?;
    let warmup = cfg.warmup()?;
    let target = resolve(addr).await?;
    let depth = if cfg.churn { 1 } else { cfg.depth };
    let driver = Arc::new(driver);

    // Open the connections before the clock starts (churn: one probe connection, closed
    // once it has answered a call).
    let initial = if cfg.churn { 1 } else { cfg.conns };
    let opened = open_initial(&driver, target, initial).await;
    let mut setup_errors = Vec::new();
    let mut conns = Vec::with_capacity(initial);
    for r in opened {
        match r {
            Ok(c) => conns.push(Some(Arc::new(c))),
            Err(e) => {
                setup_errors.push(e);
                conns.push(None);
            }
        }
    }
    if conns.iter().all(Option::is_none) {
        let e = setup_errors.swap_remove(0);
        return Err(BenchError::new(
            e.kind().to_owned(),
            format!("cannot connect to {addr}: {}", e.message()),
        ));
    }
    // One call before the clock starts: a driver may open its connections on their first
    // call (the handshake carrying it), and a server that cannot be reached should end the
    // run at once as it does for the others. Any other failure is counted like the run's.
    let payload = make_payload(cfg.payload);
    if let Some(first) = conns.iter().flatten().next() {
        match probe(&**first, &payload).await {
            Ok(_) => {}
            Err(e) if e.is_no_connection() => {
                return Err(BenchError::new(
                    e.kind().to_owned(),
                    format!("cannot call {addr}: {}", e.message()),
                ));
            }
            Err(e) => setup_errors.push(e),
        }
    }
    if cfg.churn {
        conns.clear(); // the probe is closed; churn workers connect themselves
    }

    let start = Instant::now();
    let measure_from = start + warmup;
    let deadline = measure_from + duration;
    let shards = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        * 4;
    let recorder = Arc::new(Recorder::new(shards, measure_from, deadline));
    for e in &setup_errors {
        recorder.record_error(0, e);
    }
    let progress = Progress::start_if_terminal(recorder.clone(), start, measure_from, deadline);
    let ctx = Arc::new(Ctx {
        driver,
        addr: target,
        payload,
        recorder: recorder.clone(),
        deadline,
        stopped: AtomicBool::new(false),
    });

    let mut handles: Vec<JoinHandle<()>> = Vec::with_capacity(cfg.conns * depth);
    if cfg.churn {
        for i in 0..cfg.conns {
            handles.push(async_std::task::spawn(churn_worker(ctx.clone(), i)));
        }
    } else {
        for (i, conn) in conns.into_iter().enumerate() {
            let slot = Arc::new(Slot {
                current: async_std::sync::Mutex::new(conn),
            });
            for _ in 0..depth {
                handles.push(async_std::task::spawn(steady_worker(
                    ctx.clone(),
                    slot.clone(),
                    i,
                )));
            }
        }
    }

    // Join everything, cancelling what is still running at the hard stop.
    let hard_stop = deadline + HARD_STOP_GRACE;
    let mut stuck = 0u64;
    for mut h in handles {
        if !ctx.stopped.load(Ordering::Acquire) {
            let left = hard_stop.saturating_duration_since(Instant::now());
            if async_std::future::timeout(left, &mut h).await.is_ok() {
                continue;
            }
            ctx.stopped.store(true, Ordering::Release);
        }
        // Workers woken by a cancelled neighbour record their own `hard_stop`.
        if h.cancel().await.is_none() {
            stuck += 1;
        }
    }
    if stuck > 0 {
        recorder.record_errors(0, &hard_stop_error(), stuck);
    }
    if let Some(p) = progress {
        p.stop().await;
    }

    let info = RunInfo {
        driver: ctx.driver.name().to_owned(),
        target: addr.to_owned(),
        method: cfg.method.clone(),
        connections: cfg.conns,
        depth,
        payload_bytes: cfg.payload,
        churn: cfg.churn,
        idle: None,
        warmup,
        window: duration,
    };
    Ok(BenchReport::from_totals(info, &recorder.totals()))
}

/// One of `depth` workers sharing a slot: calls until the deadline, reopening after failures.
async fn steady_worker<D: Driver>(ctx: Arc<Ctx<D>>, slot: Arc<Slot<D::Conn>>, index: usize) {
    let rec = &*ctx.recorder;
    let payload = ctx.payload.as_slice();
    loop {
        let Some(conn) = current_or_connect(&ctx, &slot, index).await else {
            return;
        };
        loop {
            let t0 = Instant::now();
            if t0 >= ctx.deadline {
                return;
            }
            match conn.call(payload).await {
                Ok(n) => rec.record_call(index, t0, Instant::now(), (payload.len() + n) as u64),
                Err(e) => {
                    ctx.call_failed(index, &e);
                    let mut cur = slot.current.lock().await;
                    if cur.as_ref().is_some_and(|c| Arc::ptr_eq(c, &conn)) {
                        *cur = None;
                    }
                    drop(cur);
                    // Do not hammer a server that answers wrongly or drops connections.
                    sleep_until_at_most(RECONNECT_BACKOFF, ctx.deadline).await;
                    break;
                }
            }
        }
    }
}

/// The slot's open connection, or a newly opened one; `None` once the deadline passed.
async fn current_or_connect<D: Driver>(
    ctx: &Ctx<D>,
    slot: &Slot<D::Conn>,
    index: usize,
) -> Option<Arc<D::Conn>> {
    // Holding the slot lock while connecting makes the other workers of the slot wait.
    let mut cur = slot.current.lock().await;
    loop {
        if let Some(c) = cur.as_ref() {
            return Some(c.clone());
        }
        if Instant::now() >= ctx.deadline {
            return None;
        }
        match connect_once(&*ctx.driver, ctx.addr).await {
            Ok(c) => {
                ctx.recorder.record_connect(index, Instant::now());
                *cur = Some(Arc::new(c));
            }
            Err(e) => {
                ctx.recorder.record_error(index, &e);
                sleep_until_at_most(RECONNECT_BACKOFF, ctx.deadline).await;
            }
        }
    }
}

/// Churn loop: connect, one call, close, until the deadline.
async fn churn_worker<D: Driver>(ctx: Arc<Ctx<D>>, index: usize) {
    let rec = &*ctx.recorder;
    let payload = ctx.payload.as_slice();
    loop {
        let t0 = Instant::now();
        if t0 >= ctx.deadline {
            return;
        }
        let conn = match connect_once(&*ctx.driver, ctx.addr).await {
            Ok(c) => c,
            Err(e) => {
                rec.record_error(index, &e);
                sleep_until_at_most(RECONNECT_BACKOFF, ctx.deadline).await;
                continue;
            }
        };
        match conn.call(payload).await {
            Ok(n) => {
                drop(conn);
                // Counted once its call is answered: a driver may open the connection on
                // the call itself (the handshake carrying it).
                let done = Instant::now();
                rec.record_connect(index, done);
                rec.record_call(index, t0, done, (payload.len() + n) as u64);
            }
            Err(e) => ctx.call_failed(index, &e),
        }
    }
}
