//! Running `nft` and the reload command, through `sudo -n` when not root.
//!
//! Commands run without a shell and always by absolute path, with a fixed argument form, so the
//! shipped sudoers file can allow each one exactly, with no wildcards.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Runner {
    /// `Some(path to sudo)` when privileged commands must go through `sudo -n`.
    sudo: Option<PathBuf>,
}

impl Runner {
    /// Root runs commands directly; anyone else through `sudo -n` (never prompting).
    pub fn for_current_user() -> Runner {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        Runner {
            sudo: (!root).then(|| find_program("sudo").unwrap_or_else(|| "/usr/bin/sudo".into())),
        }
    }

    /// The exact argv that will be executed for a privileged command.
    pub fn argv(&self, command: &[OsString]) -> Vec<OsString> {
        match &self.sudo {
            Some(sudo) => [sudo.as_os_str(), OsStr::new("-n")]
                .into_iter()
                .map(OsString::from)
                .chain(command.iter().cloned())
                .collect(),
            None => command.to_vec(),
        }
    }

    /// Runs a privileged command; `what` says what it is for in error messages.
    pub fn run(&self, what: &str, command: &[OsString]) -> Result<(), CommandError> {
        self.output(what, command).map(drop)
    }

    /// Runs a privileged command and returns its stdout (e.g. nft's JSON listing).
    pub fn output(&self, what: &str, command: &[OsString]) -> Result<Vec<u8>, CommandError> {
        let argv = self.argv(command);
        crate::log::debug(&format!("running: {}", shown(&argv)));
        let fail = |status: String, output: String| CommandError {
            what: what.to_string(),
            argv: shown(&argv),
            status,
            output,
            sudo_denied: false,
        };
        let out = Command::new(&argv[0])
            .args(&argv[1..])
            // Untranslated messages: callers match nft's (e.g. a missing table's ENOENT), and
            // logs read the same everywhere. sudo keeps LC_* (env_check).
            .env("LC_ALL", "C")
            .output()
            .map_err(|e| fail(format!("could not be started: {e}"), String::new()))?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        let mut output = String::from_utf8_lossy(&out.stderr).into_owned();
        output.push_str(&String::from_utf8_lossy(&out.stdout));
        let mut err = fail(describe_status(out.status), output);
        err.sudo_denied = self.sudo.is_some() && is_sudo_refusal(&err.output);
        Err(err)
    }
}

#[derive(Debug)]
pub struct CommandError {
    pub what: String,
    pub argv: String,
    pub status: String,
    /// The command's own stderr and stdout, passed through verbatim (nft's error lines).
    pub output: String,
    pub sudo_denied: bool,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} failed: `{}` {}", self.what, self.argv, self.status)?;
        for line in self.output.lines().filter(|l| !l.trim().is_empty()) {
            write!(f, "\n  {line}")?;
        }
        if self.sudo_denied {
            write!(
                f,
                "\n  hint: sudo refused to run this without a password; allow exactly this command \
                 for this user, e.g. with the shipped /etc/sudoers.d/nftables-failover"
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for CommandError {}

fn is_sudo_refusal(stderr: &str) -> bool {
    stderr.lines().any(|l| {
        l.starts_with("sudo:")
            && (l.contains("password is required")
                || l.contains("not allowed to execute")
                || l.contains("not in the sudoers")
                || l.contains("may not run sudo"))
    })
}

fn describe_status(status: std::process::ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => format!("was killed ({status})"),
    }
}

/// A command line for logs: arguments with spaces are quoted so it can be read back.
pub fn shown(argv: &[OsString]) -> String {
    argv.iter()
        .map(|a| {
            let a = a.to_string_lossy();
            if a.is_empty() || a.contains(char::is_whitespace) {
                format!("'{a}'")
            } else {
                a.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Splits a command given as one string (e.g. `--reload-command`) on whitespace, without a shell,
/// and makes its program absolute via PATH so a sudoers rule can name it exactly.
pub fn parse_command_line(line: &str) -> Result<Vec<OsString>, String> {
    let mut words = line.split_whitespace();
    let program = words.next().ok_or("the command is empty")?;
    let path = find_program(program).ok_or_else(|| {
        format!("program {program:?} not found (searched PATH); give an absolute path")
    })?;
    Ok(std::iter::once(path.into_os_string())
        .chain(words.map(OsString::from))
        .collect())
}

/// Resolves a program name like the shell would: paths as given (made absolute), bare names via PATH.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let p = std::path::absolute(name).ok()?;
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_absolute() && executable(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn non_root_prefixes_sudo_non_interactive() {
        let r = Runner {
            sudo: Some("/usr/bin/sudo".into()),
        };
        assert_eq!(
            r.argv(&os(&["/usr/sbin/nft", "-c", "-f", "/etc/nftables.conf"])),
            os(&[
                "/usr/bin/sudo",
                "-n",
                "/usr/sbin/nft",
                "-c",
                "-f",
                "/etc/nftables.conf"
            ])
        );
        let root = Runner { sudo: None };
        assert_eq!(root.argv(&os(&["/bin/true"])), os(&["/bin/true"]));
    }

    #[test]
    fn command_lines_resolve_the_program_via_path() {
        let argv = parse_command_line("sh -c true").unwrap();
        assert!(Path::new(&argv[0]).is_absolute(), "{argv:?}");
        assert_eq!(&argv[1..], &os(&["-c", "true"])[..]);
        assert!(parse_command_line("   ").is_err());
        let err = parse_command_line("no-such-program-xyz reload").unwrap_err();
        assert!(err.contains("\"no-such-program-xyz\" not found"), "{err}");
    }

    #[test]
    fn failing_command_reports_status_and_output() {
        let r = Runner { sudo: None };
        let err = r
            .run(
                "test step",
                &os(&["/bin/sh", "-c", "echo 'Error: bad' >&2; exit 3"]),
            )
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("test step failed: `/bin/sh -c 'echo"),
            "{msg}"
        );
        assert!(msg.contains("exited with status 3\n  Error: bad"), "{msg}");
        assert!(!err.sudo_denied);
    }

    #[test]
    fn recognises_sudo_refusals() {
        assert!(is_sudo_refusal("sudo: a password is required\n"));
        assert!(is_sudo_refusal(
            "sudo: sorry, user x is not allowed to execute '/usr/sbin/nft list ruleset' as root on h.\n"
        ));
        assert!(!is_sudo_refusal("Error: syntax error\n"));
    }
}
