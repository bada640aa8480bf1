//! One server a [`crate::Client`] may send calls to: its connection slot, the calls in flight
//! there, and its health (ejected with backoff after a failure, eased back in after one).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::ClientConfig;
use crate::connect::Target;
use crate::connection::Connection;
use crate::retry::backoff;

/// Where an endpoint stands, as [`EndpointStats`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndpointState {
    /// Takes calls at its full share.
    Healthy,
    /// Back after a failure, taking a share of calls that grows over
    /// [`ClientConfig::slow_start`].
    Recovering,
    /// Failed (or is draining): no new calls until its backoff has passed.
    Ejected,
}

/// What one endpoint of a [`crate::Client`] has done, from [`crate::Client::endpoint_stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointStats {
    /// The endpoint's address (`ip:port`, or the name as given if it did not resolve).
    pub addr: String,
    /// Calls sent to it (each try of a call counts where it went).
    pub calls: u64,
    /// Calls in flight there now.
    pub in_flight: usize,
    /// Where it stands.
    pub state: EndpointState,
}

/// Health of an endpoint.
#[derive(Debug, Default)]
struct Health {
    /// Failures in a row (connect failures, connections found dead or draining).
    failures: u32,
    /// No new calls before this instant.
    ejected_until: Option<Instant>,
    /// When it came back after a failure (slow start runs from here).
    recovered_at: Option<Instant>,
}

/// One server of a client.
#[derive(Debug)]
pub(crate) struct Endpoint<Req, Resp> {
    /// Where to connect, and as whom.
    pub(crate) target: Target,
    /// The connection calls go to, if one is up.
    current: Mutex<Option<Arc<Connection<Req, Resp>>>>,
    /// Held while (re)connecting, so concurrent callers make one connection, not many.
    pub(crate) connecting: async_lock::Mutex<()>,
    /// Calls routed here and not finished yet (the balancer's load measure).
    in_flight: AtomicUsize,
    /// Calls sent here.
    calls: AtomicU64,
    /// Ejection and recovery.
    health: Mutex<Health>,
}

impl<Req, Resp> Endpoint<Req, Resp> {
    /// An endpoint with no connection yet.
    pub(crate) fn new(target: Target) -> Self {
        Endpoint {
            target,
            current: Mutex::new(None),
            connecting: async_lock::Mutex::new(()),
            in_flight: AtomicUsize::new(0),
            calls: AtomicU64::new(0),
            health: Mutex::new(Health::default()),
        }
    }

    fn lock_current(&self) -> MutexGuard<'_, Option<Arc<Connection<Req, Resp>>>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_health(&self) -> MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection, if one is up and takes new calls.
    pub(crate) fn usable(&self) -> Option<Arc<Connection<Req, Resp>>> {
        self.lock_current().as_ref().filter(|c| c.usable()).cloned()
    }

    /// Whether a connection is held that no longer takes new calls (dead, or its server
    /// said it is going away).
    pub(crate) fn holds_unusable(&self) -> bool {
        self.lock_current().as_ref().is_some_and(|c| !c.usable())
    }

    /// Makes `connection` the one calls go to here.
    pub(crate) fn publish(&self, connection: Arc<Connection<Req, Resp>>) {
        *self.lock_current() = Some(connection);
    }

    /// Drops `connection` if it is the current one (calls in flight on it keep their own
    /// handle, so they finish there).
    pub(crate) fn forget(&self, connection: &Arc<Connection<Req, Resp>>) {
        let mut current = self.lock_current();
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, connection)) {
            current.take();
        }
    }

    /// Takes the current connection away, if any.
    pub(crate) fn take(&self) -> Option<Arc<Connection<Req, Resp>>> {
        self.lock_current().take()
    }

    /// Counts a call routed here until the guard drops.
    pub(crate) fn begin(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.in_flight)
    }

    /// Counts a call sent here.
    pub(crate) fn sent(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Calls in flight here.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// No new calls here for a backoff that grows with each failure in a row; the current
    /// connection, if any, is dropped (its calls in flight finish on it).
    pub(crate) fn eject(&self, config: &ClientConfig, now: Instant) {
        self.lock_current().take();
        let mut health = self.lock_health();
        health.failures = health.failures.saturating_add(1);
        let delay = backoff(
            health.failures,
            config.reconnect_initial_backoff,
            config.reconnect_max_backoff,
        );
        health.ejected_until = now.checked_add(delay);
        health.recovered_at = None;
    }

    /// A connection was made: failures are forgotten; an endpoint that had failed starts
    /// its slow start.
    pub(crate) fn connected(&self, now: Instant) {
        let mut health = self.lock_health();
        if health.failures > 0 {
            health.recovered_at = Some(now);
        }
        health.failures = 0;
        health.ejected_until = None;
    }

    /// When its ejection ends, if it is ejected at `now`.
    pub(crate) fn ejected_until(&self, now: Instant) -> Option<Instant> {
        self.lock_health().ejected_until.filter(|&t| t > now)
    }

    /// Its share of calls at `now`, in (0, 1]: 1 unless it is recovering, when it grows
    /// from a tenth to all over `slow_start`; a tenth while it has failed and not connected
    /// since (so that callers do not pile up on it while it is being tried again).
    pub(crate) fn weight(&self, now: Instant, slow_start: Duration) -> f64 {
        const FLOOR: f64 = 0.1;
        let health = self.lock_health();
        if health.failures > 0 {
            return FLOOR;
        }
        let Some(since) = health.recovered_at else {
            return 1.0;
        };
        drop(health);
        let age = now.saturating_duration_since(since);
        if slow_start.is_zero() || age >= slow_start {
            return 1.0;
        }
        (age.as_secs_f64() / slow_start.as_secs_f64()).max(FLOOR)
    }

    /// What it has done, at `now`.
    pub(crate) fn stats(&self, now: Instant, slow_start: Duration) -> EndpointStats {
        let state = if self.ejected_until(now).is_some() {
            EndpointState::Ejected
        } else if self.weight(now, slow_start) < 1.0 {
            EndpointState::Recovering
        } else {
            EndpointState::Healthy
        };
        EndpointStats {
            addr: self.target.addr.clone(),
            calls: self.calls.load(Ordering::Relaxed),
            in_flight: self.in_flight(),
            state,
        }
    }
}

/// A call counted in flight at an endpoint; the count drops with it.
#[derive(Debug)]
pub(crate) struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
