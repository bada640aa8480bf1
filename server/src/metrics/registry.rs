//! The server's metric families and the handles the data path updates.
//!
//! Every label value is known when [`ServerMetrics`] is built (refusal reasons, handshake
//! outcomes, call outcomes, the service's method names), so each handle is resolved once
//! and an update costs an atomic add (a call: a counter add plus a histogram observe, both
//! lock-free). Rendering ([`ServerMetrics::render`]) happens only when scraped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use super::labels::{CallOutcome, HandshakeOutcome, RefusalReason};
use super::MetricsError;

/// Prefix of every family the server defines (process metrics keep their standard names).
const PREFIX: &str = "rpckit";

/// The method label of calls whose method is not in the list the metrics were built with.
pub const OTHER_METHOD: &str = "other";

/// Call latency buckets, in seconds: 50 µs to 10 s.
const LATENCY_BUCKETS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// The handles for one method: calls by outcome and the latency histogram.
#[derive(Debug, Clone)]
pub struct MethodMetrics {
    /// `rpckit_calls_total{method, outcome}`, one handle per [`CallOutcome`], in its order.
    calls: Box<[IntCounter]>,
    /// `rpckit_call_duration_seconds{method}`.
    latency: Histogram,
}

impl MethodMetrics {
    /// Records one finished call: its outcome and how long it took.
    pub fn record(&self, outcome: CallOutcome, elapsed: Duration) {
        self.count(outcome);
        self.latency.observe(elapsed.as_secs_f64());
    }

    /// Counts one call that ended without a latency worth recording (refused at once).
    pub fn count(&self, outcome: CallOutcome) {
        if let Some(c) = self.calls.get(outcome as usize) {
            c.inc();
        }
    }
}

/// A method's place in [`ServerMetrics`] ([`ServerMetrics::method_id`]): small and `Copy`,
/// so a call carries it to where it ends instead of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodId(usize);

/// The server's metrics: cheap to clone (one `Arc`), shared by the accept loop, every
/// connection and the metrics listener.
#[derive(Debug, Clone)]
pub struct ServerMetrics {
    /// Everything, shared.
    inner: Arc<Inner>,
}

/// The registry and the resolved handles.
#[derive(Debug)]
struct Inner {
    /// What `render` gathers.
    registry: Registry,
    /// `rpckit_connections_open`.
    connections_open: IntGauge,
    /// `rpckit_connections_accepted_total`.
    connections_accepted: IntCounter,
    /// `rpckit_connections_refused_total{reason}`, in [`RefusalReason`] order.
    refused: Box<[IntCounter]>,
    /// `rpckit_handshakes_total{outcome}`, in [`HandshakeOutcome`] order.
    handshakes: Box<[IntCounter]>,
    /// The method names the service declared, in `methods` order.
    method_names: Box<[&'static str]>,
    /// Per declared method.
    methods: Box<[MethodMetrics]>,
    /// For calls to a method not declared.
    other_method: MethodMetrics,
    /// `rpckit_received_bytes_total`.
    bytes_in: IntCounter,
    /// `rpckit_sent_bytes_total`.
    bytes_out: IntCounter,
    /// `rpckit_calls_in_flight`.
    calls_in_flight: IntGauge,
    /// `rpckit_queue_stalls_total`.
    queue_stalls: IntCounter,
    /// `rpckit_draining` (0 or 1).
    draining_gauge: IntGauge,
    /// What `/healthz` answers from.
    draining: AtomicBool,
}

/// Registers a new family and returns it.
fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    collector: C,
) -> Result<C, MetricsError> {
    registry.register(Box::new(collector.clone()))?;
    Ok(collector)
}

/// `Opts` for a family named `rpckit_<name>`.
fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(PREFIX)
}

/// One counter handle per label value of `values`, in order.
fn resolve(vec: &IntCounterVec, prefix: &[&str], values: &[&str]) -> Box<[IntCounter]> {
    values
        .iter()
        .map(|v| {
            let mut labels = prefix.to_vec();
            labels.push(v);
            vec.with_label_values(&labels)
        })
        .collect()
}

