//! The mutual HMAC-SHA256 handshake that opens every connection, written against the
//! `futures-io` traits so any runtime can drive it.
//!
//! ```text
//! client                                              server
//!   ClientHello  magic "RPCK", version, suite, nonce_c, key id  ->
//!             <-  ServerHello  magic, version, status, suite, nonce_s
//!   ClientProof  HMAC(key, "rpckit-v1 proof" | 'C' | ...)        ->
//!                                 (server checks it in constant time)
//!             <-  ServerProof  status, HMAC(key, "rpckit-v1 proof" | 'S' | ...)
//!                                 (client checks it: no impostor server)
//!   both derive one session key per direction with HKDF-SHA256 over both nonces
//! ```
//!
//! Handshake messages have fixed layouts of at most 104 bytes, so nothing a peer sends before
//! it is authenticated can make either side buffer more than a few hundred bytes. The whole
//! handshake runs under one deadline set by the caller. The exact bytes are in
//! `docs/PROTOCOL.md`.

use std::io;
use std::time::Duration;

use futures_lite::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use hkdf::Hkdf;
use hmac::{KeyInit, Mac};
use rand::TryRng;
use sha2::Sha256;

use crate::frame::{FrameError, FrameLimits, FrameReader, DEFAULT_MAX_FRAME};
use crate::keyring::{KeyId, Keyring, SecretKey, MAX_KEY_ID_LEN};
use crate::session::{HmacSha256, Session, SessionReader, SessionWriter, TAG_LEN};

/// The first four bytes a client sends: identifies the protocol.
pub const MAGIC: [u8; 4] = *b"RPCK";
/// The protocol version this code speaks.
pub const VERSION: u8 = 1;
/// Frame-protection suite 1: HMAC-SHA256 tags, no encryption.
pub const SUITE_HMAC_SHA256: u8 = 1;
/// Length of each side's nonce.
pub const NONCE_LEN: usize = 32;
/// Length of a handshake proof.
pub const PROOF_LEN: usize = 32;

/// Message type byte of the ClientHello.
pub const TYPE_CLIENT_HELLO: u8 = 1;
/// Message type byte of the ServerHello.
pub const TYPE_SERVER_HELLO: u8 = 2;
/// Message type byte of the ClientProof.
pub const TYPE_CLIENT_PROOF: u8 = 3;
/// Message type byte of the ServerProof.
pub const TYPE_SERVER_PROOF: u8 = 4;

/// Status byte meaning "go on".
pub const STATUS_OK: u8 = 0;

/// Label at the start of every proof input.
const PROOF_LABEL: &[u8] = b"rpckit-v1 proof";
/// Role byte of the client's proof.
const ROLE_CLIENT: u8 = b'C';
/// Role byte of the server's proof.
const ROLE_SERVER: u8 = b'S';
/// HKDF info prefix of the client-to-server key.
const INFO_C2S: &[u8] = b"rpckit-v1 c2s";
/// HKDF info prefix of the server-to-client key.
const INFO_S2C: &[u8] = b"rpckit-v1 s2c";

/// Fixed part of the ClientHello: magic, version, type, suite, nonce, key id length.
const CLIENT_HELLO_FIXED: usize = 4 + 1 + 1 + 1 + NONCE_LEN + 1;
/// ServerHello up to and including the status byte.
const SERVER_HELLO_HEAD: usize = 4 + 1 + 1 + 1;
/// Whole ServerHello when the status is OK.
const SERVER_HELLO_OK: usize = SERVER_HELLO_HEAD + 1 + NONCE_LEN;
/// Whole ClientProof.
const CLIENT_PROOF_LEN: usize = 1 + PROOF_LEN;
/// ServerProof up to and including the status byte.
const SERVER_PROOF_HEAD: usize = 2;

