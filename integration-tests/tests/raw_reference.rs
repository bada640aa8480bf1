//! The raw reference server that `make bench` measures the kit against, driven through raw
//! sockets: it answers length-prefixed frames however the byte stream cuts them (several in one
//! read, one split across many, one bigger than its read buffer), and an oversized header ends
//! only its own connection. A benchmark against a reference that mishandles frames would
//! measure nothing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use rpckit_integration_tests::RawReference;

/// How long a read waits for the reference before the test fails.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One reference frame: `len (u32 BE) | payload`.
fn raw_frame(payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("test payloads fit a u32");
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend_from_slice(payload);
    frame
}

/// Reads exactly `n` bytes (bounded by the socket's read timeout).
#[track_caller]
fn read_exactly(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf).expect("the reference answers");
    buf
}

#[test]
fn answers_frames_however_they_are_cut_and_closes_on_an_oversized_one() {
    let reference = RawReference::start();
    let connect = || {
        let s = TcpStream::connect(reference.addr).expect("connect to the reference");
        s.set_read_timeout(Some(READ_TIMEOUT))
            .expect("read timeout");
        s
    };
    let mut stream = connect();

    // Three frames in one write, then their answers in order.
    let payloads: [&[u8]; 3] = [b"hello", b"", b"Mixed Case 123"];
    let batch: Vec<u8> = payloads.iter().flat_map(|p| raw_frame(p)).collect();
    stream.write_all(&batch).expect("write");
    let expected: Vec<u8> = payloads
        .iter()
        .flat_map(|p| raw_frame(&p.to_ascii_uppercase()))
        .collect();
    assert_eq!(read_exactly(&mut stream, expected.len()), expected);

    // One frame a byte at a time: the reference waits for the rest of it.
    let one = raw_frame(b"split across reads");
    for byte in &one {
        stream.write_all(std::slice::from_ref(byte)).expect("write");
    }
    assert_eq!(
        read_exactly(&mut stream, one.len()),
        raw_frame(b"SPLIT ACROSS READS")
    );

    // A frame three times the size of the reference's read buffer, followed in the same
    // write by the start of the next frame, which is completed later.
    let big: Vec<u8> = (0..48 * 1024).map(|i| b"abcxyz"[i % 6]).collect();
    let tail = raw_frame(b"after the big one");
    let mut write = raw_frame(&big);
    write.extend_from_slice(&tail[..3]);
    stream.write_all(&write).expect("write");
    assert_eq!(
        read_exactly(&mut stream, 4 + big.len()),
        raw_frame(&big.to_ascii_uppercase())
    );
    stream.write_all(&tail[3..]).expect("write");
    assert_eq!(
        read_exactly(&mut stream, tail.len()),
        raw_frame(b"AFTER THE BIG ONE")
    );

    // A header announcing more than the reference accepts (8 MiB) ends that connection...
    let mut other = connect();
    other
        .write_all(&(8 * 1024 * 1024 + 1u32).to_be_bytes())
        .expect("write");
    let mut rest = Vec::new();
    let closed = other.read_to_end(&mut rest);
    assert!(
        matches!(closed, Ok(0)) || closed.is_err(),
        "the reference closes the connection: {closed:?}, read {rest:?}"
    );
    assert!(rest.is_empty(), "no answer to an oversized frame");

    // ... and only that one.
    stream.write_all(&raw_frame(b"still here")).expect("write");
    assert_eq!(read_exactly(&mut stream, 14), raw_frame(b"STILL HERE"));
}
