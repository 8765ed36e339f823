//! TCP connect checks, optionally through a candidate's path.

use super::path;
use crate::config::Family;
use crate::config::check::ProbePath;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;
use tokio::net::{TcpSocket, TcpStream};

/// Connects to `addr`, through `path` if given.
pub async fn connect(addr: SocketAddr, path: Option<&ProbePath>) -> io::Result<TcpStream> {
    let Some(p) = path.filter(|p| !p.is_empty()) else {
        return TcpStream::connect(addr).await;
    };
    TcpSocket::from_std_stream(socket(addr, p)?.into())
        .connect(addr)
        .await
}

/// A non-blocking TCP socket for `addr`'s family with `path` applied.
pub fn socket(addr: SocketAddr, path: &ProbePath) -> io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    let family = Family::of(&addr.ip());
    path::apply(&sock, path, family)?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}
