//! The README and docs/ are part of the product: every complete config they show loads with the
//! real loader, every ruleset they show checks with the real `nft -c` beside the include its
//! config renders, the refused example is refused with exactly the errors shown, the quick
//! start prints what the README says, and every relative link points at a file and heading
//! that exist. A broken example fails CI.
//!
//! Conventions in the Markdown: a fenced `json` block whose top level has a "failover" key is
//! a complete config; `<!-- example: refused -->` before it marks one that must be refused,
//! with the output in the next `text` block; `<!-- example: ruleset -->` before an `nft` block
//! marks a complete ruleset, loaded with the include of the nearest config above it.

mod common;

use common::*;
use nftables_failover::jsonc::{self, Json};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

struct Block {
    lang: String,
    body: String,
    /// The `<!-- example: … -->` marker right before the fence, if any.
    marker: Option<String>,
    line: usize,
}

fn pages() -> Vec<PathBuf> {
    let mut out = vec![Path::new(REPO).join("README.md")];
    let mut docs: Vec<PathBuf> = fs::read_dir(Path::new(REPO).join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    out.extend(docs);
    out
}

fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let trimmed = lines[i].trim_start();
        if let Some(lang) = trimmed.strip_prefix("```") {
            let indent = lines[i].len() - trimmed.len();
            let marker = (i > 0)
                .then(|| lines[i - 1].trim())
                .and_then(|l| l.strip_prefix("<!-- example: "))
                .and_then(|l| l.strip_suffix(" -->"))
                .map(String::from);
            let start = i;
            i += 1;
            let mut body = String::new();
            while i < lines.len() && !lines[i].trim_start().starts_with("```") {
                body.push_str(lines[i].get(indent..).unwrap_or(lines[i].trim_start()));
                body.push('\n');
                i += 1;
            }
            out.push(Block {
                lang: lang.trim().to_string(),
                body,
                marker,
                line: start + 1,
            });
        }
        i += 1;
    }
    out
}

/// A complete config: JSON (with comments) whose top level has a "failover" key.
fn is_config(block: &Block) -> bool {
    block.lang == "json"
        && matches!(jsonc::parse(&block.body), Ok(Json::Object(entries)) if entries.iter().any(|(k, _)| k == "failover"))
}

fn where_(page: &Path, block: &Block) -> String {
    format!(
        "{}:{}",
        page.strip_prefix(REPO).unwrap().display(),
        block.line
    )
}

#[test]
fn every_config_example_loads_and_the_refused_one_says_what_the_docs_say() {
    let dir = tempfile::tempdir().unwrap();
    let (mut loaded, mut refused) = (0, 0);
    for page in pages() {
        let all = blocks(&fs::read_to_string(&page).unwrap());
        for (n, block) in all.iter().enumerate().filter(|(_, b)| is_config(b)) {
            let path = dir.path().join("failover.json");
            fs::write(&path, &block.body).unwrap();
            let out = Command::new(BIN)
                .args(["check-config", "--config"])
                .arg(&path)
                .output()
                .unwrap();
            if block.marker.as_deref() == Some("refused") {
                refused += 1;
                assert_eq!(out.status.code(), Some(2), "{} loads", where_(&page, block));
                let shown = all[n + 1..]
                    .iter()
                    .find(|b| b.lang == "text")
                    .unwrap_or_else(|| panic!("{}: no text block after it", where_(&page, block)));
                let said = stderr(&out).replace(
                    path.to_str().unwrap(),
                    "/etc/nftables.d/addons/failover.json",
                );
                assert_eq!(
                    said.trim_end(),
                    shown.body.trim_end(),
                    "{}: the documented errors differ from what the loader says",
                    where_(&page, block)
                );
            } else {
                loaded += 1;
                assert!(
                    out.status.success(),
                    "{}: the example does not load:\n{}",
                    where_(&page, block),
                    stderr(&out)
                );
            }
        }
    }
    assert!(
        loaded >= 6 && refused == 1,
        "{loaded} loaded, {refused} refused"
    );
}

#[test]
fn every_ruleset_example_checks_with_nft_beside_its_include() {
    let mut checked = 0;
    for page in pages() {
        let all = blocks(&fs::read_to_string(&page).unwrap());
        for (n, block) in all.iter().enumerate() {
            if block.marker.as_deref() != Some("ruleset") {
                continue;
            }
            let config = all[..n]
                .iter()
                .rev()
                .find(|b| is_config(b))
                .unwrap_or_else(|| panic!("{}: no config above it", where_(&page, block)));
            let (config, ruleset, at) = (
                config.body.clone(),
                block.body.clone(),
                where_(&page, block),
            );
            in_netns(move || check_ruleset(&config, &ruleset, &at));
            checked += 1;
        }
    }
    assert!(checked >= 4, "only {checked} rulesets checked");
}

