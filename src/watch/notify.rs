//! The systemd notification protocol (sd_notify(3)): one datagram per message to the socket
//! named in $NOTIFY_SOCKET. A dozen lines of std; no library needed for it.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

pub struct Notifier {
    socket: UnixDatagram,
    to: SocketAddr,
}

impl Notifier {
    /// The service manager's socket, if this process was started with one (Type=notify).
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let bytes = path.as_encoded_bytes();
        let to = match bytes.strip_prefix(b"@") {
            // An abstract socket: "@name" stands for "\0name".
            Some(name) => SocketAddr::from_abstract_name(name).ok()?,
            None => SocketAddr::from_pathname(&path).ok()?,
        };
        let socket = UnixDatagram::unbound().ok()?;
        Some(Notifier { socket, to })
    }

    /// Sends `message` ("READY=1", "WATCHDOG=1", "STATUS=…"); a failure is not worth more
    /// than a debug line: the service works without it.
    pub fn send(&self, message: &str) {
        if let Err(e) = self.socket.send_to_addr(message.as_bytes(), &self.to) {
            crate::log::debug(&format!("sd_notify {message:?}: {e}"));
        }
    }
}

/// How often systemd expects WATCHDOG=1 (WatchdogSec=), if it does and means this process.
pub fn watchdog() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            socket: UnixDatagram::unbound().unwrap(),
            to: SocketAddr::from_pathname(&path).unwrap(),
        };
        notifier.send("READY=1");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
