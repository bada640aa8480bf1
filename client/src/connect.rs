//! Making a connection: TCP connect within the connect timeout, then the handshake (the
//! server proves it holds the key too), then the connection's task starts. With
//! [`open_with_call`] the first call rides in the same write as the handshake's proof.

use std::time::Duration;

use futures_channel::oneshot;
use rpckit_proto::handshake::{self, HandshakeConfig};
use rpckit_proto::{
    ClientMessage, HandshakeError, KeyId, SecretKey, Session, SessionWriter, SocketReader,
    SuitePolicy, TcpSocket,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::calls::{Calls, Outcome, Pending};
use crate::config::ClientConfig;
use crate::connection::Connection;
use crate::deadline::{self, Deadline};
use crate::error::{CallError, ConnectError};
use crate::proven;

/// Where to connect, and as whom.
#[derive(Debug)]
pub(crate) struct Target {
    /// `host:port`.
    pub(crate) addr: String,
    /// Our key id.
    pub(crate) key_id: KeyId,
    /// Our key.
    pub(crate) key: SecretKey,
}

/// Why [`open_with_call`] failed, and what became of its call.
#[derive(Debug)]
pub(crate) enum OpenFailure<Req> {
    /// The call never left this process; here is its request back.
    NotSent(ConnectError, Req),
    /// The call left with the proof and the handshake failed after that: the server may have
    /// run it. A refusal or a bad server proof does not say otherwise, since nothing
    /// authenticates them: a relay can pass the call to the real server and forge either
    /// (PROTOCOL.md §3.5, §13).
    OutcomeUnknown(ConnectError),
}

/// The call that [`open_with_call`] sent with the handshake.
#[derive(Debug)]
pub(crate) struct FirstCall<Req, Resp> {
    /// Its id.
    pub(crate) id: u64,
    /// Where its outcome arrives.
    pub(crate) answer: oneshot::Receiver<Outcome<Req, Resp>>,
}

/// Connects and authenticates, and starts the connection's task.
pub(crate) async fn open<Req, Resp>(
    target: &Target,
    config: &ClientConfig,
) -> Result<Connection<Req, Resp>, ConnectError>
where
    Req: Serialize + Send + 'static,
    Resp: DeserializeOwned + Send + 'static,
{
    let socket = connect_within(&target.addr, config.connect_timeout).await?;
    let (session, ()) = authenticate(&socket, target, config, |_| ())
        .await
        .map_err(|e| handshake_error(&target.addr, e))?;
    Ok(start(&socket, session, Calls::new(), 1, config))
}

/// Runs the handshake on `socket` (`first` may queue frames behind the proof), and notes
/// whether the server proved the key to this process ([`proven`]).
async fn authenticate<'a, T>(
    socket: &'a TcpSocket,
    target: &Target,
    config: &ClientConfig,
    first: impl FnOnce(&mut SessionWriter<&'a TcpSocket>) -> T,
) -> Result<(Session<SocketReader, &'a TcpSocket>, T), HandshakeError> {
    let handshake = handshake::connect_with_policy(
        socket.reader(),
        socket,
        &target.key_id,
        &target.key,
        &handshake_config(config),
        &suite_policy(config),
        first,
    )
    .await;
    match &handshake {
        Ok(_) => proven::note(target, config.suite),
        Err(_) => proven::forget(target, config.suite),
    }
    handshake
}

/// Connects and authenticates like [`open`], sending `request` in the same write as the
/// handshake's proof (PROTOCOL.md §3.5), so that it costs no round trip of its own. The call
/// leaves before the server has proven that it holds the key: see
/// [`ClientConfig::pipeline_first_call`]. A request that cannot be encoded is not sent: the
/// connection is made without it and the call's outcome is [`CallError::Encode`].
pub(crate) async fn open_with_call<Req, Resp>(
    target: &Target,
    config: &ClientConfig,
    request: Req,
    deadline: Option<Deadline>,
) -> Result<
    (
        Connection<Req, Resp>,
        Result<FirstCall<Req, Resp>, CallError>,
    ),
    OpenFailure<Req>,
>
where
    Req: Serialize + Send + 'static,
    Resp: DeserializeOwned + Send + 'static,
{
    const ID: u64 = 1;
    let socket = match connect_within(&target.addr, config.connect_timeout).await {
        Ok(socket) => socket,
        Err(error) => return Err(OpenFailure::NotSent(error, request)),
    };
    // Set when the handshake queues the call behind its proof (just before writing it).
    let mut handed = false;
    let handshake = authenticate(&socket, target, config, |w| {
        let pushed = w.push_client(&ClientMessage::Call {
            id: ID,
            deadline: deadline.map(|d| d.left),
            request: &request,
        });
        // Not encodable (too large, say): nothing of it goes out.
        handed = pushed.is_ok();
        pushed
    })
    .await;
    let (session, pushed) = match handshake {
        Ok(done) => done,
        Err(e) => {
            let failed = handshake_error(&target.addr, e);
            return Err(if handed {
                // Handed to the socket: a genuine server may have run it, whatever came back.
                OpenFailure::OutcomeUnknown(failed)
            } else {
                OpenFailure::NotSent(failed, request)
            });
        }
    };
    let mut calls = Calls::new();
    let (reply, answer) = oneshot::channel();
    let encode_error = match pushed {
        Ok(()) => {
            let written = true;
            calls.insert(
                ID,
                Pending {
                    reply,
                    request,
                    written,
                    deadline,
                },
            );
            None
        }
        Err(rpckit_proto::SessionError::Encode(e)) => Some(CallError::Encode(e)),
        // Not possible on a new session (sequence number 0); nothing was sent.
        Err(_) => return Err(OpenFailure::NotSent(ConnectError::Closed, request)),
    };
    let connection = start(&socket, session, calls, ID + 1, config);
    let first = match encode_error {
        Some(e) => Err(e),
        None => Ok(FirstCall { id: ID, answer }),
    };
    Ok((connection, first))
}

/// Starts the task of an authenticated session.
fn start<Req, Resp>(
    socket: &TcpSocket,
    session: Session<SocketReader, &TcpSocket>,
    calls: Calls<Req, Resp>,
    next_id: u64,
    config: &ClientConfig,
) -> Connection<Req, Resp>
where
    Req: Serialize + Send + 'static,
    Resp: DeserializeOwned + Send + 'static,
{
    let (reader, writer) = session.split();
    let (sealer, _, unwritten) = writer.into_parts();
    Connection::start(
        socket.clone(),
        reader,
        sealer,
        unwritten,
        calls,
        next_id,
        config,
    )
}

/// The suite the client offers (and never falls back from).
fn suite_policy(config: &ClientConfig) -> SuitePolicy {
    SuitePolicy {
        offer: config.suite,
        ..SuitePolicy::default()
    }
}

/// The handshake's limits from the client's settings.
fn handshake_config(config: &ClientConfig) -> HandshakeConfig {
    let mut handshake_config = HandshakeConfig::default();
    handshake_config.timeout = config.handshake_timeout;
    handshake_config.max_frame = config.max_frame;
    handshake_config
}

/// Connects to `addr` within `timeout`.
async fn connect_within(addr: &str, timeout: Duration) -> Result<TcpSocket, ConnectError> {
    match deadline::within(timeout, connect(addr)).await {
        Some(connected) => connected.map_err(|source| ConnectError::Io {
            addr: addr.to_owned(),
            source,
        }),
        None => Err(ConnectError::Timeout {
            addr: addr.to_owned(),
            after: timeout,
        }),
    }
}

/// The [`ConnectError`] for a failed handshake with `addr`.
fn handshake_error(addr: &str, e: HandshakeError) -> ConnectError {
    match e {
        HandshakeError::Timeout(after) => ConnectError::Timeout {
            addr: addr.to_owned(),
            after,
        },
        HandshakeError::Io(source) => ConnectError::Io {
            addr: addr.to_owned(),
            source,
        },
        e if e.is_auth_failure() => ConnectError::Auth(e),
        e => ConnectError::Handshake(e),
    }
}

/// Resolves `addr` (`host:port`) and connects to the first address that answers.
async fn connect(addr: &str) -> std::io::Result<TcpSocket> {
    // A numeric address needs no resolver (which would hop to a blocking thread).
    if let Ok(numeric) = addr.parse::<std::net::SocketAddr>() {
        return TcpSocket::connect(numeric).await;
    }
    let mut last = None;
    for candidate in async_std::net::ToSocketAddrs::to_socket_addrs(addr).await? {
        match TcpSocket::connect(candidate).await {
            Ok(socket) => return Ok(socket),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the address resolved to nothing",
        )
    }))
}