/// Why the server refused a handshake, as carried in the status byte of a ServerHello or
/// ServerProof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// Status 1: the first bytes were not the protocol's magic.
    BadMagic,
    /// Status 2: the server does not speak the client's version (the server's own version is
    /// in the ServerHello's version byte).
    UnsupportedVersion,
    /// Status 3: the server does not support the frame-protection suite.
    UnsupportedSuite,
    /// Status 4: the hello was malformed.
    Malformed,
    /// Status 5: the server has too many connections.
    Busy,
    /// Status 6: the server is shutting down.
    ShuttingDown,
    /// Status 7: too many failed authentications from this address; try later.
    RateLimited,
    /// Status 8: authentication failed (unknown key id or wrong key; the peer is not told which).
    AuthFailed,
    /// A status this code does not know.
    Other(u8),
}

impl Refusal {
    /// The status byte.
    pub fn code(self) -> u8 {
        match self {
            Refusal::BadMagic => 1,
            Refusal::UnsupportedVersion => 2,
            Refusal::UnsupportedSuite => 3,
            Refusal::Malformed => 4,
            Refusal::Busy => 5,
            Refusal::ShuttingDown => 6,
            Refusal::RateLimited => 7,
            Refusal::AuthFailed => 8,
            Refusal::Other(code) => code,
        }
    }

    /// The refusal a status byte stands for.
    pub fn from_code(code: u8) -> Self {
        match code {
            1 => Refusal::BadMagic,
            2 => Refusal::UnsupportedVersion,
            3 => Refusal::UnsupportedSuite,
            4 => Refusal::Malformed,
            5 => Refusal::Busy,
            6 => Refusal::ShuttingDown,
            7 => Refusal::RateLimited,
            8 => Refusal::AuthFailed,
            other => Refusal::Other(other),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::BadMagic => f.write_str("not an rpckit connection"),
            Refusal::UnsupportedVersion => f.write_str("unsupported protocol version"),
            Refusal::UnsupportedSuite => f.write_str("unsupported frame-protection suite"),
            Refusal::Malformed => f.write_str("malformed handshake"),
            Refusal::Busy => f.write_str("server busy: too many connections"),
            Refusal::ShuttingDown => f.write_str("server shutting down"),
            Refusal::RateLimited => {
                f.write_str("too many failed authentications from this address")
            }
            Refusal::AuthFailed => f.write_str("authentication failed"),
            Refusal::Other(code) => write!(f, "refused with unknown status {code}"),
        }
    }
}

