//! Messages carried inside authenticated frames: the envelope (call id, deadline, control
//! messages) and the typed errors that travel on the wire.
//!
//! A frame's payload is an envelope header, bincode-encoded, followed — for a call or a
//! successful reply only — by the body: the bincode encoding of the service's own request or
//! response enum. The header is decoded first, so a body this side cannot decode (say, a newer
//! client's new method) is answered with an error for that call id instead of a dropped
//! connection.
//!
//! Everything here is generic over the service's `Req`/`Resp` types: a user of the kit brings
//! their own serde enums and gets the same framing, ids and errors.
//!
//! Wire compatibility: variants are only ever added at the end of each enum.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError, EncodeError};

/// An error that travels on the wire in answer to one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The server could not decode the request body: an unknown method (for example one that
    /// only a newer server has) or malformed arguments. Variant index 0.
    #[error("unknown method or undecodable request: {0}")]
    UnknownMethod(String),
    /// The call's deadline passed before the handler finished. Variant index 1.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// The server refused the call because too many calls are in flight. Variant index 2.
    #[error("server overloaded: too many calls in flight")]
    Overloaded,
    /// The server is draining and accepts no new calls. Variant index 3.
    #[error("server is shutting down")]
    ShuttingDown,
    /// The call arrived on a connection that is not authenticated. Variant index 4.
    #[error("not authenticated")]
    Unauthenticated,
    /// The call was cancelled by the client before it finished. Variant index 5.
    #[error("call cancelled")]
    Cancelled,
    /// The handler itself failed; the message is the application's. Variant index 6.
    #[error("application error: {0}")]
    Application(String),
    /// The server failed while handling the call (for example the handler panicked). Index 7.
    #[error("internal server error: {0}")]
    Internal(String),
    /// The call broke a protocol rule (for example it reused an id still in flight). Index 8.
    #[error("protocol violation: {0}")]
    Protocol(String),
}

/// The envelope header of a message from client to server.
///
/// Variant indices (bincode `u32`): `Call` 0, `Cancel` 1, `Ping` 2, `Pong` 3, `Goodbye` 4.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientHeader {
    /// A call; the request body follows the header in the same frame.
    Call {
        /// Chosen by the client, unique among its calls in flight on this connection.
        id: u64,
        /// Time the client will wait, in milliseconds, counted from when the server reads the
        /// call (relative, so clock skew does not matter). `None`: no deadline.
        deadline_ms: Option<u64>,
    },
    /// The client no longer wants the answer to call `id`; the server stops its handler.
    Cancel {
        /// The call to cancel.
        id: u64,
    },
    /// Keepalive probe; the server answers `Pong` with the same value.
    Ping {
        /// Echoed back.
        nonce: u64,
    },
    /// Answer to the server's `Ping`.
    Pong {
        /// The value of the ping.
        nonce: u64,
    },
    /// The client is closing the connection deliberately (authenticated, unlike a TCP FIN).
    Goodbye,
}

/// The envelope header of a message from server to client.
///
/// Variant indices (bincode `u32`): `Reply` 0, `Error` 1, `Ping` 2, `Pong` 3, `GoingAway` 4,
/// `Goodbye` 5.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerHeader {
    /// A successful reply to call `id`; the response body follows the header.
    Reply {
        /// The call answered.
        id: u64,
    },
    /// Call `id` failed; no body follows.
    Error {
        /// The call answered.
        id: u64,
        /// Why.
        error: RpcError,
    },
    /// Keepalive probe; the client answers `Pong` with the same value.
    Ping {
        /// Echoed back.
        nonce: u64,
    },
    /// Answer to the client's `Ping`.
    Pong {
        /// The value of the ping.
        nonce: u64,
    },
    /// The server is shutting down: it accepts no new calls on this connection, finishes the
    /// calls in flight within `grace_ms`, then says `Goodbye`.
    GoingAway {
        /// How long calls in flight still have, in milliseconds.
        grace_ms: u64,
    },
    /// The server is closing the connection deliberately.
    Goodbye,
}

/// A message from client to server, typed with the service's request type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage<Req> {
    /// A call.
    Call {
        /// Call id.
        id: u64,
        /// Relative deadline, if any.
        deadline: Option<Duration>,
        /// The request. When decoding, an undecodable body is `Err` here while the id is kept.
        request: Req,
    },
    /// Cancel call `id`.
    Cancel {
        /// Call id.
        id: u64,
    },
    /// Keepalive probe.
    Ping {
        /// Echoed back.
        nonce: u64,
    },
    /// Keepalive answer.
    Pong {
        /// The ping's value.
        nonce: u64,
    },
    /// Deliberate close.
    Goodbye,
}

/// A message from server to client, typed with the service's response type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMessage<Resp> {
    /// The outcome of call `id`.
    Reply {
        /// Call id.
        id: u64,
        /// The response, or the error the server sent.
        result: Result<Resp, RpcError>,
    },
    /// Keepalive probe.
    Ping {
        /// Echoed back.
        nonce: u64,
    },
    /// Keepalive answer.
    Pong {
        /// The ping's value.
        nonce: u64,
    },
    /// The server is draining; see [`ServerHeader::GoingAway`].
    GoingAway {
        /// Time left for calls in flight.
        grace: Duration,
    },
    /// Deliberate close.
    Goodbye,
}

