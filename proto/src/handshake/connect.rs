//! The client side of the handshake: send the ClientHello offering one suite, read the
//! ServerHello, send the proof (with any pipelined first frames), check the server's proof,
//! and hand back the session.

use futures_lite::io::{AsyncRead, AsyncWrite};
use hmac::Mac;

use super::hello::client_hello_for;
use super::keys::direction_keys;
use super::proof::{client_proof_for, proof_mac, ROLE_SERVER};
use super::{
    need, nonce, send, with_timeout, HandshakeConfig, HandshakeError, Refusal, MAGIC, NONCE_LEN,
    PROOF_LEN, SERVER_HELLO_HEAD, SERVER_HELLO_OK, SERVER_PROOF_HEAD, STATUS_OK, TYPE_CLIENT_PROOF,
    TYPE_SERVER_HELLO, TYPE_SERVER_PROOF, VERSION,
};
use crate::frame::{FrameLimits, FrameReader};
use crate::keyring::{KeyId, SecretKey};
use crate::session::{Direction, Session, SessionReader, SessionWriter};
use crate::suite::SuitePolicy;

/// Client side: runs the handshake with key `key_id`/`key`, checks the server's proof, and
/// returns the authenticated session. Offers suite 1 (see [`connect_with_policy`]).
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

/// Like [`connect_pipelined`], offering the suite `policy.offer` instead of suite 1. The
/// client never falls back to another suite: a server that refuses the suite (status 3 or 9,
/// which nothing authenticates) fails the handshake with [`HandshakeError::Refused`], and a
/// ServerHello naming another suite with [`HandshakeError::UnsupportedSuite`].
pub async fn connect_with_policy<R, W, T>(
    r: R,
    w: W,
    key_id: &KeyId,
    key: &SecretKey,
    config: &HandshakeConfig,
    policy: &SuitePolicy,
    first: impl FnOnce(&mut SessionWriter<W>) -> T,
) -> Result<(Session<R, W>, T), HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    with_timeout(
        config.timeout,
        connect_policy_with_nonce(r, w, key_id, key, config, policy, nonce(), first),
    )
    .await
}

/// Like [`connect`], but lets `first` queue frames on the new session's writer (sealed with
/// its keys, from sequence number 0) that leave in the same write as the ClientProof, so the
/// first call costs no round trip of its own (PROTOCOL.md §3.5). Returns the session and what
/// `first` returned.
///
/// Those frames go out **before the server has proven that it holds the key**: a peer that
/// fails its proof (an impostor) has then seen them under suite 1 (which does not encrypt;
/// a third party on the path sees them anyway); under an encrypting suite it sees only their
/// sizes, since it cannot derive the keys without the secret. They cannot be replayed on
/// another session. Offers suite 1 (see [`connect_with_policy`]).
///
/// `first` runs just before the proof is written: if this fails after that, a genuine server
/// may have run the frames, **even if the failure is a refusal of the proof**
/// ([`HandshakeError::Refused`]): the ServerProof's status byte is not authenticated, so a
/// relay on the path can forge a refusal after passing the proof and the frames on to the
/// server. Only a server's own authenticated answers say what ran.
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
    let policy = SuitePolicy::integrity();
    connect_with_policy(r, w, key_id, key, config, &policy, first).await
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
    let policy = SuitePolicy::integrity();
    let (session, ()) =
        connect_policy_with_nonce(r, w, key_id, key, config, &policy, nonce_c, |_| ()).await?;
    Ok(session)
}

/// [`connect_with_policy`] with the client nonce given.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn connect_policy_with_nonce<R, W, T>(
    r: R,
    mut w: W,
    key_id: &KeyId,
    key: &SecretKey,
    config: &HandshakeConfig,
    policy: &SuitePolicy,
    nonce_c: [u8; NONCE_LEN],
    first: impl FnOnce(&mut SessionWriter<W>) -> T,
) -> Result<(Session<R, W>, T), HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let suite = policy.offer;
    let mut reader = FrameReader::new(r, FrameLimits::default());
    send(&mut w, &client_hello_for(suite, &nonce_c, key_id)).await?;

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
    if hello[SERVER_HELLO_HEAD] != suite.code() {
        return Err(HandshakeError::UnsupportedSuite {
            got: hello[SERVER_HELLO_HEAD],
        });
    }
    let mut nonce_s = [0u8; NONCE_LEN];
    nonce_s.copy_from_slice(&hello[SERVER_HELLO_HEAD + 1..]);
    reader.consume(SERVER_HELLO_OK);

    // The session's writer starts with the proof queued; `first` may queue frames after it,
    // and one write sends them all.
    let (c2s, s2c) = direction_keys(suite, key, key_id, &nonce_c, &nonce_s);
    let limits = policy.limits_for(suite);
    let mut proof = vec![TYPE_CLIENT_PROOF];
    proof.extend_from_slice(&client_proof_for(suite, key, key_id, &nonce_c, &nonce_s));
    let sealer = Direction::new(&c2s, limits);
    let mut writer = SessionWriter::with_direction(w, sealer, config.max_frame, proof);
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
    proof_mac(key, suite, ROLE_SERVER, key_id, &nonce_c, &nonce_s)
        .verify_slice(&finish[SERVER_PROOF_HEAD..])
        .map_err(|_| HandshakeError::BadServerProof)?;
    reader.consume(SERVER_PROOF_HEAD + PROOF_LEN);

    let session = Session {
        reader: SessionReader::with_direction(
            reader,
            Direction::new(&s2c, limits),
            config.max_frame,
        ),
        writer,
        key_id: key_id.clone(),
    };
    Ok((session, firsts))
}
