//! Property tests for every decoder of `rpckit-proto`: random bytes and mutated valid
//! encodings must never panic and must give typed errors, and valid data must round-trip.
//!
//! Covered: `frame::split_frame`, `FrameReader::next_frame` (random chunkings, pending reads
//! and dropped reads, checked against a simple model), `message::decode_client` /
//! `decode_server` with the demo enums, `codec::decode` of the demo and envelope enums,
//! and the server side of the handshake (`handshake::accept` over an
//! in-memory stream). Case counts are chosen so that the whole file runs in a few seconds on
//! two cores in a debug build.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::future::{block_on, poll_once};
use futures_lite::io::{AsyncRead, Cursor};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

use rpckit_proto::codec;
use rpckit_proto::demo::{Request, Response};
use rpckit_proto::frame::{push_len, split_frame, FrameError, FrameLimits, FrameReader};
use rpckit_proto::handshake::{
    self, client_hello, server_refusal, HandshakeConfig, HandshakeError, Refusal, MAGIC, NONCE_LEN,
    TYPE_SERVER_PROOF,
};
use rpckit_proto::keyring::{KeyId, Keyring, SecretKey};
use rpckit_proto::message::{
    decode_client, decode_server, encode_client, encode_server, ClientHeader, ClientMessage,
    RpcError, ServerHeader, ServerMessage,
};

const LIMIT: u64 = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Strategies

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,24}"
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max)
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        bytes(64).prop_map(Request::Echo),
        text().prop_map(Request::Uppercase),
        Just(Request::Ping),
        any::<u64>().prop_map(|ms| Request::Sleep { ms }),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        bytes(64).prop_map(Response::Echo),
        text().prop_map(Response::Uppercase),
        Just(Response::Pong),
        any::<u64>().prop_map(|ms| Response::Slept { ms }),
    ]
}

fn rpc_error() -> impl Strategy<Value = RpcError> {
    prop_oneof![
        text().prop_map(RpcError::UnknownMethod),
        Just(RpcError::DeadlineExceeded),
        Just(RpcError::Overloaded),
        Just(RpcError::ShuttingDown),
        Just(RpcError::Unauthenticated),
        Just(RpcError::Cancelled),
        text().prop_map(RpcError::Application),
        text().prop_map(RpcError::Internal),
        text().prop_map(RpcError::Protocol),
    ]
}

fn client_message() -> impl Strategy<Value = ClientMessage<Request>> {
    prop_oneof![
        (any::<u64>(), proptest::option::of(any::<u64>()), request()).prop_map(
            |(id, deadline, request)| ClientMessage::Call {
                id,
                deadline: deadline.map(Duration::from_millis),
                request,
            }
        ),
        any::<u64>().prop_map(|id| ClientMessage::Cancel { id }),
        any::<u64>().prop_map(|nonce| ClientMessage::Ping { nonce }),
        any::<u64>().prop_map(|nonce| ClientMessage::Pong { nonce }),
        Just(ClientMessage::Goodbye),
    ]
}

