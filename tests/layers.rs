//! The layers of `src/` (see `src/lib.rs` and docs/architecture.md), checked from the source:
//! every `use crate::…`, `use super::…`, inline `crate::…` path and bare child-module path
//! outside `#[cfg(test)]` modules must point to a lower floor, or stay inside its own module
//! (a feature's files may use each other; a child using its parent's items is the idiom).
//! Pure floors may also use their neighbours on the same floor. On top of that, the modules
//! must form no import circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The floor of each top-level module; higher floors may import lower ones.
const FLOORS: &[(&str, u8, &str)] = &[
    ("model", 0, "ground floor: plain data"),
    ("config", 0, "ground floor: plain data"),
    ("jsonc", 0, "ground floor: plain data"),
    ("text", 0, "ground floor: plain data"),
    ("options", 0, "ground floor: plain data"),
    ("policy", 1, "pure logic"),
    ("select", 1, "pure logic"),
    ("render", 1, "pure logic"),
    ("describe", 1, "pure logic"),
    ("standby", 1, "pure logic"),
    ("links", 1, "pure logic"),
    ("log", 2, "effect primitives"),
    ("files", 2, "effect primitives"),
    ("command", 2, "effect primitives"),
    ("signals", 2, "effect primitives"),
    ("clock", 2, "effect primitives"),
    ("runtime", 2, "effect primitives"),
    ("probe", 3, "effects of one feature"),
    ("apply", 3, "effects of one feature"),
    ("state", 3, "effects of one feature"),
    ("drains", 3, "effects of one feature"),
    ("conntrack", 3, "effects of one feature"),
    ("ownership", 3, "effects of one feature"),
    ("publish", 3, "effects of one feature"),
    ("netlink", 3, "effects of one feature"),
    ("evaluate", 4, "check and decide"),
    ("cli", 5, "the command line"),
    ("run", 6, "entry points"),
    ("status", 6, "entry points"),
    ("drain", 6, "entry points"),
    ("check_config", 6, "entry points"),
    ("watch", 7, "a loop around an entry point"),
];

/// Floors whose modules may use each other (still without circles): plain data, pure logic
/// and the effect primitives (logging, files, commands) are small toolkits, not features.
const SHARED_FLOORS: [u8; 3] = [0, 1, 2];

type Module = Vec<String>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every module file of the crate, by module path (`["render", "live"]`), lib/main as `[]`.
fn modules(root: &Path) -> BTreeMap<Module, PathBuf> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(root).unwrap().with_extension("");
            let mut module: Module = rel.iter().map(|c| c.to_string_lossy().into()).collect();
            if module.last().is_some_and(|l| l == "mod") {
                module.pop();
            }
            if module == ["lib"] || module == ["main"] {
                module.clear();
            }
            out.insert(module, path);
        }
    }
    out
}

