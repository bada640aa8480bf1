//! The load loop: connection slots, worker tasks, deadline and hard stop.
//!
//! All tasks are spawned here and their handles kept, so that once the run is
//! over nothing keeps sending: workers stop issuing calls at the deadline, and
//! whatever is still running [`HARD_STOP_GRACE`] later is cancelled.
//!
//! Idle mode has its own short path ([`run_idle`]): open and probe, announce,
//! hold, close; every step is bounded by a timeout.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_std::task::JoinHandle;

use super::progress::Progress;
use super::stats::{BenchReport, IdleCounts, Recorder, RunInfo};
use super::{
    make_payload, BenchConfig, BenchError, Connection, Driver, CLOSE_TIMEOUT, CONNECT_PARALLEL,
    CONNECT_TIMEOUT, HARD_STOP_GRACE, IDLE_OPEN_TIMEOUT, PROBE_TIMEOUT,
};

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

/// Prints `holding N idle connections` to stdout and flushes it (scripts wait for the line).
fn announce_held(n: usize) {
    let mut out = std::io::stdout().lock();
    // If stdout is gone nobody is waiting for the line; the hold goes on regardless.
    let _ = writeln!(out, "holding {n} idle connections").and_then(|()| out.flush());
}

/// Idle mode: opens `cfg.conns` connections ([`CONNECT_PARALLEL`] attempts at a time, each
/// bounded by [`CONNECT_TIMEOUT`], the whole phase by [`IDLE_OPEN_TIMEOUT`]), makes one call on
/// each (bounded by [`PROBE_TIMEOUT`]), calls `on_held` with the number that work, holds them
/// without traffic for `cfg.duration` seconds, then closes them ([`CLOSE_TIMEOUT`] each).
///
/// Returns an error if the configuration is invalid, the address does not resolve, or not a
/// single connection works. Connections that fail to open, fail their probe, or look dead
/// after the hold are counted as errors in the report.
pub async fn run_idle<D: Driver>(
    mut driver: D,
    addr: &str,
    cfg: &BenchConfig,
    on_held: impl FnOnce(usize),
) -> Result<BenchReport, BenchError> {
    cfg.validate()?;
    let hold = cfg.duration()?;
    let target = resolve(addr).await?;
    driver.prepare_idle(hold);
    let driver = Arc::new(driver);
    let payload = Arc::new(make_payload(cfg.payload));
    let start = Instant::now();
    // Everything an idle run records counts: the window is the whole run and then some.
    let recorder = Arc::new(Recorder::new(
        1,
        start,
        start + IDLE_OPEN_TIMEOUT + PROBE_TIMEOUT + CONNECT_TIMEOUT + hold + CLOSE_TIMEOUT * 2,
    ));

    // Open and probe.
    let open_deadline = start + IDLE_OPEN_TIMEOUT;
    let attempts = (0..cfg.conns).map(|_| {
        let (driver, payload, recorder) = (driver.clone(), payload.clone(), recorder.clone());
        async move {
            if Instant::now() >= open_deadline {
                return Err(BenchError::new(
                    "idle_open_timeout",
                    format!(
                        "not attempted: opening the connections took over {}s",
                        IDLE_OPEN_TIMEOUT.as_secs()
                    ),
                ));
            }
            let conn = connect_once(&*driver, target).await?;
            recorder.record_connect(0, Instant::now());
            let t0 = Instant::now();
            let n = probe(&conn, &payload).await?;
            recorder.record_call(0, t0, Instant::now(), (payload.len() + n) as u64);
            Ok(conn)
        }
    });
    let mut held = Vec::with_capacity(cfg.conns);
    let mut connect_errors = 0u64;
    let mut first_error = None;
    for r in spawn_bounded(attempts, CONNECT_PARALLEL).await {
        match r {
            Ok(c) => held.push(c),
            Err(e) => {
                connect_errors += 1;
                recorder.record_error(0, &e);
                first_error.get_or_insert(e);
            }
        }
    }
    if held.is_empty() {
        let e = first_error
            .unwrap_or_else(|| BenchError::new("connect", "no connection was attempted"));
        return Err(BenchError::new(
            e.kind().to_owned(),
            format!("cannot connect to {addr}: {}", e.message()),
        ));
    }

    // Hold, without traffic.
    on_held(held.len());
    let held_from = Instant::now();
    async_std::task::sleep(hold).await;
    let held_for = held_from.elapsed();
    let alive = held.iter().filter(|c| c.is_alive()).count();
    let lost = held.len() - alive;
    if lost > 0 {
        recorder.record_errors(
            0,
            &BenchError::new(
                "idle_connection_lost",
                "connection closed by the server during the hold",
            ),
            lost as u64,
        );
    }

    // Close.
    let closes = held.into_iter().map(|c| async move {
        async_std::future::timeout(CLOSE_TIMEOUT, c.close())
            .await
            .is_ok()
    });
    let slow = spawn_bounded(closes, CONNECT_PARALLEL)
        .await
        .into_iter()
        .filter(|closed| !closed)
        .count();
    if slow > 0 {
        recorder.record_errors(
            0,
            &BenchError::new(
                "close_timeout",
                format!("close took over {}s", CLOSE_TIMEOUT.as_secs()),
            ),
            slow as u64,
        );
    }

    let info = RunInfo {
        driver: driver.name().to_owned(),
        target: addr.to_owned(),
        method: cfg.method.clone(),
        connections: cfg.conns,
        depth: 1,
        payload_bytes: cfg.payload,
        churn: false,
        idle: Some(IdleCounts {
            held: alive as u64,
            connect_errors,
        }),
        warmup: Duration::ZERO,
        window: held_for,
    };
    Ok(BenchReport::from_totals(info, &recorder.totals()))
}

