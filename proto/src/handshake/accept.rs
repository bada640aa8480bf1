//! The server side of the handshake: check the ClientHello, answer with a ServerHello, check
//! the client's proof in constant time against the keyring, answer with the ServerProof, and
//! hand back the session.

use futures_lite::io::{AsyncRead, AsyncWrite};
use hmac::Mac;

use super::hello::{read_client_hello, server_hello_for, server_refusal, ClientHello};
use super::keys::direction_keys;
use super::proof::{proof_mac, server_proof_for, ROLE_CLIENT};
use super::{
    need, nonce, send, with_timeout, HandshakeConfig, HandshakeError, Refusal, CLIENT_PROOF_LEN,
    NONCE_LEN, STATUS_OK, TYPE_CLIENT_PROOF, TYPE_SERVER_PROOF,
};
use crate::frame::{FrameLimits, FrameReader};
use crate::keyring::{Keyring, SecretKey};
use crate::session::{Direction, Session, SessionReader, SessionWriter};
use crate::suite::SuitePolicy;

/// Server side: runs the handshake on a new connection, checking the client's proof against
/// `keyring`, and returns the authenticated session. Accepts every suite (see
/// [`accept_with_policy`]).
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
    accept_with_policy(r, w, keyring, config, &SuitePolicy::integrity(), on_verdict).await
}

/// Like [`accept_reporting`], with the suites this server accepts set by `policy.accept`: a
/// client offering another suite (suite 1 to a server that requires encryption, say) is
/// refused with status 9 ([`Refusal::SuiteNotAllowed`]). [`accept`] and [`accept_reporting`]
/// accept every suite.
pub async fn accept_with_policy<R, W>(
    r: R,
    w: W,
    keyring: &Keyring,
    config: &HandshakeConfig,
    policy: &SuitePolicy,
    on_verdict: impl FnOnce(ProofVerdict),
) -> Result<Session<R, W>, HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    with_timeout(
        config.timeout,
        accept_policy_with_nonce(r, w, keyring, config, policy, nonce(), on_verdict),
    )
    .await
}

/// [`accept_reporting`] with the server nonce given (fixed in the test vectors).
#[cfg(test)]
pub(crate) async fn accept_with_nonce<R, W>(
    r: R,
    w: W,
    keyring: &Keyring,
    config: &HandshakeConfig,
    nonce_s: [u8; NONCE_LEN],
    on_verdict: impl FnOnce(ProofVerdict),
) -> Result<Session<R, W>, HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let policy = SuitePolicy::integrity();
    accept_policy_with_nonce(r, w, keyring, config, &policy, nonce_s, on_verdict).await
}

/// [`accept_with_policy`] with the server nonce given.
pub(crate) async fn accept_policy_with_nonce<R, W>(
    r: R,
    mut w: W,
    keyring: &Keyring,
    config: &HandshakeConfig,
    policy: &SuitePolicy,
    nonce_s: [u8; NONCE_LEN],
    on_verdict: impl FnOnce(ProofVerdict),
) -> Result<Session<R, W>, HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut reader = FrameReader::new(r, FrameLimits::default());
    let hello = match read_client_hello(&mut reader, policy).await {
        Ok(hello) => hello,
        Err(e) => {
            if let Some(reason) = e.refusal() {
                // Best effort: the peer may already be gone.
                let _ = send(&mut w, &server_refusal(reason)).await;
            }
            return Err(e);
        }
    };
    let ClientHello {
        suite,
        nonce_c,
        key_id,
    } = hello;
    send(&mut w, &server_hello_for(suite, &nonce_s)).await?;

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
    let verified = proof_mac(key, suite, ROLE_CLIENT, &key_id, &nonce_c, &nonce_s)
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
    finish.extend_from_slice(&server_proof_for(suite, key, &key_id, &nonce_c, &nonce_s));
    // A client that sent frames with its proof gets our proof in front of the answers to
    // them, in one write: it waits in the session's writer for the first flush. (Nothing more
    // is built before this wait: what lives across it sizes every connection's task.)
    let pending = if reader.has_complete_frame() {
        finish
    } else {
        send(&mut w, &finish).await?;
        Vec::new()
    };
    let (c2s, s2c) = direction_keys(suite, key, &key_id, &nonce_c, &nonce_s);
    let limits = policy.limits_for(suite);
    let opener = Direction::new(&c2s, limits);
    let sealer = Direction::new(&s2c, limits);
    Ok(Session {
        reader: SessionReader::with_direction(reader, opener, config.max_frame),
        writer: SessionWriter::with_direction(w, sealer, config.max_frame, pending),
        key_id,
    })
}