fn server_message() -> impl Strategy<Value = ServerMessage<Response>> {
    prop_oneof![
        (any::<u64>(), response()).prop_map(|(id, r)| ServerMessage::Reply { id, result: Ok(r) }),
        (any::<u64>(), rpc_error()).prop_map(|(id, e)| ServerMessage::Reply { id, result: Err(e) }),
        any::<u64>().prop_map(|nonce| ServerMessage::Ping { nonce }),
        any::<u64>().prop_map(|nonce| ServerMessage::Pong { nonce }),
        any::<u64>().prop_map(|ms| ServerMessage::GoingAway {
            grace: Duration::from_millis(ms)
        }),
        Just(ServerMessage::Goodbye),
    ]
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Truncate(Index),
    Insert(Index, u8),
    Remove(Index),
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    vec(
        prop_oneof![
            (any::<Index>(), 1..=255u8).prop_map(|(i, x)| Mutation::Flip(i, x)),
            any::<Index>().prop_map(Mutation::Truncate),
            (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
            any::<Index>().prop_map(Mutation::Remove),
        ],
        1..4,
    )
}

fn mutate(mut data: Vec<u8>, edits: &[Mutation]) -> Vec<u8> {
    for edit in edits {
        let len = data.len();
        match edit {
            Mutation::Flip(i, x) if len > 0 => data[i.index(len)] ^= x,
            Mutation::Truncate(i) if len > 0 => data.truncate(i.index(len)),
            Mutation::Insert(i, b) => data.insert(i.index(len + 1), *b),
            Mutation::Remove(i) if len > 0 => {
                data.remove(i.index(len));
            }
            _ => {}
        }
    }
    data
}

fn encoded_client(msg: &ClientMessage<Request>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_client(&mut out, msg, LIMIT).unwrap();
    out
}

fn encoded_server(msg: &ServerMessage<Response>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_server(&mut out, msg, LIMIT).unwrap();
    out
}

/// A decoded client message whose body decoded too, as a plain message.
fn complete_client(
    msg: ClientMessage<Result<Request, codec::DecodeError>>,
) -> Option<ClientMessage<Request>> {
    Some(match msg {
        ClientMessage::Call {
            id,
            deadline,
            request,
        } => ClientMessage::Call {
            id,
            deadline,
            request: request.ok()?,
        },
        ClientMessage::Cancel { id } => ClientMessage::Cancel { id },
        ClientMessage::Ping { nonce } => ClientMessage::Ping { nonce },
        ClientMessage::Pong { nonce } => ClientMessage::Pong { nonce },
        ClientMessage::Goodbye => ClientMessage::Goodbye,
    })
}

/// A decoded server message whose body decoded too, as a plain message.
fn complete_server(
    msg: ServerMessage<Result<Response, codec::DecodeError>>,
) -> Option<ServerMessage<Response>> {
    Some(match msg {
        ServerMessage::Reply { id, result } => ServerMessage::Reply {
            id,
            result: match result {
                Ok(body) => Ok(body.ok()?),
                Err(e) => Err(e),
            },
        },
        ServerMessage::Ping { nonce } => ServerMessage::Ping { nonce },
        ServerMessage::Pong { nonce } => ServerMessage::Pong { nonce },
        ServerMessage::GoingAway { grace } => ServerMessage::GoingAway { grace },
        ServerMessage::Goodbye => ServerMessage::Goodbye,
    })
}

// ---------------------------------------------------------------------------------------------
// Frames

/// How a stream of frames ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    Clean,
    Truncated { have: usize, need: usize },
    TooLarge { len: u32, max: u32 },
    TooShort { len: u32, min: u32 },
}

fn end_of(err: FrameError) -> End {
    match err {
        FrameError::Truncated { have, need } => End::Truncated { have, need },
        FrameError::TooLarge { len, max } => End::TooLarge { len, max },
        FrameError::TooShort { len, min } => End::TooShort { len, min },
        other => panic!("unexpected frame error {other:?}"),
    }
}

/// What a frame reader must produce from `data`: split it with the pure `split_frame`.
fn model(data: &[u8], limits: FrameLimits) -> (Vec<Vec<u8>>, End) {
    let mut frames = Vec::new();
    let mut rest = data;
    for _ in 0..=data.len() / 4 + 1 {
        match split_frame(rest, limits) {
            Ok(Some(len)) => {
                frames.push(rest[4..4 + len].to_vec());
                rest = &rest[4 + len..];
            }
            Ok(None) if rest.is_empty() => return (frames, End::Clean),
            Ok(None) => {
                let need = match rest.first_chunk::<4>() {
                    Some(prefix) => 4 + u32::from_be_bytes(*prefix) as usize,
                    None => 4,
                };
                return (
                    frames,
                    End::Truncated {
                        have: rest.len(),
                        need,
                    },
                );
            }
            Err(e) => return (frames, end_of(e)),
        }
    }
    unreachable!("every step consumes at least 4 bytes");
}

/// A reader handing out `data` in chunks of the given sizes (cycled), returning `Pending`
/// (after waking itself) before the reads marked in `pending`.
struct Chunked {
    data: Vec<u8>,
    pos: usize,
    sizes: Vec<usize>,
    pending: Vec<bool>,
    step: usize,
    /// Set after a `Pending`, so that the next poll makes progress.
    just_pended: bool,
}