/// Runs `futures` as tasks, at most `parallel` at a time, and returns their outputs in order.
async fn spawn_bounded<T, F>(futures: impl IntoIterator<Item = F>, parallel: usize) -> Vec<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let parallel = parallel.max(1);
    let mut out = Vec::new();
    let mut pending = std::collections::VecDeque::with_capacity(parallel);
    for fut in futures {
        if pending.len() == parallel {
            if let Some(h) = pending.pop_front() {
                out.push(h.await);
            }
        }
        pending.push_back(async_std::task::spawn(fut));
    }
    while let Some(h) = pending.pop_front() {
        out.push(h.await);
    }
    out
}

/// Resolves `host:port` to its first address.
async fn resolve(addr: &str) -> Result<SocketAddr, BenchError> {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Ok(a);
    }
    let mut addrs = async_std::net::ToSocketAddrs::to_socket_addrs(addr)
        .await
        .map_err(|e| BenchError::new("resolve", format!("cannot resolve {addr:?}: {e}")))?;
    addrs
        .next()
        .ok_or_else(|| BenchError::new("resolve", format!("{addr:?} resolves to no address")))
}

/// One call on `conn` before any clock runs, bounded by [`PROBE_TIMEOUT`]: the answer's
/// payload bytes, or why there was none (`probe_timeout` if it did not come in time).
async fn probe<C: Connection>(conn: &C, payload: &[u8]) -> Result<usize, BenchError> {
    async_std::future::timeout(PROBE_TIMEOUT, conn.call(payload))
        .await
        .unwrap_or_else(|_| {
            Err(BenchError::new(
                "probe_timeout",
                format!("probe call unanswered after {}s", PROBE_TIMEOUT.as_secs()),
            ))
        })
}

/// Connects with [`CONNECT_TIMEOUT`].
async fn connect_once<D: Driver>(driver: &D, addr: SocketAddr) -> Result<D::Conn, BenchError> {
    match async_std::future::timeout(CONNECT_TIMEOUT, driver.connect(addr)).await {
        Ok(r) => r,
        Err(_) => Err(BenchError::new(
            "connect_timeout",
            format!(
                "no connection to {addr} within {}s",
                CONNECT_TIMEOUT.as_secs()
            ),
        )
        .no_connection()),
    }
}

/// Opens `n` connections, up to [`CONNECT_PARALLEL`] attempts at a time.
async fn open_initial<D: Driver>(
    driver: &Arc<D>,
    addr: SocketAddr,
    n: usize,
) -> Vec<Result<D::Conn, BenchError>> {
    let attempts = (0..n).map(|_| {
        let d = driver.clone();
        async move { connect_once(&*d, addr).await }
    });
    spawn_bounded(attempts, CONNECT_PARALLEL).await
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

/// Sleeps for `d`, but not past `deadline`.
async fn sleep_until_at_most(d: Duration, deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    async_std::task::sleep(d.min(left)).await;
}