impl ServerMetrics {
    /// Builds every family, with one set of call handles per name in `methods` (the service's
    /// method names; calls to any other name count under [`OTHER_METHOD`]), and registers
    /// the process metrics (open descriptors, resident memory, CPU time) on Linux.
    pub fn new(methods: &[&'static str]) -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let r = &registry;
        let connections_open = register(
            r,
            IntGauge::with_opts(opts("connections_open", "Connections open now."))?,
        )?;
        let connections_accepted = register(
            r,
            IntCounter::with_opts(opts(
                "connections_accepted_total",
                "Connections accepted (before the handshake).",
            ))?,
        )?;
        let refused_vec = register(
            r,
            IntCounterVec::new(
                opts(
                    "connections_refused_total",
                    "Connections refused, by reason.",
                ),
                &["reason"],
            )?,
        )?;
        let reasons: Vec<_> = RefusalReason::ALL.iter().map(|r| r.label()).collect();
        let handshake_vec = register(
            r,
            IntCounterVec::new(
                opts("handshakes_total", "Handshakes finished, by outcome."),
                &["outcome"],
            )?,
        )?;
        let hs: Vec<_> = HandshakeOutcome::ALL.iter().map(|o| o.label()).collect();
        let calls_vec = register(
            r,
            IntCounterVec::new(
                opts("calls_total", "Calls finished, by method and outcome."),
                &["method", "outcome"],
            )?,
        )?;
        let latency_vec = register(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "call_duration_seconds",
                    "Time from reading a call to queueing its answer, by method.",
                )
                .namespace(PREFIX)
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["method"],
            )?,
        )?;
        let outcomes: Vec<_> = CallOutcome::ALL.iter().map(|o| o.label()).collect();
        let method = |name: &str| MethodMetrics {
            calls: resolve(&calls_vec, &[name], &outcomes),
            latency: latency_vec.with_label_values(&[name]),
        };
        let mut method_names: Vec<&'static str> = Vec::new();
        for name in methods {
            if *name != OTHER_METHOD && !method_names.contains(name) {
                method_names.push(name);
            }
        }
        let inner = Inner {
            refused: resolve(&refused_vec, &[], &reasons),
            handshakes: resolve(&handshake_vec, &[], &hs),
            methods: method_names.iter().map(|n| method(n)).collect(),
            other_method: method(OTHER_METHOD),
            method_names: method_names.into(),
            bytes_in: register(
                r,
                IntCounter::with_opts(opts(
                    "received_bytes_total",
                    "Bytes read from clients, frame headers included.",
                ))?,
            )?,
            bytes_out: register(
                r,
                IntCounter::with_opts(opts(
                    "sent_bytes_total",
                    "Bytes written to clients, frame headers included.",
                ))?,
            )?,
            calls_in_flight: register(
                r,
                IntGauge::with_opts(opts("calls_in_flight", "Calls read and not answered yet."))?,
            )?,
            queue_stalls: register(
                r,
                IntCounter::with_opts(opts(
                    "queue_stalls_total",
                    "Times a connection stopped reading because its answer queue was full.",
                ))?,
            )?,
            draining_gauge: register(
                r,
                IntGauge::with_opts(opts(
                    "draining",
                    "1 once the server drains for shutdown, else 0.",
                ))?,
            )?,
            connections_open,
            connections_accepted,
            registry,
            draining: AtomicBool::new(false),
        };
        super::process::register(&inner.registry)?;
        Ok(ServerMetrics {
            inner: Arc::new(inner),
        })
    }

    /// The handles for calls to `name`; a name not given to [`ServerMetrics::new`] gets those
    /// of [`OTHER_METHOD`]. Look it up once per call (a short scan of the declared names).
    pub fn method(&self, name: &str) -> &MethodMetrics {
        self.method_by_id(self.method_id(name))
    }

    /// The id of method `name` (a short scan of the declared names, which compares the
    /// pointers of `&'static str`s first), for [`ServerMetrics::method_by_id`]. A name not
    /// given to [`ServerMetrics::new`] gets the id of [`OTHER_METHOD`].
    pub fn method_id(&self, name: &str) -> MethodId {
        let names = &self.inner.method_names;
        let found = names
            .iter()
            .position(|n| std::ptr::eq(*n, name))
            .or_else(|| names.iter().position(|n| *n == name));
        MethodId(found.unwrap_or(names.len()))
    }

    /// The handles of the method with id `id` (those of [`OTHER_METHOD`] for an id of
    /// another registry's method it does not have).
    pub fn method_by_id(&self, id: MethodId) -> &MethodMetrics {
        self.inner
            .methods
            .get(id.0)
            .unwrap_or(&self.inner.other_method)
    }

    /// A connection was accepted (it is now open, not yet authenticated).
    pub fn connection_accepted(&self) {
        self.inner.connections_accepted.inc();
        self.inner.connections_open.inc();
    }

    /// An accepted connection closed, whatever the reason.
    pub fn connection_closed(&self) {
        self.inner.connections_open.dec();
    }

    /// A connection was refused before its handshake.
    pub fn connection_refused(&self, reason: RefusalReason) {
        if let Some(c) = self.inner.refused.get(reason as usize) {
            c.inc();
        }
    }

    /// A handshake ended.
    pub fn handshake(&self, outcome: HandshakeOutcome) {
        if let Some(c) = self.inner.handshakes.get(outcome as usize) {
            c.inc();
        }
    }

    /// A call was read: one more in flight until [`ServerMetrics::call_finished`].
    pub fn call_started(&self) {
        self.inner.calls_in_flight.inc();
    }

    /// A call read earlier was answered (or dropped): one fewer in flight.
    pub fn call_finished(&self) {
        self.inner.calls_in_flight.dec();
    }

    /// `n` bytes were read from a client.
    pub fn bytes_received(&self, n: u64) {
        self.inner.bytes_in.inc_by(n);
    }

    /// `n` bytes were written to a client.
    pub fn bytes_sent(&self, n: u64) {
        self.inner.bytes_out.inc_by(n);
    }

    /// A connection stopped reading because its answer queue was full.
    pub fn queue_stall(&self) {
        self.inner.queue_stalls.inc();
    }

    /// Marks the server as draining (or serving again): `/healthz` answers 503 while draining.
    pub fn set_draining(&self, draining: bool) {
        self.inner.draining.store(draining, Ordering::Relaxed);
        self.inner.draining_gauge.set(i64::from(draining));
    }

    /// Whether the server is draining.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }

    /// Every family in the Prometheus text exposition format 0.0.4 (content type
    /// [`super::CONTENT_TYPE`]).
    pub fn render(&self) -> Result<Vec<u8>, MetricsError> {
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&self.inner.registry.gather(), &mut out)?;
        Ok(out)
    }
}