/// Why a handshake failed. Each failure has its own variant; the peer is told only the
/// [`Refusal`] (never, for instance, whether a key id exists).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The handshake did not finish within its deadline.
    #[error("handshake not finished within {0:?}")]
    Timeout(Duration),
    /// The peer closed the connection during the handshake.
    #[error("peer closed the connection during the handshake")]
    Closed,
    /// Reading or writing failed.
    #[error("i/o error during handshake: {0}")]
    Io(#[from] io::Error),
    /// The first bytes are not the protocol's magic (an HTTP request, say).
    #[error("not an rpckit peer: first bytes {got:02x?} (expected \"RPCK\")")]
    BadMagic {
        /// The four bytes received.
        got: [u8; 4],
    },
    /// The peer speaks another protocol version.
    #[error("peer speaks protocol version {got}, this side speaks {VERSION}")]
    UnsupportedVersion {
        /// The peer's version.
        got: u8,
    },
    /// The peer asked for a frame-protection suite this side does not have.
    #[error("unsupported frame-protection suite {got}")]
    UnsupportedSuite {
        /// The suite byte received.
        got: u8,
    },
    /// A handshake message broke the layout.
    #[error("malformed handshake message: {0}")]
    Malformed(&'static str),
    /// A handshake message of the wrong type arrived (a second hello, say).
    #[error("expected handshake message type {expected}, got {got}")]
    UnexpectedMessage {
        /// The type expected at this step.
        expected: u8,
        /// The type received.
        got: u8,
    },
    /// Server side: the client named a key id that is not in the keyring.
    #[error("unknown key id {0:?}")]
    UnknownKeyId(String),
    /// Server side: the client's proof did not verify (wrong key, tampered, replayed or
    /// reflected proof).
    #[error("client proof for key id {0:?} did not verify")]
    BadClientProof(String),
    /// Client side: the server refused the handshake.
    #[error("server refused the connection: {0}")]
    Refused(Refusal),
    /// Client side: the server's proof did not verify, so it does not hold the key: an
    /// impostor, or a server configured with another key.
    #[error("server failed to prove it holds the key (impostor or different key)")]
    BadServerProof,
}

impl HandshakeError {
    /// Whether this failure means the credentials were not accepted, either way round.
    pub fn is_auth_failure(&self) -> bool {
        matches!(
            self,
            HandshakeError::UnknownKeyId(_)
                | HandshakeError::BadClientProof(_)
                | HandshakeError::Refused(Refusal::AuthFailed)
                | HandshakeError::BadServerProof
        )
    }

    /// The refusal the server sends for this failure, if it sends one.
    fn refusal(&self) -> Option<Refusal> {
        match self {
            HandshakeError::BadMagic { .. } => Some(Refusal::BadMagic),
            HandshakeError::UnsupportedVersion { .. } => Some(Refusal::UnsupportedVersion),
            HandshakeError::UnsupportedSuite { .. } => Some(Refusal::UnsupportedSuite),
            HandshakeError::Malformed(_) | HandshakeError::UnexpectedMessage { .. } => {
                Some(Refusal::Malformed)
            }
            _ => None,
        }
    }
}

/// Settings of a handshake.
#[derive(Debug, Clone)]
pub struct HandshakeConfig {
    /// Deadline for the whole handshake, not reset by each byte. Default 10 s.
    pub timeout: Duration,
    /// Largest frame accepted and sent after the handshake. Default 8 MiB.
    pub max_frame: u32,
}

impl Default for HandshakeConfig {
    fn default() -> Self {
        HandshakeConfig {
            timeout: Duration::from_secs(10),
            max_frame: DEFAULT_MAX_FRAME,
        }
    }
}

/// Fills `buf` from the operating system's CSPRNG.
///
/// # Panics
/// If the operating system cannot provide random bytes; no key or nonce may be made then.
pub fn os_random(buf: &mut [u8]) {
    rand::rngs::SysRng
        .try_fill_bytes(buf)
        .expect("the operating system's random number generator failed");
}

pub(crate) fn nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    os_random(&mut n);
    n
}

/// The bytes of a ClientHello.
pub fn client_hello(nonce_c: &[u8; NONCE_LEN], key_id: &KeyId) -> Vec<u8> {
    let id = key_id.as_str().as_bytes();
    let mut out = Vec::with_capacity(CLIENT_HELLO_FIXED + id.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[VERSION, TYPE_CLIENT_HELLO, SUITE_HMAC_SHA256]);
    out.extend_from_slice(nonce_c);
    out.push(id.len() as u8);
    out.extend_from_slice(id);
    out
}

/// The bytes of a ServerHello that accepts, carrying the server's nonce.
pub fn server_hello(nonce_s: &[u8; NONCE_LEN]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SERVER_HELLO_OK);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[VERSION, TYPE_SERVER_HELLO, STATUS_OK, SUITE_HMAC_SHA256]);
    out.extend_from_slice(nonce_s);
    out
}

/// The bytes of a ServerHello that refuses.
pub fn server_refusal(reason: Refusal) -> [u8; SERVER_HELLO_HEAD] {
    let [m0, m1, m2, m3] = MAGIC;
    [m0, m1, m2, m3, VERSION, TYPE_SERVER_HELLO, reason.code()]
}

/// The bytes hashed for a proof: label, role, suite, key id, both nonces.
fn proof_input(
    role: u8,
    key_id: &KeyId,
    nonce_c: &[u8; NONCE_LEN],
    nonce_s: &[u8; NONCE_LEN],
) -> Vec<u8> {
    let id = key_id.as_str().as_bytes();
    let mut out = Vec::with_capacity(PROOF_LABEL.len() + 3 + id.len() + 2 * NONCE_LEN);
    out.extend_from_slice(PROOF_LABEL);
    out.push(role);
    out.push(SUITE_HMAC_SHA256);
    out.push(id.len() as u8);
    out.extend_from_slice(id);
    out.extend_from_slice(nonce_c);
    out.extend_from_slice(nonce_s);
    out
}

