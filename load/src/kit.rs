//! The rpckit driver of the benchmark engine: each benchmark connection is one
//! [`rpckit_client::Client`] (handshake included), shared by `depth` tasks that multiplex their calls
//! over it, calling the demo service's `Uppercase` or `Echo` and checking every answer.
//!
//! For an idle run ([`Driver::prepare_idle`]) the clients' keepalive interval is stretched
//! past the hold, so that they send nothing while held. With
//! [`KitDriver::pipeline_first_call`] each client connects on its first call, which travels
//! with the handshake. With [`KitDriver::balance_over`] each benchmark connection is a client
//! of several servers instead, balancing its calls over them; [`KitDriver::endpoint_tally`]
//! then sums the calls each endpoint got.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpckit_proto::demo::{Request, Response};
use rpckit_proto::{KeyId, SecretKey, Suite};

use crate::{BenchError, Connection, Driver};
use rpckit_client::{CallError, Client, ClientConfig, ConnectError};

/// Connects benchmark connections with the rpckit client.
#[derive(Debug, Clone)]
pub struct KitDriver {
    /// `uppercase` or `echo`.
    method: String,
    /// Key id to authenticate with.
    key_id: KeyId,
    /// Its secret.
    key: SecretKey,
    /// Keepalive interval of the clients; `None` keeps the client default (30 s). Set by
    /// [`Driver::prepare_idle`] so that an idle hold stays silent.
    keepalive_interval: Option<Duration>,
    /// Whether each connection's first call travels with the handshake (the connection then
    /// opens on that call).
    pipeline: bool,
    /// The suite the clients offer.
    suite: Suite,
    /// Whether each connection makes one call and closes (`--churn`).
    churn: bool,
    /// Several servers (`host:port,host:port,...`) each connection balances over, in place of
    /// the one address the engine gives.
    balance: Option<String>,
    /// Calls per endpoint of the connections closed so far.
    tally: EndpointTally,
}

/// Calls per endpoint address, summed over a driver's connections as they are dropped.
#[derive(Debug, Clone, Default)]
pub struct EndpointTally(Arc<Mutex<BTreeMap<String, u64>>>);

impl EndpointTally {
    /// The calls each endpoint got so far, by address.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Adds what `client`'s endpoints did.
    fn add(&self, client: &Client<Request, Response>) {
        let mut tally = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for endpoint in client.endpoint_stats() {
            *tally.entry(endpoint.addr).or_default() += endpoint.calls;
        }
    }
}

/// Idle mode: how much longer than the hold the clients wait before their first keepalive ping.
pub const IDLE_KEEPALIVE_MARGIN: Duration = Duration::from_secs(60);

impl KitDriver {
    /// A driver calling `method` (`uppercase` or `echo`) with the given credentials.
    pub fn new(method: &str, key_id: KeyId, key: SecretKey) -> Self {
        KitDriver {
            method: method.to_owned(),
            key_id,
            key,
            keepalive_interval: None,
            pipeline: false,
            suite: ClientConfig::default().suite,
            churn: false,
            balance: None,
            tally: EndpointTally::default(),
        }
    }

    /// With `on`, each connection makes one call and closes (`--churn`): it then connects
    /// on that call, which under an encrypting suite rides with the handshake's proof once the
    /// server has proven the key (the client's default).
    pub fn churn(mut self, on: bool) -> Self {
        self.churn = on;
        self
    }

    /// The suite the clients offer (default: the client's, an encrypting suite).
    pub fn suite(mut self, suite: Suite) -> Self {
        self.suite = suite;
        self
    }

    /// Each connection is a client of every server in `list` (`host:port,host:port,...`),
    /// balancing its calls over them, whatever address the engine gives.
    pub fn balance_over(mut self, list: &str) -> Self {
        self.balance = Some(list.to_owned());
        self
    }

    /// The calls each endpoint got, summed over the connections as they are dropped (after
    /// a run, every connection's).
    pub fn endpoint_tally(&self) -> EndpointTally {
        self.tally.clone()
    }

    /// With `on`, each connection opens on its first call, which travels with the handshake's
    /// proof ([`ClientConfig::pipeline_first_call`]): one round trip less per connection.
    pub fn pipeline_first_call(mut self, on: bool) -> Self {
        self.pipeline = on;
        self
    }

    /// The keepalive interval the clients will use (the client default unless an idle run
    /// stretched it).
    pub fn keepalive_interval(&self) -> Duration {
        self.keepalive_interval
            .unwrap_or_else(|| ClientConfig::default().keepalive_interval)
    }
}

/// One benchmark connection: a client and the method it calls.
#[derive(Debug)]
pub struct KitConnection {
    client: Client<Request, Response>,
    echo: bool,
    /// Where its calls per endpoint go when it is dropped.
    tally: EndpointTally,
}

impl Drop for KitConnection {
    fn drop(&mut self) {
        self.tally.add(&self.client);
    }
}

