//! Live progress line for interactive benchmark runs.
//!
//! About every 500 ms the line `bench measure 3.5s/10.0s  calls 123456  41234/s  errors 0`
//! is redrawn in place on stderr: the phase (warmup or measure), the time spent in it of its
//! length, the calls completed in it (while measuring, the calls the report will count, give
//! or take the ones still in flight), the rate since the last redraw, and the errors of the
//! whole run (as the report counts them). Nothing is printed when stderr is not a terminal,
//! so piped or captured output (scripts, `--json`, CI) stays clean.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_std::task::JoinHandle;

use crate::recorder::Recorder;

/// Time between redraws.
pub const REDRAW_INTERVAL: Duration = Duration::from_millis(500);

/// A running progress display; [`Progress::stop`] erases it.
#[derive(Debug)]
pub struct Progress {
    task: JoinHandle<()>,
}

impl Progress {
    /// Starts redrawing if stderr is a terminal; returns `None` (and prints nothing) otherwise.
    ///
    /// `start` is when the warmup began, `measure_from` when measuring starts, and
    /// `deadline` when the run ends.
    pub fn start_if_terminal(
        recorder: Arc<Recorder>,
        start: Instant,
        measure_from: Instant,
        deadline: Instant,
    ) -> Option<Progress> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let task = async_std::task::spawn(async move {
            let warmup = measure_from.saturating_duration_since(start).as_secs_f64();
            let total = deadline
                .saturating_duration_since(measure_from)
                .as_secs_f64();
            let mut last_calls = 0u64;
            let mut last_at = start;
            // Calls completed when measuring started: once measuring, the line counts from
            // there, as the final report does.
            let mut at_measure: Option<u64> = None;
            loop {
                let mut wake = last_at + REDRAW_INTERVAL;
                if at_measure.is_none() {
                    wake = wake.min(measure_from);
                }
                async_std::task::sleep(wake.saturating_duration_since(Instant::now())).await;
                let now = Instant::now();
                let snap = recorder.snapshot();
                if at_measure.is_none() && now >= measure_from {
                    at_measure = Some(snap.calls);
                    last_calls = snap.calls;
                    last_at = now;
                    continue;
                }
                let dt = now.saturating_duration_since(last_at).as_secs_f64();
                let rate = if dt > 0.0 {
                    snap.calls.saturating_sub(last_calls) as f64 / dt
                } else {
                    0.0
                };
                last_calls = snap.calls;
                last_at = now;
                let (phase, t, of, calls) = match at_measure {
                    None => (
                        "warmup",
                        now.saturating_duration_since(start).as_secs_f64(),
                        warmup,
                        snap.calls,
                    ),
                    Some(base) => (
                        "measure",
                        now.saturating_duration_since(measure_from).as_secs_f64(),
                        total,
                        snap.calls.saturating_sub(base),
                    ),
                };
                let mut err = std::io::stderr().lock();
                // Progress output is best effort.
                let _ = write!(
                    err,
                    "\r\x1b[2Kbench {phase} {t:.1}s/{of:.1}s  calls {calls}  {rate:.0}/s  errors {}",
                    snap.errors
                );
                let _ = err.flush();
            }
        });
        Some(Progress { task })
    }

    /// Stops redrawing and erases the line.
    pub async fn stop(self) {
        self.task.cancel().await;
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K");
        let _ = err.flush();
    }
}
