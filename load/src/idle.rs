//! Idle mode: open and probe `conns` connections, announce them, hold them without traffic,
//! close them; every step is bounded by a timeout. It measures nothing itself: it is there so
//! that the server's memory per idle connection can be read while they are held.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::connect::{connect_once, probe, resolve, spawn_bounded};
use crate::recorder::Recorder;
use crate::report::{BenchReport, IdleCounts, RunInfo};
use crate::{
    make_payload, BenchConfig, BenchError, Connection, Driver, CLOSE_TIMEOUT, CONNECT_PARALLEL,
    CONNECT_TIMEOUT, IDLE_OPEN_TIMEOUT, PROBE_TIMEOUT,
};

/// Prints `holding N idle connections` to stdout and flushes it (scripts wait for the line).
pub(crate) fn announce_held(n: usize) {
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
