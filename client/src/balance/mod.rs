//! The servers a [`crate::Client`] sends calls to, and which one gets the next call.
//!
//! The address list (`host:port[,host:port...]`) stands for one endpoint per address; a name
//! counts once for each address it resolves to, and is resolved again every
//! [`crate::ClientConfig::resolve_interval`] (endpoints whose address stays keep their
//! connection). Each call goes to the less loaded of two endpoints picked at random ("power of
//! two choices"), the load being the calls in flight there, divided by the endpoint's share
//! while it is eased back in after a failure ([`crate::ClientConfig::slow_start`]). Ejected
//! endpoints (failed, or draining) get no calls until their backoff has passed; if every
//! endpoint is ejected, a call waits for the first to come back, within its deadline.

mod endpoint;
mod resolve;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use rpckit_proto::{KeyId, SecretKey};

use crate::config::ClientConfig;
use crate::connect::Target;

pub(crate) use endpoint::Endpoint;
pub use endpoint::{EndpointState, EndpointStats};

/// A client's endpoints, shared by every call.
pub(crate) type EndpointSet<Req, Resp> = Arc<[Arc<Endpoint<Req, Resp>>]>;

/// The endpoints of an address list, kept up to date.
#[derive(Debug)]
pub(crate) struct Balancer<Req, Resp> {
    /// The address list as given.
    pub(crate) list: String,
    /// Our key id.
    key_id: KeyId,
    /// Our key.
    key: SecretKey,
    /// Whether the list holds names (resolved, and resolved again from time to time).
    named: bool,
    /// The endpoints now, and when the list was last resolved (`None`: not yet).
    set: Mutex<(EndpointSet<Req, Resp>, Option<Instant>)>,
    /// Held while resolving, so that one caller resolves and the others go on.
    resolving: async_lock::Mutex<()>,
}

impl<Req, Resp> Balancer<Req, Resp> {
    /// The endpoints of `list`: one per numeric address at once; names wait for the first
    /// call (or [`crate::Client::connect`]) to be resolved.
    pub(crate) fn new(list: String, key_id: KeyId, key: SecretKey) -> Self {
        let named = !resolve::is_numeric(&list);
        let mut balancer = Balancer {
            list,
            key_id,
            key,
            named,
            set: Mutex::new((Arc::from(Vec::new()), None)),
            resolving: async_lock::Mutex::new(()),
        };
        let addrs = if named {
            // Until resolved: the list as given, one endpoint (never used for a call).
            vec![balancer.list.clone()]
        } else {
            resolve::numeric(&balancer.list)
        };
        let set = balancer.build(&addrs, &[]);
        balancer.set = Mutex::new((set, None));
        balancer
    }

    fn lock_set(&self) -> MutexGuard<'_, (EndpointSet<Req, Resp>, Option<Instant>)> {
        self.set.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The endpoints as they are, without resolving.
    pub(crate) fn current(&self) -> EndpointSet<Req, Resp> {
        self.lock_set().0.clone()
    }

    /// The endpoints, resolving the list first if it holds names and was never resolved, or
    /// not for `resolve_interval` (then by one caller, while the others go on with the old
    /// set).
    pub(crate) async fn endpoints(&self, config: &ClientConfig) -> EndpointSet<Req, Resp> {
        if !self.named {
            return self.current();
        }
        let (set, resolved_at) = {
            let guard = self.lock_set();
            (guard.0.clone(), guard.1)
        };
        let _resolving = match resolved_at {
            Some(at) if at.elapsed() < config.resolve_interval => return set,
            Some(_) => match self.resolving.try_lock() {
                Some(guard) => guard,
                None => return set,
            },
            None => {
                let guard = self.resolving.lock().await;
                if self.lock_set().1.is_some() {
                    return self.current();
                }
                guard
            }
        };
        let addrs = resolve::resolve(&self.list).await;
        let mut guard = self.lock_set();
        let set = self.build(&addrs, &guard.0);
        *guard = (set.clone(), Some(Instant::now()));
        set
    }

    /// The endpoints for `addrs`, keeping those of `old` whose address stays.
    fn build(&self, addrs: &[String], old: &[Arc<Endpoint<Req, Resp>>]) -> EndpointSet<Req, Resp> {
        addrs
            .iter()
            .map(|addr| match old.iter().find(|e| &e.target.addr == addr) {
                Some(kept) => kept.clone(),
                None => Arc::new(Endpoint::new(Target {
                    addr: addr.clone(),
                    key_id: self.key_id.clone(),
                    key: self.key.clone(),
                })),
            })
            .collect()
    }
}