fn proof_mac(
    key: &SecretKey,
    role: u8,
    key_id: &KeyId,
    nonce_c: &[u8; NONCE_LEN],
    nonce_s: &[u8; NONCE_LEN],
) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac =
        <HmacSha256 as KeyInit>::new_from_slice(key.expose()).expect("HMAC takes any key length");
    mac.update(&proof_input(role, key_id, nonce_c, nonce_s));
    mac
}

/// The client's proof: HMAC-SHA256 under the shared key of the client-role proof input.
pub fn client_proof(
    key: &SecretKey,
    key_id: &KeyId,
    nonce_c: &[u8; NONCE_LEN],
    nonce_s: &[u8; NONCE_LEN],
) -> [u8; PROOF_LEN] {
    proof_mac(key, ROLE_CLIENT, key_id, nonce_c, nonce_s)
        .finalize()
        .into_bytes()
        .into()
}

/// The server's proof: HMAC-SHA256 under the shared key of the server-role proof input.
pub fn server_proof(
    key: &SecretKey,
    key_id: &KeyId,
    nonce_c: &[u8; NONCE_LEN],
    nonce_s: &[u8; NONCE_LEN],
) -> [u8; PROOF_LEN] {
    proof_mac(key, ROLE_SERVER, key_id, nonce_c, nonce_s)
        .finalize()
        .into_bytes()
        .into()
}

/// The two session keys derived from the shared key and both nonces.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    /// Tags frames from client to server.
    pub client_to_server: [u8; 32],
    /// Tags frames from server to client.
    pub server_to_client: [u8; 32],
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys(..)")
    }
}

/// HKDF-SHA256: salt = nonce_c | nonce_s, IKM = the shared key, info = direction label |
/// key id length | key id, 32 bytes per direction.
pub fn derive_session_keys(
    key: &SecretKey,
    key_id: &KeyId,
    nonce_c: &[u8; NONCE_LEN],
    nonce_s: &[u8; NONCE_LEN],
) -> SessionKeys {
    let mut salt = [0u8; 2 * NONCE_LEN];
    salt[..NONCE_LEN].copy_from_slice(nonce_c);
    salt[NONCE_LEN..].copy_from_slice(nonce_s);
    let hk = Hkdf::<Sha256>::new(Some(&salt), key.expose());
    let expand = |label: &[u8]| {
        let id = key_id.as_str().as_bytes();
        let mut info = Vec::with_capacity(label.len() + 1 + id.len());
        info.extend_from_slice(label);
        info.push(id.len() as u8);
        info.extend_from_slice(id);
        let mut out = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's 8160-byte maximum, so this cannot fail.
        hk.expand(&info, &mut out)
            .expect("32 bytes is a valid HKDF output length");
        out
    };
    SessionKeys {
        client_to_server: expand(INFO_C2S),
        server_to_client: expand(INFO_S2C),
    }
}

/// Runs `fut` under `timeout`.
async fn with_timeout<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, HandshakeError>>,
) -> Result<T, HandshakeError> {
    crate::timer::within(timeout, fut)
        .await
        .unwrap_or(Err(HandshakeError::Timeout(timeout)))
}

/// Reads until `n` bytes are buffered, or fails with [`HandshakeError::Closed`].
async fn need<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    n: usize,
) -> Result<&[u8], HandshakeError> {
    let filled = reader.fill(n).await.map_err(|e| match e {
        FrameError::Io(e) => HandshakeError::Io(e),
        other => HandshakeError::Io(io::Error::other(other.to_string())),
    })?;
    if filled {
        Ok(&reader.buffered()[..n])
    } else {
        Err(HandshakeError::Closed)
    }
}

async fn send<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

/// Server side: runs the handshake on a new connection, checking the client's proof against
/// `keyring`, and returns the authenticated session.
///
/// If a complete frame arrived together with the client's proof (a client that pipelines its
/// first call, PROTOCOL.md §3.5), the ServerProof is not written yet: it waits at the head of
/// the session writer's buffer, so that it leaves with the answers to those frames. The
/// caller must then flush the writer (or the [`crate::Outbox`] made from it) once it has
/// handled the frames it finds buffered; otherwise the ServerProof has been written.
///
/// On failure the server has already told the peer what it may know (a [`Refusal`]); the
/// error says exactly what went wrong, for the log.
pub async fn accept<R, W>(
    r: R,
    w: W,
    keyring: &Keyring,
    config: &HandshakeConfig,
) -> Result<Session<R, W>, HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    accept_reporting(r, w, keyring, config, |_| {}).await
}

