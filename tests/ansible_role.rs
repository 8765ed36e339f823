//! The Ansible role under `ansible/roles/nftables_failover` passes ansible-lint's production
//! profile (its behaviour under systemd is tested in tests/boot.rs).

use std::process::Command;

#[test]
fn the_role_passes_ansible_lint() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/ansible");
    let out = Command::new("ansible-lint")
        .args([
            "--offline",
            "--nocolor",
            "--profile",
            "production",
            "roles/nftables_failover",
        ])
        .current_dir(dir)
        .env("HOME", std::env::temp_dir())
        .output()
        .expect("ansible-lint (Debian package ansible-lint; .ci/run installs it)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ansible-lint failed:\n{text}");
    assert!(text.contains("Passed"), "{text}");
}
