//! ICMP echo, through a candidate's path.
//!
//! Prefers the kernel's unprivileged ping sockets (`SOCK_DGRAM`, allowed for the groups in
//! `net.ipv4.ping_group_range`, which covers IPv6 too): the kernel sets the identifier and
//! delivers only replies to it. Otherwise raw sockets (CAP_NET_RAW), which see every ICMP
//! packet: replies are read once, by a `Hub`, and matched by source, identifier and sequence.
//! Either way a reply only counts for the request it answers, never for another probe's.

use super::path;
use crate::config::Family;
use crate::config::check::ProbePath;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::HashMap;
use std::io::{self, ErrorKind};
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;

/// Sequence numbers, distinct per probe within a run, counted from a random start.
static NEXT: AtomicU16 = AtomicU16::new(0);

/// What makes a run's echo requests hard to answer for anyone who did not see them: a random
/// identifier (raw sockets; the kernel picks a ping socket's), a random first sequence number,
/// and a random payload that a reply must echo. A spoofed reply must guess all of them.
struct Secret {
    ident: u16,
    seq: u16,
    cookie: [u8; 8],
}

fn secret() -> &'static Secret {
    static SECRET: OnceLock<Secret> = OnceLock::new();
    SECRET.get_or_init(|| {
        let mut r = [0u8; 12];
        // SAFETY: getrandom writes at most r.len() bytes into the live buffer.
        let n = unsafe { libc::getrandom(r.as_mut_ptr().cast(), r.len(), 0) };
        if n != r.len() as isize {
            // Never on Linux ≥ 3.17 with a seeded pool; the time is a poor but working fallback.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            r.copy_from_slice(&(t ^ u128::from(std::process::id()) << 64).to_le_bytes()[..12]);
        }
        Secret {
            ident: u16::from_le_bytes([r[0], r[1]]),
            seq: u16::from_le_bytes([r[2], r[3]]),
            cookie: r[4..12].try_into().expect("8 bytes"),
        }
    })
}

fn next_seq() -> u16 {
    secret()
        .seq
        .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))
}

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
                     drop-in {} {}",
                    path::DROP_IN,
                    path::WHERE
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

struct Waiter {
    tx: oneshot::Sender<Instant>,
    ifindex: Option<u32>,
}

/// The one socket that receives echo replies for every raw-socket probe of a family in a run.
///
/// A raw socket is handed a copy of every ICMP packet the host receives, so one raw socket per
/// probe would cost probes × packets: 6,000 probes took 2.5 s on loopback. Instead each probe
/// sends from its own raw socket (it carries the candidate's path) that is told to receive
/// nothing (`ICMP_FILTER`, checked before the kernel copies a packet), and this socket reads
/// every echo reply once and hands it to the probe waiting for its source, identifier and
/// sequence. It reads on a thread of its own, so that replies are taken off its queue while the
/// runtime's one thread is busy sending thousands of requests; the thread sleeps in `poll(2)`
/// on the socket and a pipe that [`Hub::stop`] writes to, so it wakes for a reply or to end.
pub struct Hub {
    family: Family,
    sock: Socket,
    /// Per awaited reply: who waits, and the interface it must arrive on (interface paths).
    waiting: Mutex<HashMap<(IpAddr, u16, u16), Waiter>>,
    /// Read end and write end of the pipe that ends the reader thread.
    stop: [OwnedFd; 2],
}