impl Chunked {
    fn new(data: Vec<u8>, sizes: Vec<usize>, pending: Vec<bool>) -> Self {
        Chunked {
            data,
            pos: 0,
            sizes,
            pending,
            step: 0,
            just_pended: false,
        }
    }
}

impl AsyncRead for Chunked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let step = this.step;
        if !this.just_pended && !this.pending.is_empty() && this.pending[step % this.pending.len()]
        {
            this.just_pended = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.just_pended = false;
        this.step += 1;
        let size = this.sizes[step % this.sizes.len()];
        let n = size.min(buf.len()).min(this.data.len() - this.pos);
        buf[..n].copy_from_slice(&this.data[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(n))
    }
}

/// Reads all frames from `reader`; before some reads (per `drop_first`) a first attempt is
/// polled once and dropped if it is not ready, which must lose nothing.
fn read_frames(
    mut reader: FrameReader<Chunked>,
    drop_first: &[bool],
    max_frames: usize,
) -> (Vec<Vec<u8>>, End) {
    block_on(async {
        let mut frames = Vec::new();
        let own = |r: Result<Option<&[u8]>, FrameError>| r.map(|f| f.map(<[u8]>::to_vec));
        for i in 0..=max_frames {
            let mut got = None;
            if !drop_first.is_empty() && drop_first[i % drop_first.len()] {
                got = poll_once(reader.next_frame()).await.map(own);
            }
            let got = match got {
                Some(got) => got,
                None => own(reader.next_frame().await),
            };
            match got {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => return (frames, End::Clean),
                Err(e) => return (frames, end_of(e)),
            }
        }
        panic!("more frames than bytes allow");
    })
}

fn framed(bodies: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for body in bodies {
        push_len(&mut out, body.len());
        out.extend_from_slice(body);
    }
    out
}

/// Byte streams that are worth splitting: pure noise, or valid frames with noise or a cut.
fn frame_stream() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        bytes(300),
        (vec(bytes(80), 0..6), bytes(12)).prop_map(|(bodies, tail)| {
            let mut data = framed(&bodies);
            data.extend_from_slice(&tail);
            data
        }),
        (vec(bytes(80), 1..6), any::<Index>()).prop_map(|(bodies, cut)| {
            let data = framed(&bodies);
            let at = cut.index(data.len());
            data[..at].to_vec()
        }),
    ]
}

