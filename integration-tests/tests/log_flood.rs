//! Case 40: a flood of refused connections keeps the log readable. The real `rpc-server`, held
//! at `--max-connections 1` by one authenticated client, refuses 10,000 connections `Busy`;
//! it logs the first few refusals of each window one by one and sums up the rest in one line
//! per window, so the whole log stays a few dozen lines and the summaries account for every
//! refusal that was not logged.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use rpckit_client::ClientConfig;
use rpckit_integration_tests::{client, ServerProcess, TestKey, STOP_TIMEOUT};
use rpckit_proto::demo::{Request, Response};
use rpckit_proto::handshake::server_refusal;
use rpckit_proto::Refusal;

/// Connections refused in the flood.
const FLOOD: usize = 10_000;
/// Threads connecting at once.
const THREADS: usize = 4;
/// How long the whole flood, and the summaries after it, may take.
const STEP: Duration = Duration::from_secs(60);
/// The one-by-one line of a refusal for the connection limit.
const REFUSED: &str = "refused: connection limit reached";
/// The summary lines' reason field for it.
const SUMMARY: &str = "refused_connection_limit";

/// Opens one connection and reads what the server says until it closes: the refusal, if it
/// sent one (past 256 refusals in progress it closes without one).
fn refused_once(addr: SocketAddr) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(STEP))?;
    let mut said = Vec::new();
    // The server half-closes after its refusal: a bounded read to the end.
    (&mut stream).take(64).read_to_end(&mut said)?;
    Ok(said)
}

/// The `suppressed=N` field of a summary line.
fn suppressed(line: &str) -> usize {
    line.split("suppressed=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no suppressed= count in {line:?}"))
}

/// Refusals logged one by one, and those the summaries say were not.
fn accounted(server: &ServerProcess) -> (usize, usize) {
    let log = server.log_text();
    let one_by_one = log.lines().filter(|l| l.contains(REFUSED)).count();
    let summed = log
        .lines()
        .filter(|l| l.contains(SUMMARY))
        .map(suppressed)
        .sum();
    (one_by_one, summed)
}

#[test]
fn case_40_ten_thousand_refused_connections_write_a_few_dozen_log_lines() {
    let key = TestKey::new("flood");
    let mut server = ServerProcess::start(
        &key.path,
        &[
            "--max-connections",
            "1",
            "--log-level",
            "info",
            "--log-window",
            "2s",
        ],
    );
    // The one connection the server allows, authenticated and kept through the flood.
    let held = client(server.addr, &key, ClientConfig::default());
    let ping = |c: &rpckit_client::Client<Request, Response>| {
        async_std::task::block_on(c.call(Request::Ping))
    };
    assert!(matches!(ping(&held), Ok(Response::Pong)));

    let busy = server_refusal(Refusal::Busy);
    let addr = server.addr;
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            std::thread::spawn(move || {
                let mut told_busy = 0;
                for _ in 0..FLOOD / THREADS {
                    match refused_once(addr) {
                        Ok(said) if said == busy => told_busy += 1,
                        Ok(said) => assert!(said.is_empty(), "not a refusal: {said:02x?}"),
                        Err(e) => panic!("connecting to the server failed: {e}"),
                    }
                }
                told_busy
            })
        })
        .collect();
    let told_busy: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(told_busy > FLOOD / 2, "{told_busy} of {FLOOD} told Busy");

    // Every refusal is either logged or in a summary; the last window's summary comes when
    // it ends (each summary line wakes this wait).
    for _ in 0..FLOOD {
        let (one_by_one, summed) = accounted(&server);
        if one_by_one + summed >= FLOOD {
            break;
        }
        if server.wait_for_log(SUMMARY, STEP).is_none() {
            break;
        }
    }
    assert!(matches!(ping(&held), Ok(Response::Pong)), "still serving");
    drop(held);
    let status = server.stop(STOP_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{}", server.log_text());

    let (one_by_one, summed) = accounted(&server);
    let log = server.log_text();
    assert_eq!(
        one_by_one + summed,
        FLOOD,
        "{one_by_one} logged + {summed} summed up:\n{log}"
    );
    assert!(one_by_one <= 5 * 10, "{one_by_one} refusals logged:\n{log}");
    let lines = log.lines().count();
    assert!(
        lines <= 40,
        "{lines} log lines for {FLOOD} refusals:\n{log}"
    );
    assert!(
        log.contains("connections: connection limit reached, in the last 2 s"),
        "{log}"
    );
}
