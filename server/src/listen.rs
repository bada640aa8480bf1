//! Binding the listening socket. With `SO_REUSEPORT` (Linux, the BSDs) several processes of
//! the same user may listen on one port at once and the kernel spreads new connections over
//! them: a new server can start on the port while the old one still drains, so no connection
//! is refused during a restart.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Socket, Type};

/// Connections the kernel queues for the listener before `accept` takes them.
const BACKLOG: i32 = 1024;

/// A listening socket on `addr`, ready for [`crate::Server::run`]. Like
/// `TcpListener::bind` (it sets `SO_REUSEADDR` too, so a port whose old connections are in
/// `TIME_WAIT` can be bound at once), and with `reuse_port` it also sets `SO_REUSEPORT`:
/// every process that binds the port with it shares the port.
pub fn bind_listener(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_listeners_share_a_port_only_with_reuse_port() {
        let first = bind_listener("127.0.0.1:0".parse().unwrap(), true).unwrap();
        let addr = first.local_addr().unwrap();
        let second = bind_listener(addr, true).expect("a second listener with SO_REUSEPORT");
        assert_eq!(second.local_addr().unwrap(), addr);
        let refused = bind_listener(addr, false).expect_err("without SO_REUSEPORT");
        assert_eq!(refused.kind(), io::ErrorKind::AddrInUse);
    }
}