fn limits() -> impl Strategy<Value = FrameLimits> {
    prop_oneof![
        Just(FrameLimits::default()),
        (0..48u32, 0..200u32).prop_map(|(min, max)| FrameLimits { min, max }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn split_frame_never_panics_and_respects_limits(data in bytes(64), limits in limits()) {
        match split_frame(&data, limits) {
            Ok(Some(len)) => {
                prop_assert!(data.len() >= 4 + len);
                prop_assert_eq!(len as u32, u32::from_be_bytes(data[..4].try_into().unwrap()));
                prop_assert!(limits.min as usize <= len && len <= limits.max as usize);
            }
            Ok(None) => {
                if data.len() >= 4 {
                    let len = u32::from_be_bytes(data[..4].try_into().unwrap());
                    prop_assert!(len >= limits.min && len <= limits.max);
                    prop_assert!(data.len() - 4 < len as usize);
                }
            }
            Err(FrameError::TooLarge { len, max }) => {
                prop_assert!(len > max);
                prop_assert_eq!(max, limits.max);
            }
            Err(FrameError::TooShort { len, min }) => {
                prop_assert!(len < min);
                prop_assert_eq!(min, limits.min);
            }
            Err(other) => prop_assert!(false, "unexpected {:?}", other),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn frame_reader_matches_the_model_for_any_chunking(
        data in frame_stream(),
        limits in limits(),
        sizes in vec(1..40usize, 1..8),
        pending in vec(any::<bool>(), 0..5),
        drop_first in vec(any::<bool>(), 0..5),
    ) {
        let expected = model(&data, limits);
        let reader = FrameReader::new(Chunked::new(data.clone(), sizes, pending), limits);
        let got = read_frames(reader, &drop_first, data.len() / 4 + 1);
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn valid_frame_streams_round_trip_for_any_chunking(
        bodies in vec(bytes(600), 0..8),
        sizes in vec(1..700usize, 1..6),
        pending in vec(any::<bool>(), 0..4),
        drop_first in vec(any::<bool>(), 0..4),
    ) {
        let data = framed(&bodies);
        let reader = FrameReader::new(
            Chunked::new(data, sizes, pending),
            FrameLimits::default(),
        );
        let (frames, end) = read_frames(reader, &drop_first, bodies.len());
        prop_assert_eq!(frames, bodies);
        prop_assert_eq!(end, End::Clean);
    }
}

// ---------------------------------------------------------------------------------------------
// Messages and the codec

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn client_messages_round_trip(msg in client_message()) {
        let bytes = encoded_client(&msg);
        let back = complete_client(decode_client::<Request>(&bytes).unwrap());
        prop_assert_eq!(back, Some(msg));
    }

    #[test]
    fn server_messages_round_trip(msg in server_message()) {
        let bytes = encoded_server(&msg);
        let back = complete_server(decode_server::<Response>(&bytes).unwrap());
        prop_assert_eq!(back, Some(msg));
    }

    #[test]
    fn demo_enums_round_trip_through_the_codec(
        req in request(),
        resp in response(),
        err in rpc_error(),
    ) {
        let mut out = Vec::new();
        codec::encode_into(&mut out, &req, LIMIT).unwrap();
        prop_assert_eq!(codec::decode::<Request>(&out).unwrap(), req);
        let mut out = Vec::new();
        codec::encode_into(&mut out, &resp, LIMIT).unwrap();
        prop_assert_eq!(codec::decode::<Response>(&out).unwrap(), resp);
        let mut out = Vec::new();
        codec::encode_into(&mut out, &err, LIMIT).unwrap();
        prop_assert_eq!(codec::decode::<RpcError>(&out).unwrap(), err);
    }

    #[test]
    fn no_strict_prefix_of_a_message_decodes_to_a_complete_message(
        msg in client_message(),
        reply in server_message(),
    ) {
        let bytes = encoded_client(&msg);
        for cut in 0..bytes.len() {
            if let Ok(decoded) = decode_client::<Request>(&bytes[..cut]) {
                prop_assert!(complete_client(decoded).is_none(), "prefix of {} bytes", cut);
            }
        }
        let bytes = encoded_server(&reply);
        for cut in 0..bytes.len() {
            if let Ok(decoded) = decode_server::<Response>(&bytes[..cut]) {
                prop_assert!(complete_server(decoded).is_none(), "prefix of {} bytes", cut);
            }
        }
    }

    /// Random bytes: no panic; whatever decodes completely re-encodes to the same bytes (the
    /// encoding is canonical, so a decoder cannot be fooled by two spellings of one message).
    #[test]
    fn random_payloads_never_panic_and_decode_canonically(data in bytes(96)) {
        if let Ok(msg) = decode_client::<Request>(&data) {
            if let Some(msg) = complete_client(msg) {
                prop_assert_eq!(encoded_client(&msg), data.clone());
            }
        }
        if let Ok(msg) = decode_server::<Response>(&data) {
            if let Some(msg) = complete_server(msg) {
                prop_assert_eq!(encoded_server(&msg), data.clone());
            }
        }
        let _ = codec::decode::<Request>(&data);
        let _ = codec::decode::<Response>(&data);
        let _ = codec::decode::<RpcError>(&data);
        let _ = codec::decode::<ClientHeader>(&data);
        let _ = codec::decode::<ServerHeader>(&data);
    }

    #[test]
    fn mutated_client_messages_never_panic_and_decode_canonically(
        msg in client_message(),
        edits in mutations(),
    ) {
        let data = mutate(encoded_client(&msg), &edits);
        if let Ok(decoded) = decode_client::<Request>(&data) {
            if let Some(decoded) = complete_client(decoded) {
                prop_assert_eq!(encoded_client(&decoded), data);
            }
        }
    }

    #[test]
    fn mutated_server_messages_never_panic_and_decode_canonically(
        msg in server_message(),
        edits in mutations(),
    ) {
        let data = mutate(encoded_server(&msg), &edits);
        if let Ok(decoded) = decode_server::<Response>(&data) {
            if let Some(decoded) = complete_server(decoded) {
                prop_assert_eq!(encoded_server(&decoded), data);
            }
        }
    }

    #[test]
    fn mutated_demo_bodies_never_panic(
        req in request(),
        resp in response(),
        edits in mutations(),
    ) {
        let mut out = Vec::new();
        codec::encode_into(&mut out, &req, LIMIT).unwrap();
        if let Ok(back) = codec::decode::<Request>(&mutate(out, &edits)) {
            // Whatever decodes is a well-formed request; re-encoding it must work.
            let mut again = Vec::new();
            codec::encode_into(&mut again, &back, LIMIT).unwrap();
        }
        let mut out = Vec::new();
        codec::encode_into(&mut out, &resp, LIMIT).unwrap();
        let _ = codec::decode::<Response>(&mutate(out, &edits));
    }

    /// Length fields that claim far more than the input holds are errors, never allocations.
    #[test]
    fn huge_length_fields_are_errors(index in 0u32..4, len in (1u64 << 20)..u64::MAX, tail in bytes(16)) {
        let mut data = index.to_le_bytes().to_vec();
        data.extend_from_slice(&len.to_le_bytes());
        data.extend_from_slice(&tail);
        if index <= 1 {
            prop_assert!(codec::decode::<Request>(&data).is_err());
            prop_assert!(codec::decode::<Response>(&data).is_err());
        }
        // RpcError::UnknownMethod(String) with a huge length.
        prop_assert!(codec::decode::<RpcError>(&[&[0u8, 0, 0, 0][..], &len.to_le_bytes(), &tail].concat()).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// The server handshake fed random and mutated bytes

const ID: &str = "test-key";

fn ring() -> Keyring {
    let mut ring = Keyring::new();
    ring.insert(
        KeyId::new(ID).unwrap(),
        SecretKey::new((0u8..32).collect()).unwrap(),
    );
    ring
}

/// Runs the real server handshake over `input` (then end of stream); returns its error and
/// every byte it wrote. The input can never carry a valid proof (the server's nonce is fresh),
/// so the handshake always fails.
fn serve(input: Vec<u8>) -> (HandshakeError, Vec<u8>) {
    let config = {
        let mut handshake_config = HandshakeConfig::default();
        handshake_config.timeout = Duration::from_secs(2);
        handshake_config
    };
    let mut out = Vec::new();
    let result = block_on(handshake::accept(
        Cursor::new(input),
        &mut out,
        &ring(),
        &config,
    ));
    match result {
        Ok(_) => panic!("a handshake succeeded without a valid proof"),
        Err(e) => (e, out),
    }
}

/// Checks that what the server wrote is exactly what its error calls for.
fn check_answer(err: &HandshakeError, out: &[u8]) -> Result<(), TestCaseError> {
    let hello_sent = out.len() >= 40;
    if hello_sent {
        prop_assert_eq!(&out[..4], &MAGIC[..]);
        // Version 1, ServerHello, status 0, and the suite the client offered.
        prop_assert_eq!(&out[4..7], &[1u8, 2, 0][..]);
        prop_assert!(
            rpckit_proto::Suite::from_code(out[7]).is_some(),
            "suite {}",
            out[7]
        );
    }
    let refusal = |r: Refusal| server_refusal(r).to_vec();
    let proof_refusal = |r: Refusal| [TYPE_SERVER_PROOF, r.code()];
    match err {
        HandshakeError::BadMagic { .. } => prop_assert_eq!(out, refusal(Refusal::BadMagic)),
        HandshakeError::UnsupportedVersion { .. } => {
            prop_assert_eq!(out, refusal(Refusal::UnsupportedVersion))
        }
        HandshakeError::UnsupportedSuite { .. } => {
            prop_assert_eq!(out, refusal(Refusal::UnsupportedSuite))
        }
        HandshakeError::Malformed(_) => prop_assert_eq!(out, refusal(Refusal::Malformed)),
        HandshakeError::UnexpectedMessage { expected: 1, .. } => {
            prop_assert_eq!(out, refusal(Refusal::Malformed))
        }
        HandshakeError::UnexpectedMessage { expected: 3, .. } => {
            prop_assert!(out.len() == 42 && out[40..] == proof_refusal(Refusal::Malformed))
        }
        // Unknown key id and wrong proof: the same answer, so key ids stay secret.
        HandshakeError::UnknownKeyId(_) | HandshakeError::BadClientProof(_) => {
            prop_assert!(out.len() == 42 && out[40..] == proof_refusal(Refusal::AuthFailed))
        }
        HandshakeError::Closed => prop_assert!(out.is_empty() || out.len() == 40),
        other => prop_assert!(false, "unexpected handshake error {:?}", other),
    }
    Ok(())
}

fn valid_prefix() -> Vec<u8> {
    let mut data = client_hello(&[0x11; NONCE_LEN], &KeyId::new(ID).unwrap());
    data.push(3);
    data
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn server_handshake_on_random_bytes_fails_with_a_typed_error(data in bytes(160)) {
        let (err, out) = serve(data);
        check_answer(&err, &out)?;
    }

    #[test]
    fn server_handshake_on_a_valid_hello_then_noise(tail in bytes(80)) {
        let mut data = client_hello(&[0x11; NONCE_LEN], &KeyId::new(ID).unwrap());
        data.extend_from_slice(&tail);
        let (err, out) = serve(data);
        check_answer(&err, &out)?;
        match tail.len() {
            0..=32 => prop_assert!(matches!(err, HandshakeError::Closed), "{:?}", err),
            _ if tail[0] != 3 => prop_assert!(matches!(
                err,
                HandshakeError::UnexpectedMessage { expected: 3, got } if got == tail[0]
            ), "{:?}", err),
            _ => prop_assert!(matches!(err, HandshakeError::BadClientProof(_)), "{:?}", err),
        }
    }

    /// One byte of an otherwise valid ClientHello + proof changed: the error names the field.
    #[test]
    fn server_handshake_names_the_mutated_field(
        pos in 0usize..49,
        flip in 1..=255u8,
        proof in vec(any::<u8>(), 32),
    ) {
        let mut data = valid_prefix();
        data.extend_from_slice(&proof);
        let old = data[pos];
        let new = old ^ flip;
        data[pos] = new;
        let (err, out) = serve(data);
        check_answer(&err, &out)?;
        match pos {
            0..=3 => prop_assert!(matches!(err, HandshakeError::BadMagic { .. }), "{:?}", err),
            4 => prop_assert!(matches!(err, HandshakeError::UnsupportedVersion { got } if got == new), "{:?}", err),
            5 => prop_assert!(matches!(err, HandshakeError::UnexpectedMessage { expected: 1, got } if got == new), "{:?}", err),
            // Another suite this code speaks: the proof made for suite 1 no longer holds.
            6 if rpckit_proto::Suite::from_code(new).is_some() => prop_assert!(matches!(err, HandshakeError::BadClientProof(_)), "{:?}", err),
            6 => prop_assert!(matches!(err, HandshakeError::UnsupportedSuite { got } if got == new), "{:?}", err),
            7..=38 => prop_assert!(matches!(err, HandshakeError::BadClientProof(_)), "{:?}", err),
            39 if new == 0 || new > 64 => prop_assert!(matches!(err, HandshakeError::Malformed(_)), "{:?}", err),
            39 => {} // a shorter or longer id shifts everything after it
            40..=47 => {
                let valid_char = new.is_ascii_alphanumeric() || matches!(new, b'.' | b'_' | b'-');
                if valid_char {
                    prop_assert!(matches!(err, HandshakeError::UnknownKeyId(_)), "{:?}", err);
                } else {
                    prop_assert!(matches!(err, HandshakeError::Malformed(_)), "{:?}", err);
                }
            }
            _ => prop_assert!(matches!(
                err,
                HandshakeError::UnexpectedMessage { expected: 3, got } if got == new
            ), "{:?}", err),
        }
    }
}
