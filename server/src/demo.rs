//! The demo service behind the stock `rpc-server`: Echo, Uppercase, Ping and Sleep. It is one
//! ordinary [`Service`] implementation; the server does not special-case it.

use std::time::Duration;

use rpckit_proto::demo::{Request, Response};
use rpckit_proto::timer::Sleep;
use rpckit_proto::RpcError;

use crate::service::{CallContext, Service};

/// Longest `Sleep` the demo service accepts: one hour.
pub const MAX_SLEEP_MS: u64 = 3_600_000;

/// The demo service.
#[derive(Debug, Clone, Copy, Default)]
pub struct DemoService;

impl Service for DemoService {
    type Request = Request;
    type Response = Response;

    async fn call(&self, request: Request, _ctx: CallContext) -> Result<Response, RpcError> {
        match request {
            Request::Echo(bytes) => Ok(Response::Echo(bytes)),
            Request::Uppercase(text) => Ok(Response::Uppercase(text.to_uppercase())),
            Request::Ping => Ok(Response::Pong),
            Request::Sleep { ms } if ms > MAX_SLEEP_MS => Err(RpcError::Application(format!(
                "sleep of {ms} ms is over the limit of {MAX_SLEEP_MS} ms"
            ))),
            Request::Sleep { ms } => {
                Sleep::after(Duration::from_millis(ms)).await;
                Ok(Response::Slept { ms })
            }
        }
    }
}