impl<Resp> ServerMessage<Resp> {
    /// The same message with the response of a successful reply passed through `f`; other
    /// messages, and replies that carry an error, are unchanged. With [`decode_server`], whose
    /// replies hold each body's own decoding result, this is how a reader that wants bodies
    /// decoded (or fails otherwise) gets a `ServerMessage<Resp>`:
    ///
    /// ```
    /// use rpckit_proto::demo::Response;
    /// use rpckit_proto::message::{decode_server, encode_server};
    /// use rpckit_proto::ServerMessage;
    ///
    /// let sent = ServerMessage::Reply { id: 1, result: Ok(Response::Pong) };
    /// let mut payload = Vec::new();
    /// encode_server(&mut payload, &sent, 1 << 20).unwrap();
    /// let got = decode_server::<Response>(&payload)
    ///     .unwrap()
    ///     .map_response(|body| body.expect("decodable response"));
    /// assert_eq!(got, sent);
    /// ```
    pub fn map_response<T>(self, f: impl FnOnce(Resp) -> T) -> ServerMessage<T> {
        match self {
            ServerMessage::Reply { id, result } => ServerMessage::Reply {
                id,
                result: result.map(f),
            },
            ServerMessage::Ping { nonce } => ServerMessage::Ping { nonce },
            ServerMessage::Pong { nonce } => ServerMessage::Pong { nonce },
            ServerMessage::GoingAway { grace } => ServerMessage::GoingAway { grace },
            ServerMessage::Goodbye => ServerMessage::Goodbye,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Appends the payload of `msg` (header, then body for a call) to `out`, within `limit` bytes.
pub fn encode_client<Req: Serialize>(
    out: &mut Vec<u8>,
    msg: &ClientMessage<Req>,
    limit: u64,
) -> Result<(), EncodeError> {
    let header = match msg {
        ClientMessage::Call { id, deadline, .. } => ClientHeader::Call {
            id: *id,
            deadline_ms: deadline.map(millis),
        },
        ClientMessage::Cancel { id } => ClientHeader::Cancel { id: *id },
        ClientMessage::Ping { nonce } => ClientHeader::Ping { nonce: *nonce },
        ClientMessage::Pong { nonce } => ClientHeader::Pong { nonce: *nonce },
        ClientMessage::Goodbye => ClientHeader::Goodbye,
    };
    let body = match msg {
        ClientMessage::Call { request, .. } => Some(request),
        _ => None,
    };
    encode_envelope(out, &header, body, limit)
}

/// Appends the payload of `msg` (header, then body for a successful reply) to `out`, within
/// `limit` bytes.
pub fn encode_server<Resp: Serialize>(
    out: &mut Vec<u8>,
    msg: &ServerMessage<Resp>,
    limit: u64,
) -> Result<(), EncodeError> {
    let header = match msg {
        ServerMessage::Reply { id, result: Ok(_) } => ServerHeader::Reply { id: *id },
        ServerMessage::Reply { id, result: Err(e) } => ServerHeader::Error {
            id: *id,
            error: e.clone(),
        },
        ServerMessage::Ping { nonce } => ServerHeader::Ping { nonce: *nonce },
        ServerMessage::Pong { nonce } => ServerHeader::Pong { nonce: *nonce },
        ServerMessage::GoingAway { grace } => ServerHeader::GoingAway {
            grace_ms: millis(*grace),
        },
        ServerMessage::Goodbye => ServerHeader::Goodbye,
    };
    let body = match msg {
        ServerMessage::Reply {
            result: Ok(body), ..
        } => Some(body),
        _ => None,
    };
    encode_envelope(out, &header, body, limit)
}

/// Appends `header` and then, if there is one, `body`, within `limit` bytes in all; on error
/// `out` is left as it was.
fn encode_envelope<H: Serialize, B: Serialize>(
    out: &mut Vec<u8>,
    header: &H,
    body: Option<&B>,
    limit: u64,
) -> Result<(), EncodeError> {
    let start = out.len();
    codec::encode_into(out, header, limit)?;
    if let Some(body) = body {
        let used = (out.len() - start) as u64;
        if let Err(e) = codec::encode_into(out, body, limit.saturating_sub(used)) {
            out.truncate(start);
            return Err(e);
        }
    }
    Ok(())
}

/// Decodes a client message. The outer error means the envelope itself is undecodable (the
/// connection cannot go on); an undecodable request body is the inner `Err` of `request`, so
/// the call can be answered with [`RpcError::UnknownMethod`] for its id.
pub fn decode_client<Req: DeserializeOwned>(
    payload: &[u8],
) -> Result<ClientMessage<Result<Req, DecodeError>>, DecodeError> {
    let (header, body) = codec::decode_prefix::<ClientHeader>(payload)?;
    let no_body = |msg| without_body(body, msg);
    match header {
        ClientHeader::Call { id, deadline_ms } => Ok(ClientMessage::Call {
            id,
            deadline: deadline_ms.map(Duration::from_millis),
            request: codec::decode(body),
        }),
        ClientHeader::Cancel { id } => no_body(ClientMessage::Cancel { id }),
        ClientHeader::Ping { nonce } => no_body(ClientMessage::Ping { nonce }),
        ClientHeader::Pong { nonce } => no_body(ClientMessage::Pong { nonce }),
        ClientHeader::Goodbye => no_body(ClientMessage::Goodbye),
    }
}

/// Decodes a server message. The outer error means the envelope is undecodable; a response
/// body this client cannot decode is the inner `Err` of the reply's `Ok` value.
#[allow(clippy::type_complexity)]
pub fn decode_server<Resp: DeserializeOwned>(
    payload: &[u8],
) -> Result<ServerMessage<Result<Resp, DecodeError>>, DecodeError> {
    let (header, body) = codec::decode_prefix::<ServerHeader>(payload)?;
    let no_body = |msg| without_body(body, msg);
    match header {
        ServerHeader::Reply { id } => Ok(ServerMessage::Reply {
            id,
            result: Ok(codec::decode(body)),
        }),
        ServerHeader::Error { id, error } => no_body(ServerMessage::Reply {
            id,
            result: Err(error),
        }),
        ServerHeader::Ping { nonce } => no_body(ServerMessage::Ping { nonce }),
        ServerHeader::Pong { nonce } => no_body(ServerMessage::Pong { nonce }),
        ServerHeader::GoingAway { grace_ms } => no_body(ServerMessage::GoingAway {
            grace: Duration::from_millis(grace_ms),
        }),
        ServerHeader::Goodbye => no_body(ServerMessage::Goodbye),
    }
}

/// `msg`, if nothing follows its header (only calls and successful replies carry a body).
fn without_body<M>(body: &[u8], msg: M) -> Result<M, DecodeError> {
    if body.is_empty() {
        Ok(msg)
    } else {
        Err(DecodeError::from(Box::new(bincode::ErrorKind::Custom(
            "trailing bytes after a message that has no body".into(),
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::{Request, Response};

    #[test]
    fn call_round_trip() {
        let msg = ClientMessage::Call {
            id: 42,
            deadline: Some(Duration::from_millis(1500)),
            request: Request::Uppercase("hello".into()),
        };
        let mut out = Vec::new();
        encode_client(&mut out, &msg, 1 << 20).unwrap();
        match decode_client::<Request>(&out).unwrap() {
            ClientMessage::Call {
                id,
                deadline,
                request,
            } => {
                assert_eq!(id, 42);
                assert_eq!(deadline, Some(Duration::from_millis(1500)));
                assert_eq!(request.unwrap(), Request::Uppercase("hello".into()));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn unknown_body_keeps_the_id() {
        // Header of a call with id 9, then a variant index no demo Request has.
        let mut out = Vec::new();
        codec::encode_into(
            &mut out,
            &ClientHeader::Call {
                id: 9,
                deadline_ms: None,
            },
            1024,
        )
        .unwrap();
        out.extend_from_slice(&200u32.to_le_bytes());
        match decode_client::<Request>(&out).unwrap() {
            ClientMessage::Call {
                id: 9,
                request: Err(_),
                ..
            } => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn control_messages_reject_trailing_bytes() {
        let mut out = Vec::new();
        encode_client::<Request>(&mut out, &ClientMessage::Ping { nonce: 1 }, 1024).unwrap();
        assert!(decode_client::<Request>(&out).is_ok());
        out.push(0);
        assert!(decode_client::<Request>(&out).is_err());
    }

    #[test]
    fn server_messages_round_trip() {
        let msgs = vec![
            ServerMessage::Reply {
                id: 1,
                result: Ok(Response::Uppercase("HI".into())),
            },
            ServerMessage::Reply {
                id: 2,
                result: Err(RpcError::Overloaded),
            },
            ServerMessage::Reply {
                id: 3,
                result: Err(RpcError::Application("nope".into())),
            },
            ServerMessage::Ping { nonce: 5 },
            ServerMessage::Pong { nonce: 6 },
            ServerMessage::GoingAway {
                grace: Duration::from_secs(3),
            },
            ServerMessage::Goodbye,
        ];
        for msg in msgs {
            let mut out = Vec::new();
            encode_server(&mut out, &msg, 1 << 20).unwrap();
            let back = decode_server::<Response>(&out)
                .unwrap()
                .map_response(|r| r.unwrap());
            assert_eq!(back, msg);
        }
    }

    #[test]
    fn encode_limit_applies_to_header_and_body() {
        let msg = ClientMessage::Call {
            id: 1,
            deadline: None,
            request: Request::Echo(vec![0; 100]),
        };
        let mut out = vec![9];
        assert!(encode_client(&mut out, &msg, 50).is_err());
        assert_eq!(out, [9]);
    }
}
