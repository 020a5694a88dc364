//! The shape of the source tree, checked: imports flow one way, files stay readable.
//!
//! The order is the module table in `src/lib.rs` (the bottom of the house first). A
//! module may name, through `crate::…`, only modules listed above it. Print the graph
//! with `cargo test --test layout -- --nocapture module_graph_flows_down`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// Module names in the order of the table in `src/lib.rs`.
fn layers() -> Vec<String> {
    let lib = fs::read_to_string(Path::new(SRC).join("lib.rs")).unwrap();
    let order: Vec<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//! | [`"))
        .filter_map(|l| l.split_once("`]").map(|(name, _)| name.to_string()))
        .collect();
    let declared: BTreeSet<String> =
        lib.lines().filter_map(|l| l.strip_prefix("pub mod ")).map(|l| l.trim_end_matches(';').to_string()).collect();
    assert_eq!(
        order.iter().cloned().collect::<BTreeSet<_>>(),
        declared,
        "the module table in src/lib.rs must list exactly the declared modules"
    );
    order
}

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for e in fs::read_dir(path).unwrap() {
            rust_files(&e.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|x| x == "rs") {
        out.push(path.to_path_buf());
    }
}

/// The top-level modules named after `crate::` in one file's code (comments skipped;
/// `crate::{a, b::c}` names `a` and `b`).
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let mut depth = 0usize;
                let mut item = String::new();
                for c in group.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            push_ident(&item, &mut found);
                            item.clear();
                            continue;
                        }
                        _ => {}
                    }
                    if depth == 0 {
                        item.push(c);
                    }
                }
                push_ident(&item, &mut found);
            } else {
                push_ident(rest, &mut found);
            }
        }
    }
    found
}

fn push_ident(s: &str, found: &mut BTreeSet<String>) {
    let ident: String = s.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    if !ident.is_empty() {
        found.insert(ident);
    }
}

#[test]
fn module_graph_flows_down() {
    let order = layers();
    let rank: BTreeMap<&str, usize> = order.iter().enumerate().map(|(i, m)| (m.as_str(), i)).collect();
    let mut wrong = Vec::new();
    for module in &order {
        let dir = Path::new(SRC).join(module);
        let mut files = Vec::new();
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        } else {
            files.push(Path::new(SRC).join(format!("{module}.rs")));
        }
        let mut uses = BTreeSet::new();
        for f in &files {
            for named in named_modules(&fs::read_to_string(f).unwrap()) {
                if named == *module {
                    continue;
                }
                match rank.get(named.as_str()) {
                    Some(&r) if r < rank[module.as_str()] => {}
                    Some(_) => wrong.push(format!(
                        "{} names crate::{named}, which sits above {module} in src/lib.rs",
                        f.strip_prefix(SRC).unwrap().display()
                    )),
                    None => {} // an item re-exported at the root, not a module
                }
                uses.insert(named);
            }
        }
        println!("{module:>10} -> {}", uses.into_iter().collect::<Vec<_>>().join(", "));
    }
    assert!(wrong.is_empty(), "imports must flow down:\n{}", wrong.join("\n"));
}

#[test]
fn the_parser_sees_grouped_and_nested_imports() {
    let seen = named_modules(
        "use crate::{durable, sqlite::{open_quiet, Stamp}, wal};\n// crate::fleet in a comment\nlet x = crate::ltx::TxId(1);",
    );
    assert_eq!(seen, ["durable", "ltx", "sqlite", "wal"].iter().map(|s| s.to_string()).collect());
}

/// A file a newcomer has to read whole stays under 800 lines (tests apart).
#[test]
fn no_source_file_is_a_wall() {
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter(|f| !f.file_name().unwrap().to_string_lossy().contains("tests"))
        .filter_map(|f| {
            let text = fs::read_to_string(f).unwrap();
            let code = text.split("\n#[cfg(test)]\nmod tests").next().unwrap();
            let n = code.lines().count();
            (n > 800).then(|| format!("{}: {n} lines", f.strip_prefix(SRC).unwrap().display()))
        })
        .collect();
    assert!(long.is_empty(), "split these files:\n{}", long.join("\n"));
}
