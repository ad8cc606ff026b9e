//! The layout rules of the project, checked: the daemon's folders are layers
//! (each uses only those below it), no import cycle between modules or
//! folders of the daemon or of bastionctl, every file says what it is, a long
//! file says why it is one concept, thin binaries, and a bastionctl that does
//! not link the daemon's Azure stack.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The daemon's folders and top-level modules, bottom up. A module may use
/// those of lower layers; the leaves (layer 0) may also use each other.
/// So `relay` never reaches `control` or `forwards`, `azure` never reaches
/// `bastion`, and nothing below `control` knows the gRPC API exists.
const DAEMON_LAYERS: [&[&str]; 8] = [
    &[
        "config",
        "error",
        "error_body",
        "secret",
        "events",
        "paths",
        "notify",
        "wake",
    ],
    &["azure"],
    &["bastion"],
    &["relay"],
    &["shared"],
    &["forwards"],
    &["control", "instance"],
    &["daemon"],
];
/// A file longer than this must say in its first line why it is one
/// concept ("One concept: …"); shorter ones just say what they are.
const LONG_FILE_LINES: usize = 450;
/// Longest binary entry point.
const MAX_ENTRY_LINES: usize = 120;
/// Crates bastionctl must not link: it only talks to the daemon's socket.
const FORBIDDEN_IN_CTL: [&str; 4] = [
    "azure_identity",
    "azure_core",
    "reqwest",
    "tokio-tungstenite",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The paths that `source` names through `crate::`, as `a::b::c` (a group
/// `crate::{a::X, b::{c, d}}` gives `a::X`, `b::c` and `b::d`).
fn crate_references(source: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in source.match_indices("crate::") {
        expand(&source[at + "crate::".len()..], "", &mut found);
    }
    found.remove("");
    found
}

/// Adds the path starting at `rest` (after `prefix`) to `found`, expanding groups.
fn expand(rest: &str, prefix: &str, found: &mut BTreeSet<String>) {
    let mut path = prefix.to_string();
    let mut i = 0;
    while i < rest.len() {
        let tail = &rest[i..];
        if let Some(group) = tail.strip_prefix('{') {
            expand_group(group, &path, found);
            return;
        } else if tail.starts_with("::") {
            path.push_str("::");
            i += 2;
        } else {
            let c = tail.chars().next().unwrap_or(' ');
            if !(c.is_alphanumeric() || c == '_') {
                break;
            }
            path.push(c);
            i += c.len_utf8();
        }
    }
    found.insert(path.trim_end_matches("::").to_string());
}

/// The items of a `{…}` group (after its `{`), each expanded under `prefix`.
fn expand_group(group: &str, prefix: &str, found: &mut BTreeSet<String>) {
    let mut depth = 0;
    let mut item_start = 0;
    for (j, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' | ',' if depth == 0 => {
                let item = group[item_start..j].trim();
                if !item.is_empty() {
                    expand(item, prefix, found);
                }
                item_start = j + 1;
                if c == '}' {
                    return;
                }
            }
            '}' => depth -= 1,
            _ => {}
        }
    }
}

/// The module a file belongs to: its path (`relay/pump.rs` is `relay::pump`,
/// `forwards/mod.rs` is `forwards`); a private child (`relay/pump/upstream.rs`
/// beside `relay/pump.rs`) belongs to its parent.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    for keep in 1..parts.len() {
        let parent = src.join(parts[..keep].join("/")).with_extension("rs");
        if parent.is_file() {
            parts.truncate(keep);
            break;
        }
    }
    parts.join("::")
}

/// Module → modules it uses, for a crate's `src` (binaries aside).
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let files: Vec<PathBuf> = rust_files(src)
        .into_iter()
        .filter(|f| !f.strip_prefix(src).unwrap().starts_with("bin"))
        .collect();
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(src, f)).collect();
    let mut graph = BTreeMap::new();
    for file in &files {
        let module = module_of(src, file);
        if module == "lib" || module == "main" {
            continue;
        }
        let source = fs::read_to_string(file).unwrap();
        let uses = graph.entry(module.clone()).or_insert_with(BTreeSet::new);
        for path in crate_references(&source) {
            // The longest module that `path` is in.
            let mut target = path.as_str();
            while !modules.contains(target) {
                match target.rsplit_once("::") {
                    Some((parent, _)) => target = parent,
                    None => break,
                }
            }
            if modules.contains(target) && target != module {
                uses.insert(target.to_string());
            }
        }
    }
    graph
}

