//! A run as root must not obey files that someone else can write. The addon directory is
//! writable by the service user by design, so a config there, or a hook, credentials, CA or
//! metrics path it names, is the service user's word: a root run would run that hook as root,
//! send a root-only file's first line to a broker the config names, and write where it says.
//! Such a run is refused; the service runs as its own user, through sudo for what needs root.

use crate::config::Config;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Why `path` (the file a link leads to, and every directory above it) is not root's alone:
/// owned by another user, or writable by group or others (a sticky directory like /tmp
/// excepted: no one else can replace root's file in it). `None` if it is root's alone, or
/// does not exist (then nothing can be read from it either).
pub fn foreign_writable(path: &Path) -> Option<String> {
    let real = std::fs::canonicalize(path).ok()?;
    let mut at: Option<&Path> = Some(&real);
    while let Some(p) = at {
        let meta = std::fs::metadata(p).ok()?;
        let mode = meta.mode() & 0o7777;
        let sticky_dir = meta.is_dir() && mode & 0o1000 != 0;
        if meta.uid() != 0 {
            return Some(format!("{} is owned by uid {}", p.display(), meta.uid()));
        }
        if mode & 0o022 != 0 && !sticky_dir {
            return Some(format!(
                "{} is writable by {} (mode {mode:04o})",
                p.display(),
                if mode & 0o002 != 0 {
                    "everyone"
                } else {
                    "its group"
                }
            ));
        }
        at = p.parent();
    }
    None
}

/// The files a run obeys or writes besides its own: the config, the hook's program,
/// credentials and CA files, and the directory of the metrics file.
fn named_files(config_path: &Path, config: &Config) -> Vec<(&'static str, PathBuf)> {
    let p = &config.publish;
    let mut out = vec![("the config", config_path.to_path_buf())];
    if let Some(hook) = &p.on_change {
        out.push(("on_change's program", PathBuf::from(&hook.command[0])));
    }
    if let Some(m) = &p.mqtt {
        out.extend(
            m.credentials_file
                .clone()
                .map(|f| ("mqtt.credentials_file", f)),
        );
        out.extend(m.ca_file.clone().map(|f| ("mqtt.ca_file", f)));
    }
    if let Some(m) = &p.metrics {
        let dir = m.path.parent().map(Path::to_path_buf).unwrap_or_default();
        out.push(("the metrics file's directory", dir));
    }
    out
}

/// For a run as root: why it must not act on this config, if so.
pub fn refuse_root(config_path: &Path, config: &Config) -> Option<String> {
    for (what, path) in named_files(config_path, config) {
        if let Some(why) = foreign_writable(&path) {
            return Some(format!(
                "refusing to run as root: {what} {} can be changed by others ({why}), and a \
                 root run would obey it; run as the service user (systemctl start \
                 nftables-failover.service, or sudo -u nftables-failover nftables-failover …), \
                 or make it root's alone (chown root, chmod go-w)",
                path.display()
            ));
        }
    }
    None
}
