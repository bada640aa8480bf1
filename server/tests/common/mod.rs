//! Helpers shared by the server crate's in-process tests.

// Each test crate includes this module and uses a part of it.
#![allow(dead_code)]

pub use rpckit_integration_tests::within;

/// A `rpckit_server::Server` running in this process on 127.0.0.1:0, on a thread of its own,
/// with a keyring of one fresh key.
pub struct InProcess {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// The id of its one key.
    pub id: rpckit_proto::KeyId,
    /// Its one key.
    pub key: rpckit_proto::SecretKey,
    /// Its live counts.
    pub stats: std::sync::Arc<rpckit_server::ServerStats>,
    /// Its keyring, to rotate keys.
    pub keyring: rpckit_server::KeyringHandle,
    stop: async_std::channel::Sender<()>,
    running: std::thread::JoinHandle<std::io::Result<()>>,
}

impl InProcess {
    /// Starts `service` with `config` under the key id `label`.
    pub fn start<S: rpckit_server::Service>(
        label: &str,
        service: S,
        config: rpckit_server::ServerConfig,
    ) -> Self {
        let id = rpckit_proto::KeyId::new(label).unwrap();
        let key = rpckit_proto::SecretKey::generate();
        let mut ring = rpckit_proto::Keyring::new();
        ring.insert(id.clone(), key.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        // The client library offers hmac-sha256, which the default (encrypted) refuses.
        let config = {
            let mut server_config = config;
            server_config.suites = rpckit_proto::SuiteSet::ALL;
            server_config
        };
        let server = rpckit_server::Server::new(service, ring, config);
        let stats = server.stats();
        let keyring = server.keyring_handle();
        let (stop, stop_rx) = async_std::channel::bounded::<()>(1);
        let running = std::thread::spawn(move || {
            async_std::task::block_on(server.run(listener, async move {
                let _ = stop_rx.recv().await;
            }))
        });
        InProcess {
            addr,
            id,
            key,
            stats,
            keyring,
            stop,
            running,
        }
    }

    /// Triggers the server's shutdown (as SIGTERM does for `rpc-server`), without waiting.
    /// Fails the test if the server has already stopped.
    pub fn shut_down(&self) {
        self.stop.try_send(()).expect("server still running");
    }

    /// Shuts the server down and returns what `Server::run` returned, failing the test if its
    /// thread panicked.
    pub fn stop(self) -> std::io::Result<()> {
        drop(self.stop);
        self.running.join().expect("server thread did not panic")
    }
}
