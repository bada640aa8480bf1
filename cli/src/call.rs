//! `rpc-client call METHOD [ARGS...]`: one call to the demo service, its answer on stdout.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use rpckit_client::{CallError, Client, ClientConfig, ConnectError};
use rpckit_proto::demo::{Request, Response};
use rpckit_proto::{KeyId, RpcError, SecretKey};

use crate::{keys, parse_duration, Target};

/// Exit code: a local error (key file, arguments).
pub const EXIT_LOCAL: u8 = 1;
/// Exit code: cannot connect (nothing listening, refused, not an rpckit server).
pub const EXIT_CONNECT: u8 = 3;
/// Exit code: authentication failed, either way round.
pub const EXIT_AUTH: u8 = 4;
/// Exit code: the server answered with an error.
pub const EXIT_SERVER_ERROR: u8 = 5;
/// Exit code: no answer in time.
pub const EXIT_TIMEOUT: u8 = 6;
/// Exit code: the connection died after the call was sent.
pub const EXIT_UNKNOWN: u8 = 7;

/// Arguments of `call`.
#[derive(Args, Debug)]
pub struct CallArgs {
    /// Method: echo, uppercase, ping or sleep (any case).
    method: String,
    /// Arguments: the text for echo and uppercase (joined with spaces), milliseconds for sleep.
    args: Vec<String>,
    /// Print the answer as one JSON object.
    #[arg(long)]
    json: bool,
    /// Time allowed for the call, also sent to the server as its deadline.
    #[arg(long, env = "RPC_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
}

fn request(method: &str, args: &[String]) -> Result<Request, String> {
    match method.to_ascii_lowercase().as_str() {
        "echo" => Ok(Request::Echo(args.join(" ").into_bytes())),
        "uppercase" => Ok(Request::Uppercase(args.join(" "))),
        "ping" if args.is_empty() => Ok(Request::Ping),
        "ping" => Err("ping takes no arguments".into()),
        "sleep" => match args {
            [ms] => ms
                .parse()
                .map(|ms| Request::Sleep { ms })
                .map_err(|_| format!("sleep takes milliseconds, got {ms:?}")),
            _ => Err("usage: sleep MILLISECONDS".into()),
        },
        other => Err(format!(
            "unknown method {other:?}: use echo, uppercase, ping or sleep"
        )),
    }
}

/// Prints `rpc-client: <message>` on stderr and returns exit code `code`.
pub fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("rpc-client: {message}");
    ExitCode::from(code)
}

fn connect_failure(e: &ConnectError) -> ExitCode {
    match e {
        ConnectError::Auth(_) => fail(EXIT_AUTH, e),
        ConnectError::Timeout { .. } => fail(EXIT_TIMEOUT, e),
        ConnectError::GaveUp { last, .. } => connect_failure(last),
        _ => fail(EXIT_CONNECT, e),
    }
}

/// Runs the call and maps each outcome to its exit code.
pub fn run(target: &Target, args: CallArgs) -> ExitCode {
    let request = match request(&args.method, &args.args) {
        Ok(request) => request,
        Err(e) => return fail(EXIT_LOCAL, e),
    };
    let (key_id, key) = match keys::load(target) {
        Ok(found) => found,
        Err(e) => return fail(EXIT_LOCAL, e),
    };
    let outcome = async_std::task::block_on(async {
        let client = connect(target, key_id, key, target.connect_timeout, args.timeout).await?;
        let answer = client.call(request).await;
        client.close().await;
        answer
    });
    match outcome {
        Ok(response) => print(&response, args.json),
        Err(e) => call_failure(&e),
    }
}

/// Connects for one command, offering `--suite`, without reconnecting: TCP connect and
/// handshake together within `within` (one deadline, as `--connect-timeout` says), and calls
/// limited to `call_timeout`.
pub async fn connect(
    target: &Target,
    key_id: KeyId,
    key: SecretKey,
    within: Duration,
    call_timeout: Duration,
) -> Result<Client<Request, Response>, ConnectError> {
    let mut config = ClientConfig::default();
    config.connect_timeout = within;
    config.handshake_timeout = within;
    config.call_timeout = Some(call_timeout);
    config.reconnect_attempts = 0;
    config.suite = target.suite();
    let connecting = Client::connect(target.addr.clone(), key_id, key, config);
    async_std::future::timeout(within, connecting)
        .await
        .map_err(|_| ConnectError::Timeout {
            addr: target.addr.clone(),
            after: within,
        })?
}

/// Prints why a call failed (connecting included) and returns its exit code.
pub fn call_failure(e: &CallError) -> ExitCode {
    match e {
        CallError::Connect(e) => connect_failure(e),
        CallError::Rpc(RpcError::DeadlineExceeded) => fail(EXIT_TIMEOUT, e),
        CallError::Rpc(_) => fail(EXIT_SERVER_ERROR, e),
        CallError::Timeout(_) => fail(EXIT_TIMEOUT, e),
        CallError::OutcomeUnknown(_) => fail(EXIT_UNKNOWN, e),
        _ => fail(EXIT_LOCAL, e),
    }
}

fn print(response: &Response, json: bool) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let written = if json {
        let value = match response {
            Response::Echo(bytes) => serde_json::json!({ "echo": String::from_utf8_lossy(bytes) }),
            Response::Uppercase(text) => serde_json::json!({ "uppercase": text }),
            Response::Pong => serde_json::json!({ "ping": "pong" }),
            Response::Slept { ms } => serde_json::json!({ "sleep": { "slept_ms": ms } }),
        };
        writeln!(out, "{value}")
    } else {
        match response {
            Response::Echo(bytes) => out.write_all(bytes).and_then(|()| writeln!(out)),
            Response::Uppercase(text) => writeln!(out, "{text}"),
            Response::Pong => writeln!(out, "pong"),
            Response::Slept { ms } => writeln!(out, "slept {ms} ms"),
        }
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(EXIT_LOCAL, format!("cannot write the answer: {e}")),
    }
}