/// What the server made of the client's proof, reported by [`accept_reporting`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofVerdict {
    /// The proof is right for a key in the keyring: the client is authenticated. (The
    /// handshake can still fail after this, if the ServerProof cannot be written in time.)
    Accepted,
    /// An unknown key id or a wrong key: the client is refused `AuthFailed`.
    Rejected,
}

/// Like [`accept`], and calls `on_verdict` once the client's proof is checked, *before* the
/// peer is told the outcome (by the ServerProof or the refusal). A server that counts
/// failures per address has counted this one before the client can learn of it and try
/// again; one that counts connections still in their handshake has counted this one out
/// before the client can open the next. Not called if the handshake ends before a proof is
/// checked (a malformed hello, a proof message with the wrong type byte, a timeout, a peer
/// that leaves).
pub async fn accept_reporting<R, W>(
    r: R,
    w: W,
    keyring: &Keyring,
    config: &HandshakeConfig,
    on_verdict: impl FnOnce(ProofVerdict),
) -> Result<Session<R, W>, HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    with_timeout(
        config.timeout,
        accept_with_nonce(r, w, keyring, config, nonce(), on_verdict),
    )
    .await
}

/// [`accept_reporting`] with the server nonce given (fixed in the test vectors).
pub(crate) async fn accept_with_nonce<R, W>(
    r: R,
    mut w: W,
    keyring: &Keyring,
    config: &HandshakeConfig,
    nonce_s: [u8; NONCE_LEN],
    on_verdict: impl FnOnce(ProofVerdict),
) -> Result<Session<R, W>, HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut reader = FrameReader::new(r, FrameLimits::default());
    let hello = match read_client_hello(&mut reader).await {
        Ok(hello) => hello,
        Err(e) => {
            if let Some(reason) = e.refusal() {
                // Best effort: the peer may already be gone.
                let _ = send(&mut w, &server_refusal(reason)).await;
            }
            return Err(e);
        }
    };
    let (key_id, nonce_c) = hello;
    send(&mut w, &server_hello(&nonce_s)).await?;

    let proof = need(&mut reader, CLIENT_PROOF_LEN).await?;
    if proof[0] != TYPE_CLIENT_PROOF {
        let got = proof[0];
        let _ = send(&mut w, &[TYPE_SERVER_PROOF, Refusal::Malformed.code()]).await;
        return Err(HandshakeError::UnexpectedMessage {
            expected: TYPE_CLIENT_PROOF,
            got,
        });
    }
    // An unknown key id is checked against a throwaway key, so that it costs the same and
    // looks the same to the peer as a wrong key. The throwaway key is made on every handshake:
    // making it only for unknown ids would add an OS random call to that path alone.
    let known = keyring.get(&key_id);
    let throwaway = SecretKey::generate();
    let key = known.unwrap_or(&throwaway);
    let verified = proof_mac(key, ROLE_CLIENT, &key_id, &nonce_c, &nonce_s)
        .verify_slice(&proof[1..])
        .is_ok();
    reader.consume(CLIENT_PROOF_LEN);
    if known.is_none() || !verified {
        on_verdict(ProofVerdict::Rejected);
        let _ = send(&mut w, &[TYPE_SERVER_PROOF, Refusal::AuthFailed.code()]).await;
        return Err(match known {
            None => HandshakeError::UnknownKeyId(key_id.as_str().to_owned()),
            Some(_) => HandshakeError::BadClientProof(key_id.as_str().to_owned()),
        });
    }

    on_verdict(ProofVerdict::Accepted);
    let mut finish = vec![TYPE_SERVER_PROOF, STATUS_OK];
    finish.extend_from_slice(&server_proof(key, &key_id, &nonce_c, &nonce_s));
    // A client that sent frames with its proof gets our proof in front of the answers to
    // them, in one write: it waits in the session's writer for the first flush. (Nothing more
    // is built before this wait: what lives across it sizes every connection's task.)
    let pending = if reader.has_complete_frame() {
        finish
    } else {
        send(&mut w, &finish).await?;
        Vec::new()
    };
    let keys = derive_session_keys(key, &key_id, &nonce_c, &nonce_s);
    Ok(Session {
        reader: SessionReader::new(reader, &keys.client_to_server, config.max_frame),
        writer: SessionWriter::new(w, &keys.server_to_client, config.max_frame, pending),
        key_id,
    })
}

