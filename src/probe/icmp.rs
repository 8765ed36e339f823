//! ICMP echo, through a candidate's path.
//!
//! Prefers the kernel's unprivileged ping sockets (`SOCK_DGRAM`, allowed for the groups in
//! `net.ipv4.ping_group_range`, which covers IPv6 too): the kernel sets the identifier and
//! delivers only replies to it. Otherwise a raw socket (CAP_NET_RAW), which sees every ICMP
//! packet, so replies are matched by source, identifier and sequence. Either way a reply only
//! counts for the request it answers, never for another probe's.

use super::path;
use crate::config::Family;
use crate::config::check::ProbePath;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{self, ErrorKind};
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;

/// Sequence numbers, and identifiers on raw sockets, distinct per probe within a run.
static NEXT: AtomicU16 = AtomicU16::new(1);

/// What kind of socket an echo went out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ping,
    Raw,
}

/// Opens an ICMP socket for `family`: a ping socket if allowed, else a raw one.
pub fn open(family: Family) -> io::Result<(Socket, Kind)> {
    let (domain, proto) = match family {
        Family::V4 => (Domain::IPV4, Protocol::ICMPV4),
        Family::V6 => (Domain::IPV6, Protocol::ICMPV6),
    };
    let ping = match Socket::new(domain, Type::DGRAM, Some(proto)) {
        Ok(s) => return Ok((s, Kind::Ping)),
        Err(e) => e,
    };
    match Socket::new(domain, Type::RAW, Some(proto)) {
        Ok(s) => Ok((s, Kind::Raw)),
        Err(raw) if is_denied(&ping) && is_denied(&raw) => {
            // SAFETY: getegid has no preconditions.
            let gid = unsafe { libc::getegid() };
            Err(io::Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "ICMP echo: no unprivileged ping socket (sysctl net.ipv4.ping_group_range \
                     does not include group {gid}) and no raw socket (needs CAP_NET_RAW); \
                     allow one: `sysctl -w net.ipv4.ping_group_range=\"{gid} {gid}\"`, or the \
                     drop-in {} (see README, \"Privileges for uplink checks\")",
                    path::DROP_IN
                ),
            ))
        }
        Err(raw) => Err(io::Error::new(
            raw.kind(),
            format!(
                "ICMP echo socket: {}",
                super::describe_io_error(if is_denied(&raw) { &ping } else { &raw })
            ),
        )),
    }
}

fn is_denied(e: &io::Error) -> bool {
    e.kind() == ErrorKind::PermissionDenied
}

