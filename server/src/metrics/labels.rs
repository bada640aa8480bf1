//! The label values of the server's metrics: why a connection was refused, how a handshake
//! ended and how a call ended, each an enum whose variants are the label's only values.

use rpckit_proto::RpcError;

/// Declares a label enum: its variants, their label values, and `ALL` in index order.
macro_rules! label_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $value:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// Every value, in label order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The label value.
            pub fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $value,)*
                }
            }
        }
    };
}

label_enum!(
    /// Why a connection was refused (label `reason` of `rpckit_connections_refused_total`).
    RefusalReason {
        /// `--max-connections` reached.
        ConnectionLimit => "connection_limit",
        /// `--max-unauthenticated` reached.
        Unauthenticated => "too_many_unauthenticated",
        /// The address is penalised after failed authentications.
        Penalised => "penalised",
    }
);

label_enum!(
    /// How a handshake ended (label `outcome` of `rpckit_handshakes_total`).
    HandshakeOutcome {
        /// Authenticated.
        Ok => "ok",
        /// The client's proof did not verify.
        BadProof => "bad_proof",
        /// The client named a key id the server does not hold.
        UnknownKey => "unknown_key",
        /// Not finished within the handshake deadline.
        Timeout => "timeout",
        /// Not an rpckit peer, a wrong version, or a wrong message.
        ProtocolError => "protocol_error",
        /// The peer closed or reset the connection.
        PeerClosed => "peer_closed",
        /// Another connection took its place among the unauthenticated ones.
        Evicted => "evicted",
    }
);

label_enum!(
    /// How a call ended (label `outcome` of `rpckit_calls_total`).
    CallOutcome {
        /// The handler answered.
        Ok => "ok",
        /// The handler answered with an application error.
        ApplicationError => "application_error",
        /// The request did not decode or named an unknown method.
        BadRequest => "bad_request",
        /// Refused: too many calls in flight.
        Overloaded => "overloaded",
        /// The client's deadline passed.
        DeadlineExceeded => "deadline_exceeded",
        /// The client cancelled it.
        Cancelled => "cancelled",
        /// The handler panicked.
        Internal => "internal",
        /// Answered `ShuttingDown` at the end of the grace period.
        ShuttingDown => "shutting_down",
    }
);

impl CallOutcome {
    /// The outcome of a call answered with `result`.
    pub fn of<R>(result: &Result<R, RpcError>) -> Self {
        match result {
            Ok(_) => CallOutcome::Ok,
            Err(e) => CallOutcome::of_error(e),
        }
    }

    /// The outcome of a call answered with `error`.
    pub fn of_error(error: &RpcError) -> Self {
        match error {
            RpcError::Application(_) => CallOutcome::ApplicationError,
            RpcError::UnknownMethod(_) | RpcError::Protocol(_) => CallOutcome::BadRequest,
            RpcError::Overloaded => CallOutcome::Overloaded,
            RpcError::DeadlineExceeded => CallOutcome::DeadlineExceeded,
            RpcError::Cancelled => CallOutcome::Cancelled,
            RpcError::ShuttingDown => CallOutcome::ShuttingDown,
            _ => CallOutcome::Internal,
        }
    }
}
