//! PROXY protocol v2 from trusted proxies (`--trusted-proxies`): the client address in the
//! header stands for the peer in admission, penalties and logs; a trusted proxy's connection
//! without a valid header is closed; from anyone else a PROXY header is a bad hello.
//!
//! The "proxy" here is a relay in the test that accepts real clients, connects to the server
//! and writes a header naming a documentation address (192.0.2.x) before relaying bytes: the
//! address exists only inside the header, nothing connects to it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use rpckit_client::{Client, ClientConfig};
use rpckit_integration_tests::{within, ServerProcess, TestKey};
use rpckit_proto::demo::{Request, Response};

const STEP: Duration = Duration::from_secs(30);
const SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A PROXY v2 header for a TCP/IPv4 connection from `client` to `server`.
fn header(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(client), SocketAddr::V4(server)) = (client, server) else {
        panic!("IPv4 addresses only");
    };
    let mut h = SIGNATURE.to_vec();
    h.extend([0x21, 0x11, 0, 12]); // version 2, PROXY; TCP over IPv4; 12 address bytes
    h.extend(client.ip().octets());
    h.extend(server.ip().octets());
    h.extend(client.port().to_be_bytes());
    h.extend(server.port().to_be_bytes());
    h
}

/// A LOCAL header: the proxy's own connection (a health check).
fn local_header() -> Vec<u8> {
    let mut h = SIGNATURE.to_vec();
    h.extend([0x20, 0x00, 0, 0]);
    h
}

/// Relays up to `connections` client connections to `server`, each starting with a header
/// that names `client`. Returns the address clients connect to.
fn relay(server: SocketAddr, client: SocketAddr, connections: usize) -> SocketAddr {
    relay_with(server, header(client, server), connections)
}

/// Like [`relay`], with `header` sent first on each connection.
fn relay_with(server: SocketAddr, header: Vec<u8>, connections: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
    let addr = listener.local_addr().expect("relay address");
    std::thread::spawn(move || {
        for _ in 0..connections {
            let Ok((downstream, _)) = listener.accept() else {
                return;
            };
            let Ok(mut upstream) = TcpStream::connect(server) else {
                return;
            };
            if upstream.write_all(&header).is_err() {
                continue;
            }
            let (Ok(down2), Ok(up2)) = (downstream.try_clone(), upstream.try_clone()) else {
                continue;
            };
            std::thread::spawn(move || pipe(downstream, upstream));
            std::thread::spawn(move || pipe(up2, down2));
        }
    });
    addr
}

/// Copies `from` to `to` until `from` ends, then half-closes `to`.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

fn connect(addr: SocketAddr, key: &TestKey) -> Result<Client<Request, Response>, String> {
    within(
        STEP,
        Client::connect(
            addr.to_string(),
            key.id.clone(),
            key.key.clone(),
            ClientConfig::default(),
        ),
    )
    .map_err(|e| e.to_string())
}

fn uppercase(client: &Client<Request, Response>) {
    let answer = within(STEP, client.call(Request::Uppercase("hi".into())));
    assert_eq!(answer.expect("call"), Response::Uppercase("HI".into()));
}

/// Whether the server closes `stream` without sending anything (reads until it ends).
fn closed_without_a_word(stream: TcpStream) -> bool {
    read_until_closed(stream) == Some(0)
}

/// Reads until the server closes `stream`: how many bytes it sent first, or `None` if it did
/// not close within the step's time.
fn read_until_closed(mut stream: TcpStream) -> Option<usize> {
    stream.set_read_timeout(Some(STEP)).expect("read timeout");
    let mut buf = [0u8; 64];
    let mut total = 0;
    // Bounded: a refusal is a few bytes.
    for _ in 0..64 {
        match stream.read(&mut buf) {
            Ok(0) => return Some(total),
            Ok(n) => total += n,
            // A reset: the server closed with our bytes unread.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(total),
            Err(_) => return None,
        }
    }
    None
}