/// Sends one echo request to `target` through `path` and waits for its reply until `until`.
/// `Ok(None)`: no reply in time.
pub async fn echo(
    target: IpAddr,
    path: Option<&ProbePath>,
    until: Instant,
) -> io::Result<Option<Duration>> {
    let family = if target.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    };
    let (sock, kind) = open(family)?;
    if let Some(p) = path {
        path::apply(&sock, p, family)?;
    }
    sock.set_nonblocking(true)?;
    let seq = NEXT.fetch_add(1, Ordering::Relaxed);
    // A raw socket picks its own identifier; on a ping socket the kernel overwrites it with
    // the socket's and delivers only matching replies.
    let ident = (std::process::id() as u16) ^ seq.rotate_left(8);
    let request = packet(family, kind, ident, seq);
    // SAFETY: the AsyncFd owns the socket, so its descriptor stays open and the same for as
    // long as the AsyncFd lives.
    let fd = unsafe { AsyncFd::register(sock) }.map_err(|e| e.into_parts().1)?;
    let start = Instant::now();
    let dest = SockAddr::from(SocketAddr::new(target, 0));
    fd.get_ref().send_to(&request, &dest)?;
    // A ping socket's identifier is its local "port", known once the send bound it.
    let ident = match kind {
        Kind::Raw => ident,
        Kind::Ping => fd
            .get_ref()
            .local_addr()?
            .as_socket()
            .map_or(ident, |a| a.port()),
    };
    let wait = async {
        let mut buf = [MaybeUninit::<u8>::uninit(); 1500];
        loop {
            let mut guard = fd.readable().await?;
            match guard.try_io(|s| s.get_ref().recv_from(&mut buf)) {
                Ok(Ok((n, from))) => {
                    // SAFETY: recv_from initialised the first n bytes.
                    let bytes: &[u8] =
                        unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
                    let from = from.as_socket().map(|a| a.ip());
                    if from == Some(target) && is_reply(family, kind, bytes, ident, seq) {
                        return Ok::<_, io::Error>(start.elapsed());
                    }
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    };
    match tokio::time::timeout_at(until.into(), wait).await {
        Ok(Ok(latency)) => Ok(Some(latency)),
        Ok(Err(e)) => Err(e),
        Err(_) => Ok(None),
    }
}

/// An echo request: type, code, checksum, identifier, sequence, then a short payload.
fn packet(family: Family, kind: Kind, ident: u16, seq: u16) -> Vec<u8> {
    let kind_byte = match family {
        Family::V4 => ECHO_REQUEST_V4,
        Family::V6 => ECHO_REQUEST_V6,
    };
    let mut p = vec![kind_byte, 0, 0, 0];
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"nftfailv");
    // The kernel fills in the checksum for ping sockets and for ICMPv6; only raw ICMPv4
    // needs it from us.
    if family == Family::V4 && kind == Kind::Raw {
        let sum = checksum(&p);
        p[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    p
}

/// Whether `bytes` (as received on this socket kind) is the reply to (ident, seq).
fn is_reply(family: Family, kind: Kind, bytes: &[u8], ident: u16, seq: u16) -> bool {
    // Raw IPv4 sockets deliver the IP header too.
    let icmp = if family == Family::V4 && kind == Kind::Raw {
        let Some(&first) = bytes.first() else {
            return false;
        };
        match bytes.get(usize::from(first & 0x0f) * 4..) {
            Some(rest) => rest,
            None => return false,
        }
    } else {
        bytes
    };
    let reply = match family {
        Family::V4 => ECHO_REPLY_V4,
        Family::V6 => ECHO_REPLY_V6,
    };
    icmp.len() >= 8
        && icmp[0] == reply
        && icmp[1] == 0
        && u16::from_be_bytes([icmp[4], icmp[5]]) == ident
        && u16::from_be_bytes([icmp[6], icmp[7]]) == seq
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_request_verifies_to_zero() {
        let p = packet(Family::V4, Kind::Raw, 0x1234, 7);
        assert_eq!(checksum(&p), 0);
    }

    #[test]
    fn only_the_reply_to_this_request_matches() {
        let reply = |t: u8, id: u16, seq: u16| {
            let mut p = vec![t, 0, 0, 0];
            p.extend_from_slice(&id.to_be_bytes());
            p.extend_from_slice(&seq.to_be_bytes());
            p
        };
        let ok = reply(ECHO_REPLY_V6, 5, 9);
        assert!(is_reply(Family::V6, Kind::Raw, &ok, 5, 9));
        assert!(
            !is_reply(Family::V6, Kind::Raw, &ok, 5, 10),
            "other sequence"
        );
        assert!(
            !is_reply(Family::V6, Kind::Raw, &ok, 6, 9),
            "other identifier"
        );
        let request = reply(ECHO_REQUEST_V6, 5, 9);
        assert!(
            !is_reply(Family::V6, Kind::Raw, &request, 5, 9),
            "own request"
        );
        // Raw IPv4: skipped IP header of 20 bytes.
        let mut v4 = vec![0x45; 1];
        v4.extend_from_slice(&[0; 19]);
        v4.extend_from_slice(&reply(ECHO_REPLY_V4, 5, 9));
        assert!(is_reply(Family::V4, Kind::Raw, &v4, 5, 9));
        assert!(!is_reply(Family::V4, Kind::Ping, &v4, 5, 9));
    }

    #[test]
    fn echo_to_loopback_answers() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let until = Instant::now() + Duration::from_secs(2);
        let got = rt.block_on(echo("127.0.0.1".parse().unwrap(), None, until));
        // Root (CI) has CAP_NET_RAW; elsewhere the error must name the sysctl or capability.
        match got {
            Ok(latency) => assert!(latency.is_some()),
            Err(e) => assert!(e.to_string().contains("ping_group_range"), "{e}"),
        }
    }
}