async fn read_client_hello<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
) -> Result<(KeyId, [u8; NONCE_LEN]), HandshakeError> {
    // Check each field as soon as its bytes have arrived (PROTOCOL.md §3.1), so that an HTTP
    // request or a stray client is refused after its first four bytes, and a hello cut short
    // after a bad field is refused without waiting for the rest.
    let magic = need(reader, 4).await?;
    if magic != MAGIC {
        let mut got = [0u8; 4];
        got.copy_from_slice(magic);
        return Err(HandshakeError::BadMagic { got });
    }
    let version = need(reader, 5).await?[4];
    if version != VERSION {
        return Err(HandshakeError::UnsupportedVersion { got: version });
    }
    let kind = need(reader, 6).await?[5];
    if kind != TYPE_CLIENT_HELLO {
        return Err(HandshakeError::UnexpectedMessage {
            expected: TYPE_CLIENT_HELLO,
            got: kind,
        });
    }
    let suite = need(reader, 7).await?[6];
    if suite != SUITE_HMAC_SHA256 {
        return Err(HandshakeError::UnsupportedSuite { got: suite });
    }
    let fixed = need(reader, CLIENT_HELLO_FIXED).await?;
    let id_len = usize::from(fixed[CLIENT_HELLO_FIXED - 1]);
    if id_len == 0 || id_len > MAX_KEY_ID_LEN {
        return Err(HandshakeError::Malformed("key id length must be 1 to 64"));
    }
    let mut nonce_c = [0u8; NONCE_LEN];
    nonce_c.copy_from_slice(&fixed[7..7 + NONCE_LEN]);
    let whole = need(reader, CLIENT_HELLO_FIXED + id_len).await?;
    let key_id = KeyId::from_bytes(&whole[CLIENT_HELLO_FIXED..])
        .map_err(|_| HandshakeError::Malformed("key id must be A-Z a-z 0-9 . _ -"))?;
    reader.consume(CLIENT_HELLO_FIXED + id_len);
    Ok((key_id, nonce_c))
}

/// Client side: runs the handshake with key `key_id`/`key`, checks the server's proof, and
/// returns the authenticated session.
pub async fn connect<R, W>(
    r: R,
    w: W,
    key_id: &KeyId,
    key: &SecretKey,
    config: &HandshakeConfig,
) -> Result<Session<R, W>, HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (session, ()) = connect_pipelined(r, w, key_id, key, config, |_| ()).await?;
    Ok(session)
}

/// Like [`connect`], but lets `first` queue frames on the new session's writer (sealed with
/// its keys, from sequence number 0) that leave in the same write as the ClientProof, so the
/// first call costs no round trip of its own (PROTOCOL.md §3.5). Returns the session and what
/// `first` returned.
///
/// Those frames go out **before the server has proven that it holds the key**: a peer that
/// fails its proof (an impostor) has then seen them. Nothing else is lost (frames are tagged,
/// not encrypted, and a third party on the path sees them anyway; they cannot be replayed on
/// another session). `first` runs just before the proof is written: if this fails after
/// that, a genuine server may have run the frames, unless it refused the proof
/// ([`HandshakeError::Refused`]), in which case it ran none of them.
pub async fn connect_pipelined<R, W, T>(
    r: R,
    w: W,
    key_id: &KeyId,
    key: &SecretKey,
    config: &HandshakeConfig,
    first: impl FnOnce(&mut SessionWriter<W>) -> T,
) -> Result<(Session<R, W>, T), HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    with_timeout(
        config.timeout,
        connect_pipelined_with_nonce(r, w, key_id, key, config, nonce(), first),
    )
    .await
}

