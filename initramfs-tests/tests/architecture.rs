//! The shape of `collector/src`, as docs/design.md describes it: the import graph between the
//! top-level modules has no cycle and points down the data path, the pure codecs import nothing
//! of the crate, nothing imports the command line, `unsafe` lives in `sys.rs` alone, and every
//! file starts with its `//!` overview. The reference is the design document's table, not the
//! code: a new edge that breaks it fails here until the design says otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `collector/src`.
fn source_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../collector/src")
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The top-level module a file belongs to (`dump` for `dump/run.rs`, `sys` for `sys.rs`).
fn top_module(root: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(root).unwrap();
    let first = relative.components().next().unwrap().as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_owned()
}

/// The code of a file without its unit tests and comments.
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first path segments after a `crate::`: one for `crate::a::b`, each of the group for
/// `crate::{a::b, c}`.
fn named_modules(after: &str) -> Vec<String> {
    let segment = |text: &str| -> String {
        text.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect()
    };
    let Some(group) = after.strip_prefix('{') else {
        return vec![segment(after)];
    };
    // The group's top-level items, up to its closing brace.
    let (mut depth, mut items, mut start) = (0usize, Vec::new(), 0);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(segment(&group[start..i]));
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(segment(&group[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    items
}

#[test]
fn grouped_imports_are_read_too() {
    assert_eq!(named_modules("dump::{self, Summary};"), ["dump"]);
    assert_eq!(
        named_modules("{dump::{self, x}, output::Sink, vmcore};"),
        ["dump", "output", "vmcore"]
    );
}

/// The top-level modules each top-level module names as `crate::X` or `crate::{X, Y}`.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = source_root();
    let files = rust_files(&root);
    let modules: BTreeSet<String> = files.iter().map(|f| top_module(&root, f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let from = top_module(&root, file);
        if from == "lib" || from == "main" {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        let edges = graph.entry(from.clone()).or_default();
        for (at, _) in code.match_indices("crate::") {
            for name in named_modules(&code[at + "crate::".len()..]) {
                if name != from && modules.contains(&name) {
                    edges.insert(name);
                }
            }
        }
    }
    graph
}

#[test]
fn the_import_graph_between_top_level_modules_has_no_cycle() {
    let graph = import_graph();
    // Depth-first search; a module met again on the current path closes a cycle.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(node) {
            return;
        }
        if let Some(at) = path.iter().position(|p| p == node) {
            panic!("import cycle: {} -> {node}", path[at..].join(" -> "));
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, path, done);
        }
        path.pop();
        done.insert(node.to_owned());
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, &graph, &mut Vec::new(), &mut done);
    }
    assert!(graph.len() >= 15, "too few modules found: {graph:?}");
}

#[test]
fn each_module_imports_only_what_the_design_allows() {
    // docs/design.md, "Import rules"; `format`, the bottom layer, is open to every module.
    let allowed: BTreeMap<&str, &[&str]> = BTreeMap::from([
        ("format", &[][..]),
        ("sys", &[][..]),
        ("kmod", &[][..]),
        ("kmsg", &[][..]),
        ("vmcore", &["format", "sys"][..]),
        ("filter", &["format", "vmcore"][..]),
        ("pipeline", &["format", "vmcore"][..]),
        ("dmesg", &["format", "vmcore"][..]),
        ("output", &["format", "vmcore", "filter", "pipeline"][..]),
        (
            "dump",
            &["format", "vmcore", "filter", "pipeline", "output"][..],
        ),
        ("readback", &["format", "vmcore", "output"][..]),
        (
            "config",
            &["dump", "output", "filter", "pipeline", "vmcore"][..],
        ),
        ("transport", &["format", "output", "config"][..]),
        ("server", &["format"][..]),
        ("loader", &["format", "sys"][..]),
        ("image", &["format", "config", "kmod", "transport"][..]),
        (
            "admin",
            &["transport", "image", "loader", "config", "readback", "kmsg"][..],
        ),
        (
            "runtime",
            &[
                "config",
                "dump",
                "output",
                "dmesg",
                "format",
                "kmod",
                "kmsg",
                "transport",
                "sys",
            ][..],
        ),
    ]);
    let graph = import_graph();
    for (module, imports) in &graph {
        if module == "cli" {
            continue;
        }
        let Some(permitted) = allowed.get(module.as_str()) else {
            panic!("module {module} is not in docs/design.md's import rules");
        };
        let extra: Vec<&String> = imports
            .iter()
            .filter(|i| *i != "format" && !permitted.contains(&i.as_str()))
            .collect();
        assert!(
            extra.is_empty(),
            "{module} imports {extra:?}, which docs/design.md does not allow"
        );
    }
}

#[test]
fn unsafe_code_lives_in_sys_alone_and_every_file_has_an_overview() {
    let root = source_root();
    for file in rust_files(&root) {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.strip_prefix(&root).unwrap().display().to_string();
        assert!(
            text.starts_with("//!"),
            "{name} does not start with a //! overview"
        );
        if name != "sys.rs" {
            let code = code_of(&text);
            assert!(
                !code.contains("unsafe {")
                    && !code.contains("unsafe fn")
                    && !code.contains("unsafe extern")
                    && !code.contains("unsafe impl"),
                "{name} has unsafe code outside sys.rs"
            );
            // The one exception (docs/design.md): the purgatory's `global_asm!`, which the
            // `unsafe_code` lint counts as unsafe; its bytes are reached through sys.rs only.
            if name != "loader/native/purgatory.rs" {
                assert!(
                    !code.contains("allow(unsafe_code)"),
                    "{name} allows unsafe code outside sys.rs"
                );
            }
        }
    }
}
