//! The two hellos (PROTOCOL.md §3.1–§3.3): their bytes, and the server's field-by-field
//! checks of the ClientHello.

use futures_lite::io::AsyncRead;

use super::{
    need, HandshakeError, Refusal, CLIENT_HELLO_FIXED, MAGIC, NONCE_LEN, SERVER_HELLO_HEAD,
    SERVER_HELLO_OK, STATUS_OK, TYPE_CLIENT_HELLO, TYPE_SERVER_HELLO, VERSION,
};
use crate::frame::FrameReader;
use crate::keyring::{KeyId, MAX_KEY_ID_LEN};
use crate::suite::{Suite, SuitePolicy};

/// The bytes of a ClientHello offering suite 1.
pub fn client_hello(nonce_c: &[u8; NONCE_LEN], key_id: &KeyId) -> Vec<u8> {
    client_hello_for(Suite::HmacSha256, nonce_c, key_id)
}

/// The bytes of a ClientHello offering `suite`.
pub fn client_hello_for(suite: Suite, nonce_c: &[u8; NONCE_LEN], key_id: &KeyId) -> Vec<u8> {
    let id = key_id.as_str().as_bytes();
    let mut out = Vec::with_capacity(CLIENT_HELLO_FIXED + id.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[VERSION, TYPE_CLIENT_HELLO, suite.code()]);
    out.extend_from_slice(nonce_c);
    out.push(id.len() as u8);
    out.extend_from_slice(id);
    out
}

/// The bytes of a ServerHello that accepts suite 1, carrying the server's nonce.
pub fn server_hello(nonce_s: &[u8; NONCE_LEN]) -> Vec<u8> {
    server_hello_for(Suite::HmacSha256, nonce_s)
}

/// The bytes of a ServerHello that accepts `suite`, carrying the server's nonce.
pub fn server_hello_for(suite: Suite, nonce_s: &[u8; NONCE_LEN]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SERVER_HELLO_OK);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[VERSION, TYPE_SERVER_HELLO, STATUS_OK, suite.code()]);
    out.extend_from_slice(nonce_s);
    out
}

/// The bytes of a ServerHello that refuses.
pub fn server_refusal(reason: Refusal) -> [u8; SERVER_HELLO_HEAD] {
    let [m0, m1, m2, m3] = MAGIC;
    [m0, m1, m2, m3, VERSION, TYPE_SERVER_HELLO, reason.code()]
}

/// What the server takes from a valid ClientHello.
pub(crate) struct ClientHello {
    /// The suite offered (known, and allowed by the server's policy).
    pub(crate) suite: Suite,
    /// The client's nonce.
    pub(crate) nonce_c: [u8; NONCE_LEN],
    /// The key id the client will prove.
    pub(crate) key_id: KeyId,
}

/// Reads and checks a ClientHello, each field as soon as its bytes have arrived
/// (PROTOCOL.md §3.1), so that an HTTP request or a stray client is refused after its first
/// four bytes, and a hello cut short after a bad field is refused without waiting for the
/// rest.
pub(crate) async fn read_client_hello<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    policy: &SuitePolicy,
) -> Result<ClientHello, HandshakeError> {
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
    let code = need(reader, 7).await?[6];
    let suite = Suite::from_code(code).ok_or(HandshakeError::UnsupportedSuite { got: code })?;
    if !policy.allows(suite) {
        return Err(HandshakeError::SuiteNotAllowed { suite });
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
    Ok(ClientHello {
        suite,
        nonce_c,
        key_id,
    })
}