/// The endpoint of `set` (two or more) the next call goes to: the less loaded of two picked
/// at random among those not ejected (an endpoint whose connection no longer takes calls is
/// ejected on the way); if every one is ejected, `Err` with when the first comes back.
pub(crate) fn pick<Req, Resp>(
    set: &[Arc<Endpoint<Req, Resp>>],
    config: &ClientConfig,
) -> Result<Arc<Endpoint<Req, Resp>>, Instant> {
    let now = Instant::now();
    let open = |e: &Endpoint<Req, Resp>| {
        if e.ejected_until(now).is_some() {
            return false;
        }
        if e.holds_unusable() {
            // Dead, or its server is going away: no new calls there for a while.
            e.eject(config, now);
            return false;
        }
        true
    };
    let load =
        |e: &Endpoint<Req, Resp>| (e.in_flight() as f64 + 1.0) / e.weight(now, config.slow_start);
    let n = set.len();
    if n < 2 {
        return set.first().cloned().ok_or(now);
    }
    let a = rand::random_range(0..n);
    let b = (a + 1 + rand::random_range(0..n - 1)) % n;
    let (Some(first), Some(second)) = (set.get(a), set.get(b)) else {
        return Err(now);
    };
    match (open(first), open(second)) {
        (true, true) => Ok(if load(second) < load(first) {
            second.clone()
        } else {
            first.clone()
        }),
        (true, false) => Ok(first.clone()),
        (false, true) => Ok(second.clone()),
        (false, false) => {
            let best = set
                .iter()
                .filter(|e| open(e))
                .min_by(|x, y| load(x).total_cmp(&load(y)));
            match best {
                Some(e) => Ok(e.clone()),
                None => Err(set
                    .iter()
                    .filter_map(|e| e.ejected_until(now))
                    .min()
                    .unwrap_or(now)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn endpoints(n: usize) -> Vec<Arc<Endpoint<(), ()>>> {
        let balancer: Balancer<(), ()> = Balancer::new(
            (1..=n)
                .map(|p| format!("127.0.0.1:{p}"))
                .collect::<Vec<_>>()
                .join(","),
            KeyId::new("pick").unwrap(),
            SecretKey::new(vec![1; 32]).unwrap(),
        );
        balancer.current().to_vec()
    }

    #[test]
    fn the_less_loaded_of_two_wins_and_ejected_ones_get_nothing() {
        let config = ClientConfig::default();
        let set = endpoints(2);
        let _busy: Vec<_> = (0..3).map(|_| set[0].begin()).collect();
        for _ in 0..100 {
            let picked = pick(&set, &config).unwrap();
            assert!(Arc::ptr_eq(&picked, &set[1]));
        }
        // Ejected as if an hour from now, so that the backoff cannot pass during the test.
        let later = Instant::now() + Duration::from_secs(3600);
        set[1].eject(&config, later);
        assert!(Arc::ptr_eq(&pick(&set, &config).unwrap(), &set[0]));
        set[0].eject(&config, later);
        let back = pick(&set, &config).unwrap_err();
        assert!(back > later && back <= later + config.reconnect_initial_backoff);
        assert_eq!(
            set[0].stats(Instant::now(), config.slow_start).state,
            EndpointState::Ejected
        );
    }

    #[test]
    fn picks_spread_over_idle_endpoints() {
        let config = ClientConfig::default();
        let set = endpoints(3);
        let mut counts = [0u32; 3];
        for _ in 0..3000 {
            let picked = pick(&set, &config).unwrap();
            let i = set.iter().position(|e| Arc::ptr_eq(e, &picked)).unwrap();
            counts[i] += 1;
        }
        assert!(
            counts.iter().all(|&c| (700..=1300).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn an_endpoint_back_after_a_failure_is_eased_in() {
        let config = ClientConfig::default();
        let set = endpoints(1);
        let e = &set[0];
        let t0 = Instant::now();
        assert_eq!(e.weight(t0, config.slow_start), 1.0);
        e.eject(&config, t0);
        assert_eq!(e.weight(t0, config.slow_start), 0.1, "being tried again");
        e.connected(t0);
        assert_eq!(e.weight(t0, config.slow_start), 0.1);
        let half = e.weight(t0 + config.slow_start / 2, config.slow_start);
        assert!((half - 0.5).abs() < 1e-9, "{half}");
        assert_eq!(e.weight(t0 + config.slow_start, config.slow_start), 1.0);
        assert_eq!(
            e.stats(t0, config.slow_start).state,
            EndpointState::Recovering
        );
        assert_eq!(e.weight(t0, Duration::ZERO), 1.0);
    }
}
