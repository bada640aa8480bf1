//! The demo service behind the stock `rpc-server`: Echo, Uppercase, Ping and Sleep. It is one
//! ordinary [`Service`] implementation; the server does not special-case it.

use std::time::Duration;

use async_io::Timer;
use rpckit_proto::demo::{Request, Response};
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
    const METHOD_NAMES: &'static [&'static str] = &["echo", "uppercase", "ping", "sleep"];

    fn method_name(request: &Request) -> &'static str {
        match request {
            Request::Echo(_) => "echo",
            Request::Uppercase(_) => "uppercase",
            Request::Ping => "ping",
            Request::Sleep { .. } => "sleep",
        }
    }

    async fn call(&self, request: Request, _ctx: CallContext) -> Result<Response, RpcError> {
        match request {
            Request::Echo(bytes) => Ok(Response::Echo(bytes)),
            // ASCII (the common case) is uppercased in place, in the request's own buffer.
            Request::Uppercase(mut text) if text.is_ascii() => {
                text.make_ascii_uppercase();
                Ok(Response::Uppercase(text))
            }
            Request::Uppercase(text) => Ok(Response::Uppercase(text.to_uppercase())),
            Request::Ping => Ok(Response::Pong),
            Request::Sleep { ms } if ms > MAX_SLEEP_MS => Err(RpcError::Application(format!(
                "sleep of {ms} ms is over the limit of {MAX_SLEEP_MS} ms"
            ))),
            Request::Sleep { ms } => {
                Timer::after(Duration::from_millis(ms)).await;
                Ok(Response::Slept { ms })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::Arc;

    fn upper(text: &str) -> Result<Response, RpcError> {
        let ctx = CallContext {
            id: 1,
            peer: SocketAddr::from(([127, 0, 0, 1], 1)),
            key_id: Arc::new(rpckit_proto::KeyId::new("test").unwrap()),
            deadline: None,
        };
        futures_lite::future::block_on(DemoService.call(Request::Uppercase(text.into()), ctx))
    }

    #[test]
    fn uppercase_handles_ascii_in_place_and_the_rest_by_unicode_rules() {
        assert_eq!(upper("hello"), Ok(Response::Uppercase("HELLO".into())));
        assert_eq!(upper(""), Ok(Response::Uppercase(String::new())));
        // Unicode uppercasing may change the length.
        assert_eq!(
            upper("straße é"),
            Ok(Response::Uppercase("STRASSE É".into()))
        );
    }
}
