//! A guard for module layering inside a crate: reads the crate's `src/` files and checks
//! every `crate::…` and `super::…` path against a declared table of which top-level module
//! may use which, and that the table itself has no cycle.
//!
//! What it sees: `use crate::a::…`, `use crate::{a, b::c}` (also across lines), expression
//! paths such as `crate::a::f()`, `super::…` climbing out of a file's module (counted from
//! the file's place in the tree), and items the crate root re-exports (`crate::Name` where
//! the root has `pub use a::Name`, counted as a use of `a`).
//! What it does not see: paths in comments and string literals (skipped on purpose), a
//! module reached through a name imported earlier (`use crate::a; … a::b::f()` is caught at
//! the `use`, not at `a::b`), macros that build paths, and `super` inside an inline `mod`
//! (it is resolved as if written in the file's own module, which can only over-report).
//! The crate root (`lib.rs`/`main.rs`) wires everything and is not checked.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One declared layer: a top-level module and the modules it may use.
pub type Layer<'a> = (&'a str, &'a [&'a str]);

/// Checks the crate whose sources are in `src` against `layers`; panics with every
/// offending line (file:line, the line, what it may use instead).
pub fn assert_layers(src: &Path, layers: &[Layer<'_>]) {
    if let Err(report) = check(src, layers) {
        panic!("module layering violated:\n{report}");
    }
}

/// The check behind [`assert_layers`]: `Err` holds one message per violation.
pub fn check(src: &Path, layers: &[Layer<'_>]) -> Result<(), String> {
    let table: BTreeMap<&str, BTreeSet<&str>> = layers
        .iter()
        .map(|(m, deps)| (*m, deps.iter().copied().collect()))
        .collect();
    let mut problems = table_cycles(&table);
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let root = ["lib.rs", "main.rs"]
        .iter()
        .map(|f| src.join(f))
        .find(|p| p.exists());
    let reexports = root
        .as_deref()
        .map(|p| root_reexports(&read(p)))
        .unwrap_or_default();
    for file in &files {
        let path = module_path(src, file);
        let Some(own) = path.first() else { continue };
        let Some(allowed) = table.get(own.as_str()) else {
            problems.push(format!(
                "{}: module `{own}` is not in the layering table",
                file.display()
            ));
            continue;
        };
        let text = read(file);
        let code = blank_comments_and_strings(&text);
        for (offset, target) in references(&code, &path) {
            let target = match reexports.get(&target) {
                Some(module) if !table.contains_key(target.as_str()) => module.clone(),
                _ => target,
            };
            if target == *own || !table.contains_key(target.as_str()) {
                continue;
            }
            if !allowed.contains(target.as_str()) {
                let line = code[..offset].matches('\n').count();
                let shown = text.lines().nth(line).unwrap_or("").trim();
                problems.push(format!(
                    "{}:{}: `{shown}`: module `{own}` may use only {allowed:?}, not `{target}`",
                    file.display(),
                    line + 1
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `up/claims.rs` → `[up, claims]`, `up/mod.rs` → `[up]`, `main.rs` → `[]` (the root).
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap_or(file).with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") || parts == ["lib"] || parts == ["main"] {
        parts.pop();
    }
    parts
}

/// `pub use a::{B, C as D};` in the crate root → `{B: a, D: a}`.
fn root_reexports(root: &str) -> BTreeMap<String, String> {
    let code = blank_comments_and_strings(root);
    let mut map = BTreeMap::new();
    for stmt in code.split(';') {
        let Some(rest) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, items)) = rest.split_once("::") else {
            continue;
        };
        for item in items.split([',', '{', '}']) {
            let name = item.rsplit(" as ").next().unwrap_or("").trim();
            let name = name.rsplit("::").next().unwrap_or("").trim();
            if !name.is_empty() {
                map.insert(name.to_owned(), module.trim().to_owned());
            }
        }
    }
    map
}

/// Replaces comments and the insides of string and char literals with spaces, keeping line
/// breaks, so that offsets still map to lines.
fn blank_comments_and_strings(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to.min(b.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    while i < b.len() {
        let end = if b[i..].starts_with(b"//") {
            b[i..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |n| i + n)
        } else if b[i..].starts_with(b"/*") {
            find(b, i + 2, b"*/").map_or(b.len(), |n| n + 2)
        } else if b[i] == b'r' && (b[i..].starts_with(b"r\"") || b[i..].starts_with(b"r#")) {
            let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
            if b.get(i + 1 + hashes) != Some(&b'"') {
                i += 1;
                continue;
            }
            let mut close = vec![b'"'];
            close.extend(std::iter::repeat_n(b'#', hashes));
            find(b, i + 2 + hashes, &close).map_or(b.len(), |n| n + close.len())
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            j + 1
        } else if b[i] == b'\'' && b.get(i + 1) == Some(&b'\\') {
            find(b, i + 2, b"'").map_or(b.len(), |n| n + 1)
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            i + 3
        } else {
            i += 1;
            continue;
        };
        blank(&mut out, i, end);
        i = end;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|n| n + from)
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Every first path segment reached through `crate::` or through `super::` out of the
/// file's module, with the offset where its path starts.
fn references(code: &str, path: &[String]) -> Vec<(usize, String)> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if i > 0 && is_ident(b[i - 1]) {
            i += 1;
            continue;
        }
        let start = i;
        let mut rest = i;
        let mut supers = 0;
        while b[rest..].starts_with(b"super::") {
            supers += 1;
            rest += "super::".len();
        }
        let at_root = if b[rest..].starts_with(b"crate::") && supers == 0 {
            rest += "crate::".len();
            true
        } else {
            supers > 0 && supers >= path.len()
        };
        if at_root {
            for name in first_segments(b, rest) {
                out.push((start, name));
            }
        }
        i = rest.max(i + 1);
    }
    out
}

/// The first identifier at `at`, or of each item of a `{…}` group there.
fn first_segments(b: &[u8], at: usize) -> Vec<String> {
    let ident = |from: usize| {
        let from = from
            + b[from..]
                .iter()
                .take_while(|c| c.is_ascii_whitespace())
                .count();
        let len = b[from..].iter().take_while(|&&c| is_ident(c)).count();
        String::from_utf8_lossy(&b[from..from + len]).into_owned()
    };
    if b.get(at) != Some(&b'{') {
        return vec![ident(at)];
    }
    let mut names = vec![ident(at + 1)];
    let mut depth = 0;
    for (n, &c) in b[at..].iter().enumerate() {
        match c {
            b'{' => depth += 1,
            b'}' if depth == 1 => break,
            b'}' => depth -= 1,
            b',' if depth == 1 => names.push(ident(at + n + 1)),
            _ => {}
        }
    }
    names.retain(|n| !n.is_empty() && n != "self");
    names
}

/// A cycle in the declared table, if any, as `a → b → a`.
fn table_cycles(table: &BTreeMap<&str, BTreeSet<&str>>) -> Vec<String> {
    fn visit<'a>(
        m: &'a str,
        table: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<String> {
        if let Some(at) = stack.iter().position(|s| *s == m) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(m);
            return Some(cycle.join(" → "));
        }
        if !done.insert(m) {
            return None;
        }
        stack.push(m);
        for dep in table.get(m).into_iter().flatten() {
            if let Some(c) = visit(dep, table, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    let mut found = Vec::new();
    for m in table.keys() {
        if let Some(c) = visit(m, table, &mut Vec::new(), &mut done) {
            found.push(format!("the layering table has a cycle: {c}"));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_grouped_and_qualified_paths_but_not_comments() {
        let code = blank_comments_and_strings(
            "use crate::{a::X,\n  b};\n// crate::c\nlet s = \"crate::d\";\ncrate::e::f();\n",
        );
        let names: Vec<String> = references(&code, &["m".into()])
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        assert_eq!(names, ["a", "b", "e"]);
    }

    #[test]
    fn super_climbs_out_only_from_the_top_of_the_module() {
        let code = "use super::x; use super::super::y;";
        let nested: Vec<String> = references(code, &["up".into(), "claims".into()])
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        assert_eq!(nested, ["y"]);
    }

    #[test]
    fn a_cycle_in_the_table_is_reported() {
        let table = BTreeMap::from([("a", BTreeSet::from(["b"])), ("b", BTreeSet::from(["a"]))]);
        assert_eq!(table_cycles(&table).len(), 1);
    }
}
