//! The layout rules of the project, checked: no import cycle between the
//! modules of the daemon or of bastionctl, files small enough to read, thin
//! binaries, and a bastionctl that does not link the daemon's Azure stack.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Longest source file allowed in `daemon/src` and `ctl/src`.
const MAX_FILE_LINES: usize = 450;
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
    files
}

/// The top-level modules that `source` names through `crate::`.
fn crate_references(source: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    for (at, _) in source.match_indices("crate::") {
        let rest = &source[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a, b::c, d};`: the first segment of each item.
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        found.insert(ident(&group[i..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found.remove("");
    found
}

/// Module → modules it uses, for the top-level modules of a crate's `src`.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph = BTreeMap::new();
    for file in rust_files(src) {
        let relative = file.strip_prefix(src).unwrap();
        if relative.starts_with("bin") {
            continue;
        }
        let module = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let source = fs::read_to_string(&file).unwrap();
        let mut uses = crate_references(&source);
        uses.remove(&module);
        graph
            .entry(module)
            .or_insert_with(BTreeSet::new)
            .extend(uses);
    }
    graph
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
        ["a", "b", "c", "f"].map(String::from).into()
    );
}

#[test]
fn no_import_cycles() {
    for krate in ["daemon/src", "ctl/src"] {
        let graph = module_graph(&root().join(krate));
        assert!(graph.len() > 3, "{krate}: no modules found");
        if let Some(cycle) = find_cycle(&graph) {
            panic!("{krate}: import cycle {}", cycle.join(" → "));
        }
    }
}

#[test]
fn files_stay_readable_and_binaries_thin() {
    let lines = |path: &Path| fs::read_to_string(path).unwrap().lines().count();
    for krate in ["daemon/src", "ctl/src", "proto/src"] {
        for file in rust_files(&root().join(krate)) {
            let n = lines(&file);
            assert!(
                n <= MAX_FILE_LINES,
                "{} has {n} lines (at most {MAX_FILE_LINES})",
                file.display()
            );
        }
    }
    for entry in ["daemon/src/bin/bastiond.rs", "ctl/src/main.rs"] {
        let n = lines(&root().join(entry));
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
