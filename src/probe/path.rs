//! Sending a probe the way a candidate's traffic goes: bound to an interface
//! (`SO_BINDTODEVICE`), from a source address (bind), with a firewall mark (`SO_MARK`, routed by
//! the policy-routing rules for that mark). Without this, every probe follows the host's main
//! route, and a check of uplink 2 through uplink 1 says nothing about uplink 2.
//!
//! Privileges (Linux 5.17 and later, verified on 6.x): a first `SO_BINDTODEVICE` and a bind need
//! none; `SO_MARK` needs CAP_NET_RAW or CAP_NET_ADMIN.

use crate::config::Family;
use crate::config::check::ProbePath;
use socket2::{SockAddr, Socket};
use std::io::{self, ErrorKind};
use std::net::SocketAddr;

/// The example drop-in that grants what bound probes and ICMP need (shipped with the package).
pub const DROP_IN: &str =
    "/usr/share/doc/nftables-failover/examples/nftables-failover.service.d/uplink.conf";

/// Applies `path` to a fresh socket of `family`, before it connects or sends.
pub fn apply(sock: &Socket, path: &ProbePath, family: Family) -> io::Result<()> {
    if let Some(dev) = &path.interface {
        sock.bind_device(Some(dev.as_bytes()))
            .map_err(|e| context(e, &format!("SO_BINDTODEVICE {dev}"), "CAP_NET_RAW"))?;
    }
    if let Some(mark) = path.mark {
        sock.set_mark(mark)
            .map_err(|e| context(e, &format!("SO_MARK {mark}"), "CAP_NET_RAW"))?;
    }
    if let Some(src) = path.source(family) {
        sock.bind(&SockAddr::from(SocketAddr::new(src, 0)))
            .map_err(|e| context(e, &format!("bind to source {src}"), "CAP_NET_RAW"))?;
    }
    Ok(())
}

/// Where the drop-in goes and where it is explained, in every message that names it.
pub const WHERE: &str = "(for nftables-failover.service and nftables-failover-watch.service \
                         alike; see /usr/share/doc/nftables-failover/docs/uplinks.md, \
                         \"Privileges for uplink checks\")";

/// Names the option that failed; a refusal also names the capability and the drop-in.
pub fn context(e: io::Error, what: &str, capability: &str) -> io::Error {
    let text = super::describe_io_error(&e);
    match e.kind() {
        ErrorKind::PermissionDenied => io::Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "{what}: {text}; this needs {capability}: grant it with the drop-in {DROP_IN} \
                 {WHERE}"
            ),
        ),
        kind => io::Error::new(kind, format!("{what}: {text}")),
    }
}
