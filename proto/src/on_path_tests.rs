//! What a relay on the path, without the key, can make a client believe with the handshake's
//! unauthenticated bytes (robustness cases 41 and 42): refusals are not authenticated, so a
//! client must neither take a refused pipelined call for one that never ran, nor offer a
//! weaker suite because a refusal told it to.

use std::net::Shutdown;

use async_std::os::unix::net::UnixStream;
use futures_lite::future::zip;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};

use crate::demo::Request;
use crate::handshake::accept::accept_policy_with_nonce;
use crate::handshake::{
    connect_policy_with_nonce, server_refusal, HandshakeConfig, HandshakeError, NONCE_LEN,
    TYPE_SERVER_PROOF,
};
use crate::message::{decode_client, ClientMessage};
use crate::suite::{Suite, SuitePolicy};
use crate::test_support::{id, key, relay, ring, run, Recorder};
use crate::Refusal;

/// Length of the ClientHello these tests send (key id "test-key").
const HELLO_LEN: usize = 40 + 8;
/// Length of an accepting ServerHello.
const SERVER_HELLO_LEN: usize = 40;

fn offering(suite: Suite) -> SuitePolicy {
    SuitePolicy {
        offer: suite,
        ..SuitePolicy::default()
    }
}

#[test]
fn case_42_a_forged_suite_refusal_does_not_make_the_client_offer_a_weaker_suite() {
    run(async {
        for forged in [Refusal::UnsupportedSuite, Refusal::SuiteNotAllowed] {
            for suite in [Suite::Aes256Gcm, Suite::ChaCha20Poly1305] {
                let (client_sock, mut relay) = UnixStream::pair().unwrap();
                let (recorder, log) = Recorder::new(client_sock.clone());
                let forge = async {
                    let mut hello = [0u8; HELLO_LEN];
                    relay.read_exact(&mut hello).await.unwrap();
                    relay.write_all(&server_refusal(forged)).await.unwrap();
                    let _ = relay.shutdown(Shutdown::Write);
                    // Whatever the client sends next (nothing, if it does not downgrade).
                    let mut rest = Vec::new();
                    let _ = relay.read_to_end(&mut rest).await;
                    rest
                };
                let config = HandshakeConfig::default();
                let connect = async {
                    let result = connect_policy_with_nonce(
                        client_sock,
                        recorder,
                        &id(),
                        &key(),
                        &config,
                        &offering(suite),
                        [0x11; NONCE_LEN],
                        |_| (),
                    )
                    .await;
                    result.map(|_| ())
                };
                let (result, after) = zip(connect, forge).await;
                assert!(
                    matches!(result, Err(HandshakeError::Refused(r)) if r == forged),
                    "{result:?}"
                );
                // One hello, offering the suite asked for, and nothing after it.
                let writes = log.writes();
                assert_eq!(writes.len(), 1, "{suite}: {writes:?}");
                assert_eq!(writes[0][6], suite.code());
                assert!(
                    after.is_empty(),
                    "{suite}: sent after the refusal: {after:?}"
                );
            }
        }
    });
}

#[test]
fn case_41_a_forged_refusal_of_a_pipelined_proof_hides_a_call_the_server_received() {
    run(async {
        let (client_sock, relay_c) = UnixStream::pair().unwrap();
        let (relay_s, server_sock) = UnixStream::pair().unwrap();
        let config = HandshakeConfig::default();
        let ring = ring();
        let policy = offering(Suite::Aes256Gcm);

        let client = async {
            let call = ClientMessage::Call {
                id: 1,
                deadline: None,
                request: Request::Uppercase("did it run?".into()),
            };
            let result = connect_policy_with_nonce(
                client_sock.clone(),
                client_sock,
                &id(),
                &key(),
                &config,
                &policy,
                [0x11; NONCE_LEN],
                |writer| writer.push_client(&call).unwrap(),
            )
            .await;
            result.map(|_| ())
        };
        let server = async {
            let mut session = accept_policy_with_nonce(
                server_sock.clone(),
                server_sock,
                &ring,
                &config,
                &policy,
                [0x22; NONCE_LEN],
                |_| {},
            )
            .await
            .expect("the server accepts the genuine proof");
            let payload = session.reader.recv().await.unwrap().expect("the call");
            decode_client::<Request>(payload).unwrap()
        };
        // Client to server: passed on untouched. Server to client: the ServerHello, then a
        // forged refusal of the proof in place of the server's answer.
        let up = relay(relay_c.clone(), relay_s.clone(), usize::MAX, 0);
        let down = async {
            let (mut from, mut to) = (relay_s.clone(), relay_c.clone());
            let mut hello = [0u8; SERVER_HELLO_LEN];
            from.read_exact(&mut hello).await.unwrap();
            to.write_all(&hello).await.unwrap();
            let forged = [TYPE_SERVER_PROOF, Refusal::AuthFailed.code()];
            to.write_all(&forged).await.unwrap();
            let _ = to.shutdown(Shutdown::Write);
            let mut rest = Vec::new();
            let _ = from.read_to_end(&mut rest).await;
        };
        let ((client, server), _) = zip(zip(client, server), zip(up, down)).await;
        // The client reads a refusal, which nothing authenticates ...
        assert!(
            matches!(client, Err(HandshakeError::Refused(Refusal::AuthFailed))),
            "{client:?}"
        );
        // ... while the server authenticated the client and has its call: a client must
        // report a pipelined call refused this way as of unknown outcome, never as not sent.
        assert!(matches!(server, ClientMessage::Call { id: 1, .. }));
    });
}