impl Hub {
    /// Opens the receiving raw socket and starts its reader thread.
    pub fn start(family: Family) -> io::Result<Arc<Hub>> {
        let (sock, kind) = open(family)?;
        if kind != Kind::Raw {
            return Err(io::Error::other("ICMP hub: expected a raw socket"));
        }
        set_filter(&sock, family, Some(family_reply(family)))?;
        set_pktinfo(&sock, family)?;
        // Room for bursts of replies: as much as the kernel grants without privileges
        // (net.core.rmem_max), more where CAP_NET_ADMIN allows forcing it.
        let want: libc::c_int = 8 << 20;
        // SAFETY: setsockopt reads one c_int from a live local.
        let forced = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&raw const want).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        } == 0;
        if !forced {
            let _ = sock.set_recv_buffer_size(want as usize);
        }
        sock.set_nonblocking(true)?;
        let hub = Arc::new(Hub {
            family,
            sock,
            waiting: Mutex::new(HashMap::new()),
            stop: stop_pipe()?,
        });
        let reader = hub.clone();
        std::thread::Builder::new()
            .name("icmp-replies".into())
            .spawn(move || reader.read())?;
        Ok(hub)
    }

    /// Ends the reader thread: it wakes at once and returns.
    pub fn stop(&self) {
        // SAFETY: one byte from a static to our own pipe; a full pipe already says "stop".
        unsafe { libc::write(self.stop[1].as_raw_fd(), b"!".as_ptr().cast(), 1) };
    }

    /// Waits until the socket has a packet (true) or the hub is stopped (false).
    fn wait(&self) -> bool {
        let mut fds = [self.sock.as_raw_fd(), self.stop[0].as_raw_fd()].map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
        // SAFETY: two live pollfds; EINTR just means look again.
        unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        fds[1].revents == 0
    }

    fn read(&self) {
        let mut buf = [0u8; 1500];
        while self.wait() {
            // Every packet queued so far, then back to waiting.
            while let Ok((n, from, ifindex)) = recv_with_ifindex(&self.sock, &mut buf) {
                self.take(&buf[..n], from, ifindex);
            }
        }
    }

    /// Hands an echo reply to the probe waiting for it, if one does.
    fn take(&self, bytes: &[u8], from: IpAddr, ifindex: Option<u32>) {
        let at = Instant::now();
        let Some((ident, seq)) = reply_ids(self.family, Kind::Raw, bytes) else {
            return;
        };
        let mut waiting = self.lock();
        let key = (from, ident, seq);
        // A reply on another interface than the probe's path is not its reply.
        if waiting
            .get(&key)
            .is_some_and(|w| w.ifindex.is_none_or(|want| Some(want) == ifindex))
            && let Some(w) = waiting.remove(&key)
        {
            let _ = w.tx.send(at);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(IpAddr, u16, u16), Waiter>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A pipe (read end, write end) whose write end wakes a `poll(2)` on its read end.
fn stop_pipe() -> io::Result<[OwnedFd; 2]> {
    let mut fds = [-1; 2];
    // SAFETY: pipe2 fills the two-element array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nothing else.
    Ok(fds.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn family_reply(family: Family) -> u8 {
    match family {
        Family::V4 => ECHO_REPLY_V4,
        Family::V6 => ECHO_REPLY_V6,
    }
}

/// Sends one echo request to `target` through `path` and waits for its reply until `until`:
/// on a ping socket of its own, or, where only raw sockets are allowed, through `hub`.
/// `Ok(None)`: no reply in time.
pub async fn echo(
    target: IpAddr,
    path: Option<&ProbePath>,
    until: Instant,
    hub: Option<&Hub>,
) -> io::Result<Option<Duration>> {
    let family = Family::of(&target);
    let (domain, proto) = match family {
        Family::V4 => (Domain::IPV4, Protocol::ICMPV4),
        Family::V6 => (Domain::IPV6, Protocol::ICMPV6),
    };
    let (sock, kind) = match hub {
        Some(_) => (Socket::new(domain, Type::RAW, Some(proto))?, Kind::Raw),
        None => (Socket::new(domain, Type::DGRAM, Some(proto))?, Kind::Ping),
    };
    if let Some(p) = path {
        path::apply(&sock, p, family)?;
    }
    sock.set_nonblocking(true)?;
    let seq = next_seq();
    let dest = SockAddr::from(SocketAddr::new(target, 0));
    if let Some(hub) = hub {
        set_filter(&sock, family, None)?;
        let ident = secret().ident;
        let key = (target, ident, seq);
        let (tx, rx) = oneshot::channel();
        let ifindex = match path.and_then(|p| p.interface.as_deref()) {
            Some(dev) => Some(ifindex_of(dev)?),
            None => None,
        };
        hub.lock().insert(key, Waiter { tx, ifindex });
        let start = Instant::now();
        let sent = sock.send_to(&packet(family, kind, ident, seq), &dest);
        let got = match sent {
            Ok(_) => tokio::time::timeout_at(until.into(), rx).await,
            Err(e) => {
                hub.lock().remove(&key);
                return Err(e);
            }
        };
        hub.lock().remove(&key);
        return Ok(match got {
            Ok(Ok(at)) => Some(at.saturating_duration_since(start)),
            _ => None,
        });
    }
    // SAFETY: the AsyncFd owns the socket, so its descriptor stays open and the same for as
    // long as the AsyncFd lives.
    let fd = unsafe { AsyncFd::register(sock) }.map_err(|e| e.into_parts().1)?;
    let start = Instant::now();
    // The kernel sets a ping socket's identifier (its local "port", known once the send bound
    // it) and delivers only replies that carry it, and with SO_BINDTODEVICE only those that
    // arrive on that device.
    fd.get_ref().send_to(&packet(family, kind, 0, seq), &dest)?;
    let ident = fd
        .get_ref()
        .local_addr()?
        .as_socket()
        .map_or(0, |a| a.port());
    let wait = async {
        let mut buf = [MaybeUninit::<u8>::uninit(); 128];
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

/// Lets the kernel queue on this raw socket only ICMP messages of type `pass` (`None`: none
/// at all), with `ICMP_FILTER` / `ICMP6_FILTER`, which are checked before a packet is copied.
fn set_filter(sock: &Socket, family: Family, pass: Option<u8>) -> io::Result<()> {
    // linux/icmp.h ICMP_FILTER (level SOL_RAW, 32 types), linux/icmpv6.h ICMPV6_FILTER (level
    // IPPROTO_ICMPV6, 256 types): a bit set per type blocks it.
    const SOL_RAW: libc::c_int = 255;
    const ICMP_FILTER: libc::c_int = 1;
    const ICMPV6_FILTER: libc::c_int = 1;
    let mut blocked = [u32::MAX; 8];
    if let Some(t) = pass {
        blocked[usize::from(t >> 5)] &= !(1 << (t & 31));
    }
    let (level, name, len) = match family {
        Family::V4 => (SOL_RAW, ICMP_FILTER, 4),
        Family::V6 => (libc::IPPROTO_ICMPV6, ICMPV6_FILTER, 32),
    };
    // SAFETY: setsockopt reads `len` bytes from a live array of at least that size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            blocked.as_ptr().cast(),
            len as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
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
    p.extend_from_slice(&secret().cookie);
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
    reply_ids(family, kind, bytes) == Some((ident, seq))
}

/// The identifier and sequence of an echo reply as received on this socket kind; `None` for
/// anything else.
fn reply_ids(family: Family, kind: Kind, bytes: &[u8]) -> Option<(u16, u16)> {
    // Raw IPv4 sockets deliver the IP header too.
    let icmp = if family == Family::V4 && kind == Kind::Raw {
        bytes.get(usize::from(bytes.first()? & 0x0f) * 4..)?
    } else {
        bytes
    };
    // An echo reply carries the request's payload: this run's cookie, or it is not ours.
    (icmp.len() >= 16
        && icmp[0] == family_reply(family)
        && icmp[1] == 0
        && icmp[8..16] == secret().cookie)
        .then(|| {
            (
                u16::from_be_bytes([icmp[4], icmp[5]]),
                u16::from_be_bytes([icmp[6], icmp[7]]),
            )
        })
}

/// Asks the kernel to tell on which interface each packet arrived (IP_PKTINFO, IPV6_PKTINFO).
fn set_pktinfo(sock: &Socket, family: Family) -> io::Result<()> {
    let on: libc::c_int = 1;
    let (level, name) = match family {
        Family::V4 => (libc::IPPROTO_IP, libc::IP_PKTINFO),
        Family::V6 => (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO),
    };
    // SAFETY: setsockopt reads one c_int from a live local.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Receives one packet: its length, its source address, and the interface it arrived on.
fn recv_with_ifindex(sock: &Socket, buf: &mut [u8]) -> io::Result<(usize, IpAddr, Option<u32>)> {
    let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: a zeroed msghdr is valid; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut from).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: recvmsg writes into the buffers the msghdr points at, within their lengths.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &raw mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let from = match i32::from(from.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for an AF_INET source.
            let a: libc::sockaddr_in = unsafe { std::ptr::read((&raw const from).cast()) };
            IpAddr::from(u32::from_be(a.sin_addr.s_addr).to_be_bytes())
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 for an AF_INET6 source.
            let a: libc::sockaddr_in6 = unsafe { std::ptr::read((&raw const from).cast()) };
            IpAddr::from(a.sin6_addr.s6_addr)
        }
        _ => return Err(io::Error::other("ICMP reply without an IP source")),
    };
    let mut ifindex = None;
    // SAFETY: the CMSG macros walk the control buffer recvmsg filled, within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&raw const msg);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let info: libc::in_pktinfo = std::ptr::read_unaligned(data.cast());
                    ifindex = Some(info.ipi_ifindex as u32);
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let info: libc::in6_pktinfo = std::ptr::read_unaligned(data.cast());
                    ifindex = Some(info.ipi6_ifindex);
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(&raw const msg, c);
        }
    }
    Ok((n as usize, from, ifindex))
}

/// The index of interface `dev`, for matching where replies arrive.
fn ifindex_of(dev: &str) -> io::Result<u32> {
    let name =
        std::ffi::CString::new(dev).map_err(|_| io::Error::other("interface name with NUL"))?;
    // SAFETY: if_nametoindex reads a NUL-terminated string.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(io::Error::new(
            ErrorKind::NotFound,
            format!("interface {dev}: {}", io::Error::last_os_error()),
        )),
        i => Ok(i),
    }
}

