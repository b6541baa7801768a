//! The module layering of the two core crates: no import circle between
//! the top-level modules of `controller/` or `replicator/`. A module that
//! reaches up into one that reaches back makes both untestable alone (the
//! reason the replicator's `Site` rules had no unit test), so a new circle
//! fails here, naming it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module -> the top-level modules of the same crate it names.
fn imports(crate_dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let src = crate_dir.join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = vec![src.clone()];
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if p.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let rel = p.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        let module = if first == "lib" || first == "main" { "lib".to_string() } else { first };
        let text = std::fs::read_to_string(&p).unwrap();
        // Unit tests may reach anywhere.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let deps = graph.entry(module.clone()).or_default();
        for line in code.lines().map(|l| l.split("//").next().unwrap_or("")) {
            let mut rest = line;
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                if let Some(group) = rest.strip_prefix('{') {
                    let group = group.split('}').next().unwrap_or("");
                    deps.extend(group.split(',').map(|i| i.trim().split([':', ' ']).next().unwrap_or("").to_string()).filter(|n| !n.is_empty()));
                } else {
                    let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    deps.insert(name);
                }
            }
        }
        deps.remove(&module);
    }
    let names: BTreeSet<String> = graph.keys().cloned().collect();
    graph.values_mut().for_each(|d| d.retain(|n| names.contains(n)));
    graph
}

/// A circle through `start`, if any: the path back to it.
fn circle_through(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_string(), vec![start.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for next in &graph[&at] {
            if next == start {
                let mut path = path.clone();
                path.push(next.clone());
                return Some(path);
            }
            if seen.insert(next.clone()) {
                let mut p = path.clone();
                p.push(next.clone());
                stack.push((next.clone(), p));
            }
        }
    }
    None
}

fn assert_no_circle(krate: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(krate);
    let graph = imports(&dir);
    assert!(graph.len() > 10, "{krate}: read only {} modules", graph.len());
    let circles: Vec<String> = graph.keys().filter_map(|m| circle_through(&graph, m)).map(|c| c.join(" -> ")).collect();
    assert!(circles.is_empty(), "{krate} has import circles:\n{}", circles.join("\n"));
}

#[test]
fn the_controller_has_no_import_circle() {
    assert_no_circle("controller");
}

#[test]
fn the_replicator_has_no_import_circle() {
    assert_no_circle("replicator");
}

// The check itself finds a circle.
#[test]
fn a_circle_is_found() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.insert("a".into(), ["b".to_string()].into());
    g.insert("b".into(), ["c".to_string()].into());
    g.insert("c".into(), ["a".to_string()].into());
    g.insert("d".into(), ["a".to_string()].into());
    assert_eq!(circle_through(&g, "a"), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
    assert_eq!(circle_through(&g, "d"), None);
}
