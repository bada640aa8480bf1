//! The rpckit driver of the benchmark engine: each benchmark connection is one
//! [`crate::Client`] (handshake included), shared by `depth` tasks that multiplex their calls
//! over it, calling the demo service's `Uppercase` or `Echo` and checking every answer.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use rpckit_proto::demo::{Request, Response};
use rpckit_proto::{KeyId, SecretKey};

use super::{BenchError, Connection, Driver};
use crate::{CallError, Client, ClientConfig, ConnectError};

/// Connects benchmark connections with the rpckit client.
#[derive(Debug, Clone)]
pub struct KitDriver {
    /// `uppercase` or `echo`.
    method: String,
    /// Key id to authenticate with.
    key_id: KeyId,
    /// Its secret.
    key: SecretKey,
}

impl KitDriver {
    /// A driver calling `method` (`uppercase` or `echo`) with the given credentials.
    pub fn new(method: &str, key_id: KeyId, key: SecretKey) -> Self {
        KitDriver {
            method: method.to_owned(),
            key_id,
            key,
        }
    }
}

/// One benchmark connection: a client and the method it calls.
#[derive(Debug)]
pub struct KitConnection {
    client: Client<Request, Response>,
    echo: bool,
}

fn connect_error(e: &ConnectError) -> BenchError {
    let kind = match e {
        ConnectError::Io { source, .. } => format!("connect:{:?}", source.kind()),
        ConnectError::Timeout { .. } => "connect_timeout".into(),
        ConnectError::Auth(_) => "auth".into(),
        ConnectError::Handshake(_) => "handshake".into(),
        _ => "connect".into(),
    };
    BenchError::new(kind, e.to_string())
}

fn call_error(e: &CallError) -> BenchError {
    let kind = match e {
        CallError::Rpc(rpc) => format!("rpc:{}", rpc_kind(rpc)),
        CallError::Timeout(_) => "timeout".into(),
        CallError::OutcomeUnknown(_) => "outcome_unknown".into(),
        CallError::Connect(c) => return connect_error(c),
        CallError::Decode(_) => "decode".into(),
        CallError::Encode(_) => "encode".into(),
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
        let config = ClientConfig {
            call_timeout: Some(Duration::from_secs(30)),
            // The engine reconnects by itself after a failure; keep the two apart.
            reconnect_attempts: 0,
            ..ClientConfig::default()
        };
        let (key_id, key) = (self.key_id.clone(), self.key.clone());
        let echo = self.method == "echo";
        async move {
            let client = Client::connect(addr.to_string(), key_id, key, config)
                .await
                .map_err(|e| connect_error(&e))?;
            Ok(KitConnection { client, echo })
        }
    }
}

impl Connection for KitConnection {
    fn call<'a>(
        &'a self,
        payload: &'a [u8],
    ) -> impl Future<Output = Result<usize, BenchError>> + Send + 'a {
        async move {
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
}
