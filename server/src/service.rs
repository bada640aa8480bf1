//! The `Service` trait: what a user of the kit implements to serve their own request and
//! response enums. The server knows nothing else about the methods it serves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rpckit_proto::{KeyId, RpcError};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A service: decodes into `Request`, answers with `Response` or an [`RpcError`].
///
/// The connection's task polls each call's handler once, in place: a handler that finishes
/// then is answered without a task of its own. One that has to wait (it awaited something not
/// yet ready) goes on in a task of its own, so a slow handler does not hold up other calls on
/// the same connection. Work that does not await holds up its connection and its executor
/// thread while it runs: a handler that blocks the thread (heavy CPU work, blocking I/O)
/// should move that work off the executor, e.g. with `async_std::task::spawn_blocking`. A
/// handler that panics fails only its own call, with [`RpcError::Internal`].
///
///
/// Metrics name each call by its method: a service names its own with
/// [`Service::METHOD_NAMES`] and [`Service::method_name`] (both optional; without them every
/// call counts as `call`).
///
/// ```
/// use rpckit_server::{CallContext, Service};
/// use rpckit_proto::RpcError;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Deserialize)]
/// enum Req { Add(i64, i64) }
/// #[derive(Serialize)]
/// enum Resp { Sum(i64) }
///
/// struct Calculator;
///
/// impl Service for Calculator {
///     type Request = Req;
///     type Response = Resp;
///     async fn call(&self, request: Req, _ctx: CallContext) -> Result<Resp, RpcError> {
///         match request {
///             Req::Add(a, b) => a
///                 .checked_add(b)
///                 .map(Resp::Sum)
///                 .ok_or_else(|| RpcError::Application("overflow".into())),
///         }
///     }
/// }
/// ```
pub trait Service: Send + Sync + 'static {
    /// The request enum clients send.
    type Request: DeserializeOwned + Send + 'static;
    /// The response enum this service answers with.
    type Response: Serialize + Send + 'static;

    /// Every name [`Service::method_name`] gives, for the `method` label of the server's
    /// metrics ([`crate::metrics::ServerMetrics::new`]). Default `["call"]`.
    const METHOD_NAMES: &'static [&'static str] = &["call"];

    /// The method a request calls, one of [`Service::METHOD_NAMES`] (a name not in that
    /// list is counted as `other`). Called once per call, and only when metrics are on.
    /// Default `"call"`.
    fn method_name(request: &Self::Request) -> &'static str {
        let _ = request;
        "call"
    }

    /// Handles one call. The future is dropped if the call is cancelled or its deadline passes.
    fn call(
        &self,
        request: Self::Request,
        ctx: CallContext,
    ) -> impl Future<Output = Result<Self::Response, RpcError>> + Send;
}

/// What a handler knows about the call it serves.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The call id the client chose.
    pub id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// The key id the client authenticated with.
    pub key_id: Arc<KeyId>,
    /// When the client stops waiting, if it set a deadline. The server answers
    /// `DeadlineExceeded` and drops the handler at this instant.
    pub deadline: Option<Instant>,
}