/// [`connect`] with the client nonce given (fixed in the test vectors).
#[cfg(test)]
pub(crate) async fn connect_with_nonce<R, W>(
    r: R,
    w: W,
    key_id: &KeyId,
    key: &SecretKey,
    config: &HandshakeConfig,
    nonce_c: [u8; NONCE_LEN],
) -> Result<Session<R, W>, HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (session, ()) =
        connect_pipelined_with_nonce(r, w, key_id, key, config, nonce_c, |_| ()).await?;
    Ok(session)
}

/// [`connect_pipelined`] with the client nonce given.
pub(crate) async fn connect_pipelined_with_nonce<R, W, T>(
    r: R,
    mut w: W,
    key_id: &KeyId,
    key: &SecretKey,
    config: &HandshakeConfig,
    nonce_c: [u8; NONCE_LEN],
    first: impl FnOnce(&mut SessionWriter<W>) -> T,
) -> Result<(Session<R, W>, T), HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut reader = FrameReader::new(r, FrameLimits::default());
    send(&mut w, &client_hello(&nonce_c, key_id)).await?;

    let head = need(&mut reader, SERVER_HELLO_HEAD).await?;
    if head[..4] != MAGIC {
        let mut got = [0u8; 4];
        got.copy_from_slice(&head[..4]);
        return Err(HandshakeError::BadMagic { got });
    }
    if head[5] != TYPE_SERVER_HELLO {
        return Err(HandshakeError::UnexpectedMessage {
            expected: TYPE_SERVER_HELLO,
            got: head[5],
        });
    }
    if head[6] != STATUS_OK {
        return Err(HandshakeError::Refused(Refusal::from_code(head[6])));
    }
    if head[4] != VERSION {
        return Err(HandshakeError::UnsupportedVersion { got: head[4] });
    }
    let hello = need(&mut reader, SERVER_HELLO_OK).await?;
    if hello[SERVER_HELLO_HEAD] != SUITE_HMAC_SHA256 {
        return Err(HandshakeError::UnsupportedSuite {
            got: hello[SERVER_HELLO_HEAD],
        });
    }
    let mut nonce_s = [0u8; NONCE_LEN];
    nonce_s.copy_from_slice(&hello[SERVER_HELLO_HEAD + 1..]);
    reader.consume(SERVER_HELLO_OK);

    // The session's writer starts with the proof queued; `first` may queue frames after it,
    // and one write sends them all.
    let keys = derive_session_keys(key, key_id, &nonce_c, &nonce_s);
    let mut proof = vec![TYPE_CLIENT_PROOF];
    proof.extend_from_slice(&client_proof(key, key_id, &nonce_c, &nonce_s));
    let mut writer = SessionWriter::new(w, &keys.client_to_server, config.max_frame, proof);
    let firsts = first(&mut writer);
    writer.flush().await?;

    let head = need(&mut reader, SERVER_PROOF_HEAD).await?;
    if head[0] != TYPE_SERVER_PROOF {
        return Err(HandshakeError::UnexpectedMessage {
            expected: TYPE_SERVER_PROOF,
            got: head[0],
        });
    }
    if head[1] != STATUS_OK {
        return Err(HandshakeError::Refused(Refusal::from_code(head[1])));
    }
    let finish = need(&mut reader, SERVER_PROOF_HEAD + PROOF_LEN).await?;
    proof_mac(key, ROLE_SERVER, key_id, &nonce_c, &nonce_s)
        .verify_slice(&finish[SERVER_PROOF_HEAD..])
        .map_err(|_| HandshakeError::BadServerProof)?;
    reader.consume(SERVER_PROOF_HEAD + PROOF_LEN);

    let session = Session {
        reader: SessionReader::new(reader, &keys.server_to_client, config.max_frame),
        writer,
        key_id: key_id.clone(),
    };
    Ok((session, firsts))
}

// Frames after the handshake must at least hold a tag.
const _: () = assert!(TAG_LEN == PROOF_LEN);