/// The Internet checksum (RFC 1071).
pub fn checksum(data: &[u8]) -> u16 {
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
            p.extend_from_slice(&secret().cookie);
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
        // The right identifier and sequence with another payload: a guess, not a reply.
        let mut forged = reply(ECHO_REPLY_V6, 5, 9);
        forged[8] ^= 1;
        assert!(
            !is_reply(Family::V6, Kind::Raw, &forged, 5, 9),
            "other payload"
        );
    }

    #[test]
    fn identifiers_and_sequence_numbers_are_not_predictable() {
        // Random per run: at the least, not the fixed start or a function of the pid alone.
        let s = secret();
        let seqs: Vec<u16> = (0..3).map(|_| next_seq()).collect();
        assert_eq!(seqs[1], seqs[0].wrapping_add(1));
        assert!(s.cookie != *b"nftfailv" && s.cookie != [0; 8]);
        assert!(s.seq != 0 || s.ident != 0);
    }

    #[test]
    fn echo_to_loopback_answers() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let until = Instant::now() + Duration::from_secs(2);
        let got = rt.block_on(async {
            let hub = match open(Family::V4)?.1 {
                Kind::Raw => Some(Hub::start(Family::V4)?),
                Kind::Ping => None,
            };
            let got = echo("127.0.0.1".parse().unwrap(), None, until, hub.as_deref()).await;
            hub.inspect(|h| h.stop());
            got
        });
        // Root (CI) has CAP_NET_RAW; elsewhere the error must name the sysctl or capability.
        match got {
            Ok(latency) => assert!(latency.is_some()),
            Err(e) => assert!(e.to_string().contains("ping_group_range"), "{e}"),
        }
    }
}