#[test]
fn a_client_behind_a_trusted_proxy_is_served_and_known_by_its_own_address() {
    let key = TestKey::new("proxied");
    let server = ServerProcess::start(&key.path, &["--trusted-proxies", "127.0.0.1/32"]);
    let client_addr: SocketAddr = "192.0.2.10:40000".parse().unwrap();
    let via = relay(server.addr, client_addr, 1);
    let client = connect(via, &key).expect("connect through the proxy");
    uppercase(&client);
    let line = server
        .wait_for_log("authenticated", STEP)
        .expect("an authenticated line");
    assert!(line.contains("192.0.2.10:40000"), "{line}");
}

#[test]
fn failed_proofs_through_the_proxy_penalise_the_header_address_only() {
    let key = TestKey::new("penalty");
    let wrong = TestKey::new("penalty"); // same id, another secret
    let server = ServerProcess::start(
        &key.path,
        &[
            "--trusted-proxies",
            "127.0.0.1/32",
            "--auth-failure-limit",
            "2",
        ],
    );
    let attacker = relay(server.addr, "192.0.2.10:40000".parse().unwrap(), 3);
    for _ in 0..2 {
        assert!(connect(attacker, &wrong).is_err(), "a wrong key is refused");
    }
    // The header's address is now refused, even with the right key...
    assert!(connect(attacker, &key).is_err(), "192.0.2.10 is penalised");
    server
        .wait_for_log("refused: address penalised", STEP)
        .filter(|line| line.contains("192.0.2.10"))
        .expect("the penalty names the header's address");
    // ...while another client through the same proxy is served.
    let other = relay(server.addr, "192.0.2.20:40000".parse().unwrap(), 1);
    uppercase(&connect(other, &key).expect("192.0.2.20 is not penalised"));
}

#[test]
fn a_proxy_header_from_an_untrusted_address_is_a_bad_hello() {
    let key = TestKey::new("untrusted");
    // Only 127.0.0.2 is trusted; the test's sockets come from 127.0.0.1.
    let server = ServerProcess::start(&key.path, &["--trusted-proxies", "127.0.0.2/32"]);
    let mut stream = TcpStream::connect(server.addr).expect("connect");
    let client_addr: SocketAddr = "192.0.2.10:40000".parse().unwrap();
    stream
        .write_all(&header(client_addr, server.addr))
        .expect("send header");
    assert!(read_until_closed(stream).is_some(), "closed");
    let line = server
        .wait_for_log("handshake failed", STEP)
        .expect("a failed handshake");
    assert!(
        line.contains("127.0.0.1") && line.contains("not an rpckit peer"),
        "{line}"
    );
    // A client straight from an untrusted address is served as usual.
    uppercase(&connect(server.addr, &key).expect("direct client"));
}

#[test]
fn a_trusted_proxy_without_a_valid_header_is_closed_and_others_are_served() {
    let key = TestKey::new("garbage");
    let server = ServerProcess::start(&key.path, &["--trusted-proxies", "127.0.0.1/32"]);

    let mut garbage = TcpStream::connect(server.addr).expect("connect");
    garbage.write_all(&[0x5a; 64]).expect("send garbage");
    assert!(closed_without_a_word(garbage));
    server
        .wait_for_log("without a valid PROXY header", STEP)
        .expect("the bad header is logged");

    // A header that declares more than the server accepts.
    let mut huge = TcpStream::connect(server.addr).expect("connect");
    let mut declared = SIGNATURE.to_vec();
    declared.extend([0x21, 0x11, 0xff, 0xff]);
    huge.write_all(&declared).expect("send header");
    assert!(closed_without_a_word(huge));

    // A trusted proxy that sends a plain rpckit hello is not let in either.
    assert!(connect(server.addr, &key).is_err(), "no header, no entry");

    // A LOCAL header keeps the proxy's own address, and the connection is served.
    let local = relay_with(server.addr, local_header(), 1);
    uppercase(&connect(local, &key).expect("connect with a LOCAL header"));

    // Clients with valid headers are unaffected.
    let via = relay(server.addr, "192.0.2.30:40000".parse().unwrap(), 1);
    uppercase(&connect(via, &key).expect("connect through the proxy"));
    server.expect_log_count("without a valid PROXY header", 3, STEP);
}