fn connect_error(e: &ConnectError) -> BenchError {
    let kind = match e {
        ConnectError::Io { source, .. } => format!("connect:{:?}", source.kind()),
        ConnectError::Timeout { .. } => "connect_timeout".into(),
        ConnectError::Auth(_) => "auth".into(),
        ConnectError::Handshake(_) => "handshake".into(),
        ConnectError::GaveUp { last, .. } => return connect_error(last),
        _ => "connect".into(),
    };
    BenchError::new(kind, e.to_string()).no_connection()
}

fn call_error(e: &CallError) -> BenchError {
    let kind = match e {
        CallError::Rpc(rpc) => format!("rpc:{}", rpc_kind(rpc)),
        CallError::Timeout(_) => "timeout".into(),
        CallError::OutcomeUnknown(_) => "outcome_unknown".into(),
        CallError::Connect(c) => return connect_error(c),
        CallError::Decode(_) => "decode".into(),
        CallError::Encode(_) => "encode".into(),
        _ => "call".into(),
    };
    BenchError::new(kind, e.to_string())
}

fn rpc_kind(e: &rpckit_proto::RpcError) -> &'static str {
    use rpckit_proto::RpcError::*;
    match e {
        UnknownMethod(_) => "unknown_method",
        DeadlineExceeded => "deadline_exceeded",
        Overloaded => "overloaded",
        ShuttingDown => "shutting_down",
        Unauthenticated => "unauthenticated",
        Cancelled => "cancelled",
        Application(_) => "application",
        Internal(_) => "internal",
        _ => "other",
    }
}

impl Driver for KitDriver {
    type Conn = KitConnection;

    fn name(&self) -> &str {
        "rpckit"
    }

    fn connect(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = Result<KitConnection, BenchError>> + Send {
        let config = {
            let mut client_config = ClientConfig::default();
            // The engine reconnects by itself after a failure; keep the two apart.
            client_config.call_timeout = Some(Duration::from_secs(30));
            client_config.reconnect_attempts = 0;
            client_config.keepalive_interval = self.keepalive_interval();
            client_config.pipeline_first_call = self.pipeline;
            client_config.suite = self.suite;
            client_config
        };
        let (key_id, key) = (self.key_id.clone(), self.key.clone());
        let echo = self.method == "echo";
        // Connects on the first call: with `--pipeline-first-call`, or for a churn loop under
        // an encrypting suite, where the client's default lets that call ride with the proof
        // once the server has proven the key to this process (every connection but the
        // first). Otherwise connects before the run, as a long-lived client does.
        let lazy = self.pipeline || (self.churn && self.suite.is_encrypted());
        let addr = self.balance.clone().unwrap_or_else(|| addr.to_string());
        let tally = self.tally.clone();
        async move {
            let client = if lazy {
                Client::lazy(addr, key_id, key, config)
            } else {
                Client::connect(addr, key_id, key, config)
                    .await
                    .map_err(|e| connect_error(&e))?
            };
            Ok(KitConnection {
                client,
                echo,
                tally,
            })
        }
    }

    fn prepare_idle(&mut self, hold: Duration) {
        let stretched = hold.saturating_add(IDLE_KEEPALIVE_MARGIN);
        self.keepalive_interval = Some(stretched.max(self.keepalive_interval()));
    }
}

impl Connection for KitConnection {
    fn is_alive(&self) -> bool {
        self.client.is_connected()
    }

    async fn close(self) {
        self.client.close().await;
    }

    async fn call<'a>(&'a self, payload: &'a [u8]) -> Result<usize, BenchError> {
        if self.echo {
            match self.client.call(Request::Echo(payload.to_vec())).await {
                Ok(Response::Echo(bytes)) if bytes == payload => Ok(bytes.len()),
                Ok(_) => Err(BenchError::new(
                    "wrong_answer",
                    "echo answer differs from the request",
                )),
                Err(e) => Err(call_error(&e)),
            }
        } else {
            let text = std::str::from_utf8(payload)
                .map_err(|_| BenchError::new("invalid_payload", "uppercase needs UTF-8"))?;
            match self.client.call(Request::Uppercase(text.to_owned())).await {
                Ok(Response::Uppercase(upper))
                    if upper.len() == text.len()
                        && upper
                            .bytes()
                            .zip(text.bytes())
                            .all(|(u, t)| u == t.to_ascii_uppercase()) =>
                {
                    Ok(upper.len())
                }
                Ok(_) => Err(BenchError::new("wrong_answer", "uppercase answer is wrong")),
                Err(e) => Err(call_error(&e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_stretches_keepalive_past_the_hold() {
        let id = KeyId::new("bench").unwrap();
        let key = SecretKey::from_hex(&"ab".repeat(32)).unwrap();
        let mut d = KitDriver::new("uppercase", id, key);
        assert_eq!(
            d.keepalive_interval(),
            ClientConfig::default().keepalive_interval
        );
        d.prepare_idle(Duration::from_secs(5));
        assert!(d.keepalive_interval() >= Duration::from_secs(65));
        d.prepare_idle(Duration::from_secs(600));
        assert_eq!(d.keepalive_interval(), Duration::from_secs(660));
    }
}