/// The source without `#[cfg(test)] mod … { … }` blocks and `//` comments.
fn without_tests(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let Some(open) = after.find('{').filter(|&o| after[..o].contains("mod ")) else {
            out.push_str("#[cfg(test)]");
            rest = &after["#[cfg(test)]".len()..];
            continue;
        };
        let mut depth = 0;
        let mut end = after.len();
        for (i, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`.
fn expand(path: &str) -> Vec<String> {
    let Some(open) = path.find('{') else {
        return vec![path.to_string()];
    };
    let prefix = &path[..open];
    let inner = &path[open + 1..path.rfind('}').unwrap_or(path.len())];
    let (mut parts, mut part, mut depth) = (Vec::new(), String::new(), 0);
    for c in inner.chars() {
        match c {
            ',' if depth == 0 => parts.push(std::mem::take(&mut part)),
            '{' => {
                depth += 1;
                part.push(c)
            }
            '}' => {
                depth -= 1;
                part.push(c)
            }
            _ => part.push(c),
        }
    }
    parts.push(part);
    parts
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand(&format!("{prefix}{p}")))
        .collect()
}

/// The module files that `module`'s source refers to.
fn imports(module: &Module, text: &str, all: &BTreeMap<Module, PathBuf>) -> BTreeSet<Module> {
    let code = without_tests(text);
    let mut paths = Vec::new();
    // `use` statements, with their groups expanded.
    for stmt in code.split(';') {
        let s: String = stmt.split_whitespace().collect::<Vec<_>>().join("");
        if let Some(at) = s.find("use") {
            let body = &s[at + 3..];
            if ["crate::", "super::", "self::"]
                .iter()
                .any(|p| body.starts_with(p))
            {
                paths.extend(expand(body));
            }
        }
    }
    // Inline paths: `crate::files::write_atomically(…)`, `super::x`.
    for head in ["crate::", "super::"] {
        let mut rest = code.as_str();
        while let Some(at) = rest.find(head) {
            let tail: String = rest[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            paths.push(tail);
            rest = &rest[at + head.len()..];
        }
    }
    // Child modules named without a prefix (`live::objects` inside render/mod.rs).
    let children: Vec<&String> = all
        .keys()
        .filter(|k| k.len() == module.len() + 1 && k[..module.len()] == module[..])
        .map(|k| k.last().unwrap())
        .collect();
    for child in children {
        if code.contains(&format!("{child}::")) {
            paths.push(format!("self::{child}"));
        }
    }
    let mut out = BTreeSet::new();
    for p in paths {
        let mut parts: Vec<&str> = p.split("::").filter(|s| !s.is_empty()).collect();
        let mut target: Module = match parts.first() {
            Some(&"crate") => Vec::new(),
            Some(&"self") => module.clone(),
            Some(&"super") => module[..module.len().saturating_sub(1)].to_vec(),
            _ => continue,
        };
        parts.remove(0);
        target.extend(parts.iter().map(|s| s.to_string()));
        // The longest prefix that is a file is the module that defines the item.
        while !target.is_empty() && !all.contains_key(&target) {
            target.pop();
        }
        // A child using its parent's (or an ancestor's) items is the idiom, not an import.
        let ancestor = target.len() < module.len() && module[..target.len()] == target[..];
        if !target.is_empty() && !ancestor {
            out.insert(target);
        }
    }
    out
}

fn graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let root = src();
    let all = modules(&root);
    all.iter()
        .filter(|(m, _)| !m.is_empty())
        .map(|(m, path)| {
            let text = std::fs::read_to_string(path).unwrap();
            (m.clone(), imports(m, &text, &all))
        })
        .collect()
}

fn floor(module: &Module) -> (u8, &'static str) {
    FLOORS
        .iter()
        .find(|(name, _, _)| *name == module[0])
        .map(|&(_, f, what)| (f, what))
        .unwrap_or_else(|| {
            panic!(
                "src/{}: a module without a floor; add it to FLOORS in tests/layers.rs (and to docs/architecture.md)",
                module.join("/")
            )
        })
}

/// Imports that point up or sideways between features, as readable lines.
fn violations(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<String> {
    let mut out = Vec::new();
    for (from, tos) in graph {
        let (f, what) = floor(from);
        for to in tos {
            if from[0] == to[0] {
                continue; // inside one module: a feature's own files
            }
            let (t, to_what) = floor(to);
            if t < f || (t == f && SHARED_FLOORS.contains(&f)) {
                continue;
            }
            out.push(format!(
                "{} ({what}) imports {} ({to_what}): imports must point down the layers",
                from.join("::"),
                to.join("::")
            ));
        }
    }
    out
}

/// Strongly connected groups of more than one module (Tarjan).
fn circles(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on_stack: BTreeSet<&'a Module>,
        found: Vec<Vec<Module>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a Module) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                if !self.graph.contains_key(w) {
                    continue;
                }
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut group = Vec::new();
                loop {
                    let w = self.stack.pop().unwrap();
                    self.on_stack.remove(w);
                    group.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if group.len() > 1 {
                    group.sort();
                    self.found.push(group);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v) {
            walk.visit(v);
        }
    }
    walk.found
}

#[test]
fn imports_only_point_down_the_layers() {
    let g = graph();
    assert!(g.len() > 20, "read too few modules: {:?}", g.keys());
    let bad = violations(&g);
    assert!(bad.is_empty(), "layer violations:\n  {}", bad.join("\n  "));
}

#[test]
fn there_are_no_import_circles() {
    let found = circles(&graph());
    let shown: Vec<String> = found
        .iter()
        .map(|g| {
            g.iter()
                .map(|m| m.join("::"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect();
    assert!(
        found.is_empty(),
        "import circles:\n  {}",
        shown.join("\n  ")
    );
}

/// The checker itself: a planted upward import and a planted circle are both found.
#[test]
fn the_checker_finds_a_planted_upward_import_and_a_circle() {
    let root = src();
    let all = modules(&root);
    let mut g = graph();
    let state = vec!["state".to_string()];
    let planted = "use crate::publish::metrics;\nuse crate::model::State;\n";
    g.insert(state.clone(), imports(&state, planted, &all));
    let bad = violations(&g);
    assert!(
        bad.iter()
            .any(|l| l.starts_with("state (effects of one feature) imports publish::metrics")),
        "{bad:?}"
    );
    // And a circle: model (ground floor) back to select.
    let model = vec!["model".to_string()];
    g.get_mut(&model)
        .unwrap()
        .insert(vec!["select".to_string()]);
    assert!(!circles(&g).is_empty());
    // Test modules are not read: a test may use anything.
    let in_tests = "#[cfg(test)]\nmod tests {\n    use crate::publish::metrics;\n}\n";
    assert!(imports(&state, in_tests, &all).is_empty());
}

/// The places outside tests that use one of `needles`, as `path: needle`.
fn uses(needles: &[&str]) -> Vec<String> {
    let root = src();
    let mut found = Vec::new();
    for path in modules(&root).values() {
        let text = without_tests(&std::fs::read_to_string(path).unwrap());
        for needle in needles.iter().filter(|n| text.contains(*n)) {
            let rel = path.strip_prefix(&root).unwrap().display().to_string();
            found.push(format!("{rel}: {needle}"));
        }
    }
    found.sort();
    found
}

/// What starts a process: std's and tokio's `Command`, and the raw calls.
const SPAWNERS: &[&str] = &[
    "Command::new",
    "process::Command",
    "libc::fork",
    "libc::exec",
    "posix_spawn",
];

/// One child runner: every process (nft, sudo, systemctl, conntrack, the hook) is started and
/// supervised by `command.rs`, so each gets the same timeout, process-group clean-up, capped
/// output and stop-signal handling.
#[test]
fn only_the_child_runner_starts_processes() {
    let found = uses(SPAWNERS);
    assert!(
        found.iter().any(|l| l == "command.rs: Command::new"),
        "{found:?}"
    );
    let outside: Vec<&String> = found
        .iter()
        .filter(|l| !l.starts_with("command.rs:"))
        .collect();
    assert!(
        outside.is_empty(),
        "processes started outside command.rs: {outside:?}"
    );
    // The check itself: a planted spawn in another module is found.
    let planted = without_tests("fn f() { std::process::Command::new(\"x\"); }\n");
    assert!(SPAWNERS.iter().any(|n| planted.contains(n)));
}

/// One runtime: the entry point builds it with `runtime::build`, and everything async (probes,
/// netlink, MQTT, `watch`) runs on it.
#[test]
fn one_place_builds_the_runtime() {
    let found = uses(&["runtime::Builder", "Runtime::new", "tokio::main"]);
    assert_eq!(
        found,
        ["runtime.rs: runtime::Builder"],
        "runtimes built elsewhere"
    );
}

/// docs/architecture.md names every module of `src/`: a file `x.rs` as `x.rs`, or, in a
/// directory `d/`, as `d/` with `x` in its list.
#[test]
fn the_architecture_page_lists_every_module() {
    let root = src();
    let page = std::fs::read_to_string(root.join("../docs/architecture.md")).unwrap();
    let mut missing = Vec::new();
    for path in modules(&root).values() {
        let rel = path.strip_prefix(&root).unwrap();
        let name = rel.file_stem().unwrap().to_string_lossy();
        let listed = match rel.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(dir) => {
                let dir = format!("`{}/`", dir.display());
                page.lines()
                    .any(|l| l.contains(&dir) && l.contains(&format!("`{name}`")))
            }
            None => {
                ["main", "lib"].contains(&name.as_ref()) || page.contains(&format!("`{name}.rs`"))
            }
        };
        if !listed {
            missing.push(rel.display().to_string());
        }
    }
    missing.sort();
    assert!(
        missing.is_empty(),
        "docs/architecture.md does not list: {missing:?}"
    );
}
