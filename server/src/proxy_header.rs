//! The PROXY protocol v2 header (HAProxy's `send-proxy-v2`, cloud load balancers) that a
//! trusted proxy sends before its client's bytes, naming the client's real address. It is read
//! only from addresses in [`crate::ServerConfig::trusted_proxies`], before anything else,
//! within the hello deadline and a size bound, and parsed by the `ppp` crate. The real address
//! then stands for the peer everywhere: admission, penalties and logs.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use async_io::{Async, Timer};
use futures_lite::future;
use futures_lite::io::AsyncReadExt;
use ppp::v2::{Addresses, Command, Header, ParseError, Protocol};

/// Bytes of the header's fixed part: signature, version and command, family, length.
const FIXED: usize = 16;
/// Most bytes after the fixed part (addresses and TLVs) accepted; HAProxy's own TLVs (unique
/// id, TLS details) fit well within it.
pub(crate) const MAX_PROXY_HEADER_BODY: usize = 2048;

/// Why a trusted proxy's connection has no usable header.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyHeaderError {
    /// The header did not arrive within the hello deadline.
    #[error("no PROXY v2 header within {0:?}")]
    Timeout(Duration),
    /// Reading failed or the peer closed first.
    #[error("reading the PROXY v2 header failed: {0}")]
    Io(#[from] io::Error),
    /// The bytes are not a valid PROXY v2 header.
    #[error("not a valid PROXY v2 header: {0}")]
    Invalid(ParseError),
    /// The header declares more bytes than accepted.
    #[error("PROXY v2 header of {len} bytes after its fixed part exceeds the limit of {limit}")]
    TooLong {
        /// Declared length after the fixed part.
        len: usize,
        /// [`MAX_PROXY_HEADER_BODY`].
        limit: usize,
    },
    /// A PROXY command for a datagram protocol on a stream connection.
    #[error("PROXY v2 header names a datagram protocol")]
    Datagram,
}

/// Reads the PROXY v2 header at the start of `stream`, and nothing after it, within
/// `timeout`. The client's real address for a PROXY command with an IPv4 or IPv6 source;
/// `None` for a LOCAL command (the proxy's own connection, a health check) or an address
/// family without an IP source (the connection then keeps the proxy's address).
pub(crate) async fn read_proxy_header(
    stream: &Async<TcpStream>,
    timeout: Duration,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let read = async {
        let mut reader = stream;
        let mut header = vec![0u8; FIXED];
        reader.read_exact(&mut header).await?;
        let len = match Header::try_from(header.as_slice()) {
            Ok(_) => 0,
            Err(ParseError::Partial(_, len)) => len,
            Err(e) => return Err(ProxyHeaderError::Invalid(e)),
        };
        if len > MAX_PROXY_HEADER_BODY {
            return Err(ProxyHeaderError::TooLong {
                len,
                limit: MAX_PROXY_HEADER_BODY,
            });
        }
        header.resize(FIXED + len, 0);
        reader.read_exact(&mut header[FIXED..]).await?;
        let header = Header::try_from(header.as_slice()).map_err(ProxyHeaderError::Invalid)?;
        client_address(&header)
    };
    future::or(read, async {
        Timer::after(timeout).await;
        Err(ProxyHeaderError::Timeout(timeout))
    })
    .await
}

/// The client's address a parsed header names, if any.
fn client_address(header: &Header<'_>) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    if header.command == Command::Local {
        return Ok(None);
    }
    if header.protocol == Protocol::Datagram {
        return Err(ProxyHeaderError::Datagram);
    }
    Ok(match header.addresses {
        Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        Addresses::Unspecified | Addresses::Unix(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

    fn v4_header(command: u8, family_protocol: u8, src: [u8; 4], port: u16) -> Vec<u8> {
        let mut h = SIGNATURE.to_vec();
        h.extend([0x20 | command, family_protocol, 0, 12]);
        h.extend(src);
        h.extend([127, 0, 0, 1]);
        h.extend(port.to_be_bytes());
        h.extend(7878u16.to_be_bytes());
        h
    }

    /// Writes `bytes` then `after` to a fresh connection and reads the header on the server
    /// side; also returns what follows the header, to show none of it was consumed.
    fn read(bytes: &[u8]) -> (Result<Option<SocketAddr>, ProxyHeaderError>, Vec<u8>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client.write_all(bytes).unwrap();
        client.write_all(b"RPCK").unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let stream = Async::new(accepted).unwrap();
        futures_lite::future::block_on(async {
            let result = read_proxy_header(&stream, Duration::from_secs(30)).await;
            let mut rest = Vec::new();
            let _ = (&stream).read_to_end(&mut rest).await;
            (result, rest)
        })
    }

    #[test]
    fn a_proxy_command_names_the_client_and_leaves_the_rest_unread() {
        let (result, rest) = read(&v4_header(1, 0x11, [192, 0, 2, 10], 5000));
        assert_eq!(result.unwrap(), Some("192.0.2.10:5000".parse().unwrap()));
        assert_eq!(rest, b"RPCK");
    }

    #[test]
    fn local_keeps_the_proxy_address() {
        let mut local = SIGNATURE.to_vec();
        local.extend([0x20, 0x00, 0, 0]);
        let (result, rest) = read(&local);
        assert_eq!(result.unwrap(), None);
        assert_eq!(rest, b"RPCK");
    }

    #[test]
    fn bad_headers_are_errors() {
        let (result, _) = read(b"RPCK\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00");
        assert!(
            matches!(result, Err(ProxyHeaderError::Invalid(_))),
            "{result:?}"
        );
        let (result, _) = read(&v4_header(1, 0x12, [192, 0, 2, 10], 5000));
        assert!(
            matches!(result, Err(ProxyHeaderError::Datagram)),
            "{result:?}"
        );
        let mut long = SIGNATURE.to_vec();
        long.extend([0x21, 0x11, 0xff, 0xff]);
        let (result, _) = read(&long);
        assert!(
            matches!(result, Err(ProxyHeaderError::TooLong { len: 65535, .. })),
            "{result:?}"
        );
        // Cut short: the stream ends inside the addresses.
        let (result, _) = read(&v4_header(1, 0x11, [192, 0, 2, 10], 5000)[..20]);
        assert!(matches!(result, Err(ProxyHeaderError::Io(_))), "{result:?}");
    }
}