/// The same graph between top-level folders and files.
fn folder_graph(graph: &BTreeMap<String, BTreeSet<String>>) -> BTreeMap<String, BTreeSet<String>> {
    let top = |m: &str| m.split("::").next().unwrap_or(m).to_string();
    let mut folders: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, uses) in graph {
        let entry = folders.entry(top(module)).or_default();
        entry.extend(uses.iter().map(|u| top(u)).filter(|u| *u != top(module)));
    }
    folders
}

/// A cycle in `graph`, as the list of modules along it.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let graph: BTreeMap<String, BTreeSet<String>> =
        [("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"])]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
            .collect();
    assert_eq!(find_cycle(&graph).unwrap(), ["a", "b", "c", "a"]);
    assert_eq!(
        crate_references("use crate::{a::X, b, c::{d, e}};\nlet x = crate::f::g();"),
        ["a::X", "b", "c::d", "c::e", "f::g"]
            .map(String::from)
            .into()
    );
}

#[test]
fn no_import_cycles_between_modules_or_folders() {
    for krate in ["daemon/src", "ctl/src"] {
        let graph = module_graph(&root().join(krate));
        assert!(graph.len() > 3, "{krate}: no modules found");
        if let Some(cycle) = find_cycle(&graph) {
            panic!("{krate}: import cycle {}", cycle.join(" → "));
        }
        if let Some(cycle) = find_cycle(&folder_graph(&graph)) {
            panic!(
                "{krate}: import cycle between folders {}",
                cycle.join(" → ")
            );
        }
    }
}

#[test]
fn daemon_folders_use_only_the_layers_below() {
    let layer_of = |module: &str| {
        let top = module.split("::").next().unwrap_or(module);
        DAEMON_LAYERS
            .iter()
            .position(|layer| layer.contains(&top))
            .unwrap_or_else(|| panic!("{top} is in no layer of DAEMON_LAYERS: place it"))
    };
    let graph = module_graph(&root().join("daemon/src"));
    let mut wrong = Vec::new();
    for (module, uses) in &graph {
        let here = layer_of(module);
        for used in uses {
            let there = layer_of(used);
            let same_folder = module.split("::").next() == used.split("::").next();
            if !(there < here || same_folder || (here == 0 && there == 0)) {
                wrong.push(format!("{module} uses {used}"));
            }
        }
    }
    assert!(wrong.is_empty(), "upward uses: {wrong:#?}");
}

#[test]
fn files_say_what_they_are_and_binaries_stay_thin() {
    for krate in ["daemon/src", "ctl/src", "proto/src"] {
        for file in rust_files(&root().join(krate)) {
            let text = fs::read_to_string(&file).unwrap();
            let first = text.lines().next().unwrap_or_default();
            let name = file.display();
            // Tests of a module live beside it and are described by it.
            if file.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            assert!(
                first.starts_with("//!"),
                "{name} does not open with a //! line on what it is"
            );
            let n = text.lines().count();
            assert!(
                n <= LONG_FILE_LINES || first.starts_with("//! One concept:"),
                "{name} has {n} lines: split it, or say in its first line why it is one \
                 concept (`//! One concept: …`)"
            );
        }
    }
    for entry in ["daemon/src/bin/bastiond.rs", "ctl/src/main.rs"] {
        let n = fs::read_to_string(root().join(entry))
            .unwrap()
            .lines()
            .count();
        assert!(
            n < MAX_ENTRY_LINES,
            "{entry} has {n} lines (fewer than {MAX_ENTRY_LINES})"
        );
    }
}

#[test]
fn bastionctl_links_none_of_the_daemon_stack() {
    let lock: toml::Table = fs::read_to_string(root().join("Cargo.lock"))
        .unwrap()
        .parse()
        .unwrap();
    let packages = lock["package"].as_array().unwrap();
    let deps_of = |name: &str| -> Vec<String> {
        packages
            .iter()
            .filter(|p| p["name"].as_str() == Some(name))
            .flat_map(|p| p.get("dependencies").and_then(|d| d.as_array()).cloned())
            .flatten()
            .filter_map(|d| Some(d.as_str()?.split(' ').next()?.to_string()))
            .collect()
    };
    let mut seen = BTreeSet::new();
    let mut queue = vec!["bastionctl".to_string()];
    while let Some(name) = queue.pop() {
        if seen.insert(name.clone()) {
            queue.extend(deps_of(&name));
        }
    }
    assert!(seen.len() > 10, "bastionctl's dependencies were not found");
    for forbidden in FORBIDDEN_IN_CTL {
        assert!(
            !seen.contains(forbidden),
            "bastionctl links {forbidden} (through Cargo.lock)"
        );
    }
}