/// Renders `config`'s include with a dry run (in the test's namespace: every candidate is
/// unreachable, so the all-down policy renders) and checks `ruleset` with it using `nft -c`.
fn check_ruleset(config: &str, ruleset: &str, at: &str) {
    let f = Fixture::new();
    f.write_config(config);
    let mut cmd = f.command(&[], &f.reload());
    cmd.args(["--dry-run", "-q", "--timeout", "100ms"]);
    let out = output_within(cmd, Duration::from_secs(30));
    assert_exit(&out, 0);
    fs::write(&f.output, &out.stdout).unwrap();
    let ruleset = ruleset.replace(
        "/etc/nftables.d/addons/*.nft",
        &format!("{}/*.nft", f.addon_dir.display()),
    );
    fs::write(&f.main_config, &ruleset).unwrap();
    let check = Command::new("nft")
        .args(["-c", "-f"])
        .arg(&f.main_config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{at}: nft -c refuses the example with its include:\n{}\n--- include:\n{}",
        String::from_utf8_lossy(&check.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The quick start's dry run, as the README shows it: the same lines, with timings and the
/// addresses' order as printed.
#[test]
fn the_quick_start_prints_what_the_readme_shows() {
    let readme = fs::read_to_string(Path::new(REPO).join("README.md")).unwrap();
    let quick = &readme[readme.find("## Quick start").unwrap()..];
    let shown = blocks(quick)
        .into_iter()
        .find(|b| b.lang == "text")
        .unwrap()
        .body;
    let out = in_netns(|| {
        let _web = listen("127.0.0.2", 8080);
        let mut cmd = Command::new(BIN);
        cmd.current_dir(REPO)
            .args([
                "--dry-run",
                "-v",
                "--config",
                "etc/examples/quickstart.json",
            ])
            .env_remove("RUNTIME_DIRECTORY");
        output_within(cmd, Duration::from_secs(30))
    });
    assert_exit(&out, 0);
    let printed = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
    let shape = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| {
                // Timings vary; everything else must match.
                let mut s = String::new();
                let mut digits = false;
                for c in l.chars() {
                    if c.is_ascii_digit() || (digits && c == '.') {
                        if !digits {
                            s.push('#');
                        }
                        digits = true;
                    } else {
                        digits = false;
                        s.push(c);
                    }
                }
                s
            })
            .filter(|l| !l.contains("state.json"))
            .collect()
    };
    assert_eq!(shape(&printed), shape(&shown), "printed:\n{printed}");
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#')));
        }
    }
    out
}

#[test]
fn every_relative_link_resolves() {
    let link = |text: &str| -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            if let Some(end) = rest.find(')') {
                out.push(rest[..end].to_string());
            }
        }
        out
    };
    let mut broken = Vec::new();
    let mut count = 0;
    for page in pages() {
        let text = fs::read_to_string(&page).unwrap();
        let mut prose = String::new();
        let mut fenced = false;
        for line in text.lines() {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
            } else if !fenced {
                prose.push_str(line);
                prose.push('\n');
            }
        }
        for target in link(&prose) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            count += 1;
            let (file, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let path = if file.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(file)
            };
            if !path.exists() {
                broken.push(format!("{}: {target}: no such file", page.display()));
                continue;
            }
            if !anchor.is_empty() {
                let body = fs::read_to_string(&path).unwrap_or_default();
                if !anchors(&body).contains(anchor) {
                    broken.push(format!("{}: {target}: no such heading", page.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(count > 50, "only {count} links found");
}

#[test]
fn every_page_says_what_it_is_for_and_links_back() {
    for page in pages().into_iter().skip(1) {
        let text = fs::read_to_string(&page).unwrap();
        let head: Vec<&str> = text.lines().take(8).collect();
        assert!(
            head[0].starts_with("# ") && head[1..].iter().any(|l| l.contains("](../README.md)")),
            "{}: must open with its title, what it is for, and a link back to the README",
            page.display()
        );
    }
}

#[test]
fn the_readme_is_a_front_door() {
    let readme = fs::read_to_string(Path::new(REPO).join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(
        lines <= 400,
        "README.md has {lines} lines; the reference belongs in docs/"
    );
}
