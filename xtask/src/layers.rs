//! `cargo xtask layers`: the daemon crate's module graph, checked against the
//! layering it promises (kernel -> sources -> model -> outputs, wire and
//! readers at the bottom), and function lengths across the workspace.
//!
//! Reads source text only: comments and string literals are blanked, then
//! every `crate::name` path (including `use crate::{a, b::c}` groups) is an
//! edge from the file's top-level module to `name`. Items under
//! `#[cfg(test)]` are left out: tests may reach across rooms.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

/// The daemon crate's top-level modules, lowest layer first. A module may
/// import only modules of a strictly lower rank (or itself).
pub const LAYERS: &[(&str, u8, &str)] = &[
    ("wire", 0, "the types users rely on: events, requests, reports"),
    ("readers", 1, "pure parsers of kernel and runtime files"),
    ("config", 2, "the user's configuration: parsed and validated"),
    ("kernel", 2, "eBPF programs: load, attach, ring buffer, decode, maps"),
    ("model", 3, "the only owner of per-cgroup and per-host state, and the event stream"),
    ("sources", 4, "the loops that feed the model"),
    ("outputs", 5, "metrics, HTTP, the event socket, alerts and sinks"),
    ("cli", 6, "the commands"),
    ("daemon", 7, "the composition root"),
];

/// Functions longer than this (lines of body) outside tests are reported.
pub const MAX_FN_LINES: usize = 100;

#[derive(clap::Args, Default)]
pub struct LayersArgs {
    /// Exit non-zero on a cycle, a layer violation or a long function.
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Default)]
pub struct Graph {
    /// module -> module -> (count, a file that does it)
    pub edges: BTreeMap<String, BTreeMap<String, (usize, PathBuf)>>,
    pub modules: BTreeSet<String>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub graph: Graph,
    pub cycles: Vec<Vec<String>>,
    /// Edges that close a cycle in a depth-first walk (a feedback edge set).
    pub back_edges: Vec<(String, String)>,
    /// Edges against the declared layering.
    pub violations: Vec<String>,
    pub unranked: Vec<String>,
    pub long_functions: Vec<(PathBuf, usize, String, usize)>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.cycles.is_empty() && self.violations.is_empty() && self.unranked.is_empty() && self.long_functions.is_empty()
    }
}

pub fn run(args: &LayersArgs) -> Result<()> {
    let root = crate::workspace_root();
    let report = analyze(&root)?;
    print!("{}", render(&report));
    if args.check && !report.is_clean() {
        bail!("layering check failed (see above)");
    }
    Ok(())
}

pub fn analyze(root: &Path) -> Result<Report> {
    let src = root.join("oomwatch/src");
    let graph = module_graph(&src)?;
    let cycles = strongly_connected(&graph).into_iter().filter(|c| c.len() > 1).collect();
    let back_edges = back_edges(&graph);
    let rank: BTreeMap<&str, u8> = LAYERS.iter().map(|(m, r, _)| (*m, *r)).collect();
    let mut violations = Vec::new();
    let unranked: Vec<String> = graph.modules.iter().filter(|m| !rank.contains_key(m.as_str())).cloned().collect();
    for (from, tos) in &graph.edges {
        for (to, (n, file)) in tos {
            if let (Some(rf), Some(rt)) = (rank.get(from.as_str()), rank.get(to.as_str()))
                && rt >= rf
            {
                violations.push(format!("{from} (layer {rf}) imports {to} (layer {rt}) {n}x, e.g. in {}", rel(root, file)));
            }
        }
    }
    let mut long_functions = Vec::new();
    for dir in ["oomwatch/src", "oomwatch-common/src", "oomwatch-ebpf/src", "xtask/src"] {
        for file in rust_files(&root.join(dir))? {
            // A module's tests in a file of their own (`#[cfg(test)] mod tests;`).
            if file.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&file).with_context(|| file.display().to_string())?;
            for (line, name, len) in long_fns(&strip_tests(&blank(&text))) {
                long_functions.push((file.clone(), line, name, len));
            }
        }
    }
    Ok(Report { graph, cycles, back_edges, violations, unranked, long_functions })
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let edges: usize = r.graph.edges.values().map(BTreeMap::len).sum();
    let _ = writeln!(out, "oomwatch/src: {} top-level modules, {edges} module edges", r.graph.modules.len());
    let rank: BTreeMap<&str, u8> = LAYERS.iter().map(|(m, r, _)| (*m, *r)).collect();
    for m in &r.graph.modules {
        let tos: Vec<String> = r.graph.edges.get(m).map(|t| t.keys().cloned().collect()).unwrap_or_default();
        let layer = rank.get(m.as_str()).map_or("-".to_owned(), u8::to_string);
        let _ = writeln!(out, "  [{layer}] {m} -> {}", if tos.is_empty() { "(nothing)".to_owned() } else { tos.join(", ") });
    }
    let _ = writeln!(out, "cycles: {}", r.cycles.len());
    for c in &r.cycles {
        let _ = writeln!(out, "  {} modules: {}", c.len(), c.join(", "));
    }
    let _ = writeln!(out, "back edges (edges that close a cycle): {}", r.back_edges.len());
    for (a, b) in &r.back_edges {
        let _ = writeln!(out, "  {a} -> {b}");
    }
    let _ = writeln!(out, "layer violations: {}", r.violations.len() + r.unranked.len());
    for v in &r.violations {
        let _ = writeln!(out, "  {v}");
    }
    for m in &r.unranked {
        let _ = writeln!(out, "  {m}: not in the layer table (xtask/src/layers.rs)");
    }
    let _ = writeln!(out, "functions over {MAX_FN_LINES} lines outside tests: {}", r.long_functions.len());
    for (file, line, name, len) in &r.long_functions {
        let _ = writeln!(out, "  {}:{line} {name}: {len} lines", file.display());
    }
    out
}

fn rust_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| d.display().to_string())? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Modules declared in lib.rs under `#[cfg(test)]`: not part of the daemon.
fn test_only_modules(lib: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut prev_cfg_test = false;
    for line in lib.lines().map(str::trim) {
        if line == "#[cfg(test)]" {
            prev_cfg_test = true;
            continue;
        }
        if prev_cfg_test && let Some(name) = line.strip_prefix("mod ").or_else(|| line.strip_prefix("pub mod ")) {
            out.insert(name.trim_end_matches(';').trim().to_owned());
        }
        prev_cfg_test = false;
    }
    out
}

pub fn module_graph(src: &Path) -> Result<Graph> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).with_context(|| src.join("lib.rs").display().to_string())?;
    let test_only = test_only_modules(&lib);
    let mut g = Graph::default();
    for file in rust_files(src)? {
        let rel = file.strip_prefix(src).unwrap_or(&file);
        let first = rel.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned()).unwrap_or_default();
        let module = first.trim_end_matches(".rs").to_owned();
        if module == "lib" || module == "main" || test_only.contains(&module) {
            continue;
        }
        g.modules.insert(module.clone());
        let text = std::fs::read_to_string(&file).with_context(|| file.display().to_string())?;
        for target in crate_paths(&strip_tests(&blank(&text))) {
            if target == module || !src.join(&target).exists() && !src.join(format!("{target}.rs")).exists() {
                continue; // items of lib.rs itself (e.g. error_chain)
            }
            if test_only.contains(&target) {
                continue;
            }
            let e = g.edges.entry(module.clone()).or_default().entry(target).or_insert((0, file.clone()));
            e.0 += 1;
        }
    }
    Ok(g)
}

/// Source with comments, string and char literals replaced by spaces
/// (newlines kept, so line numbers stay right).
pub fn blank(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let keep_nl = |out: &mut Vec<u8>, c: u8| out.push(if c == b'\n' { b'\n' } else { b' ' });
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                out.push(b' ');
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    keep_nl(&mut out, b[i]);
                    i += 1;
                }
            }
        } else if c == b'r' && (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#')) && (i == 0 || !is_ident(b[i - 1])) {
            // Raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(c);
                i += 1;
                continue;
            }
            out.extend(std::iter::repeat_n(b' ', j + 1 - i));
            i = j + 1;
            loop {
                if i >= b.len() {
                    break;
                }
                if b[i] == b'"' && b[i + 1..].iter().take(hashes).filter(|&&x| x == b'#').count() == hashes && b.len() >= i + 1 + hashes {
                    out.extend(std::iter::repeat_n(b' ', hashes + 1));
                    i += hashes + 1;
                    break;
                }
                keep_nl(&mut out, b[i]);
                i += 1;
            }
        } else if c == b'"' {
            out.push(b' ');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    keep_nl(&mut out, b[i]);
                    i += 1;
                }
                keep_nl(&mut out, b[i]);
                i += 1;
            }
            out.push(b' ');
            i += 1;
        } else if c == b'\'' {
            // A char literal ('a', '\n', '\u{..}') or a lifetime ('a).
            let is_char = b.get(i + 1) == Some(&b'\\') || (b.get(i + 2) == Some(&b'\'')) || (b.get(i + 1).is_some_and(|x| *x >= 0x80));
            if is_char {
                out.push(b' ');
                i += 1;
                while i < b.len() && b[i] != b'\'' {
                    if b[i] == b'\\' {
                        out.push(b' ');
                        i += 1;
                    }
                    out.push(b' ');
                    i += 1;
                }
                out.push(b' ');
                i += 1;
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Index of the brace that closes the one at `open`.
fn matching_brace(b: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (k, &c) in b.iter().enumerate().skip(open) {
        match c {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(k);
                }
            }
            _ => {}
        }
    }
    None
}

/// Blanks items under `#[cfg(test)]` (a module, fn or impl up to its
/// closing brace, or a declaration up to its `;`). Expects blanked text.
pub fn strip_tests(text: &str) -> String {
    let mut b = text.as_bytes().to_vec();
    let needle = b"#[cfg(test)]";
    let mut from = 0;
    while let Some(pos) = find(&b[from..], needle).map(|p| p + from) {
        let after = pos + needle.len();
        let brace = b[after..].iter().position(|&c| c == b'{').map(|p| p + after);
        let semi = b[after..].iter().position(|&c| c == b';').map(|p| p + after);
        let end = match (brace, semi) {
            (Some(br), Some(se)) if se < br => se,
            (Some(br), _) => matching_brace(&b, br).unwrap_or(b.len() - 1),
            (None, Some(se)) => se,
            (None, None) => b.len() - 1,
        };
        for c in &mut b[pos..=end] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
        from = end + 1;
    }
    String::from_utf8_lossy(&b).into_owned()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The first segment after every `crate::` (groups expanded).
pub fn crate_paths(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = find(&b[from..], b"crate::").map(|p| p + from) {
        from = pos + 7;
        if pos > 0 && (is_ident(b[pos - 1]) || b[pos - 1] == b'$') {
            continue; // $crate:: in macros, or some_crate::
        }
        let mut i = from;
        while b.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        if b.get(i) == Some(&b'{') {
            let Some(close) = matching_brace(b, i) else { continue };
            // Top-level items of the group: split at commas of depth 0.
            let mut depth = 0;
            let mut start = i + 1;
            for k in i + 1..=close {
                match b[k] {
                    b'{' => depth += 1,
                    b'}' if depth > 0 => depth -= 1,
                    b',' | b'}' if depth == 0 => {
                        let item = String::from_utf8_lossy(&b[start..k]);
                        let name: String = item.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                        if !name.is_empty() && name != "self" {
                            out.push(name);
                        }
                        start = k + 1;
                    }
                    _ => {}
                }
            }
        } else {
            let name: String = text[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

/// (line, name, body lines) of every `fn` whose body is over the limit.
pub fn long_fns(text: &str) -> Vec<(usize, String, usize)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = find(&b[from..], b"fn ").map(|p| p + from) {
        from = pos + 3;
        if pos > 0 && is_ident(b[pos - 1]) {
            continue;
        }
        let name: String = text[from..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if name.is_empty() {
            continue; // `fn(` types
        }
        // The body starts at the first `{` before any `;` (a declaration).
        let Some(open) = b[from..].iter().position(|&c| c == b'{' || c == b';').map(|p| p + from) else { continue };
        if b[open] == b';' {
            continue;
        }
        let Some(close) = matching_brace(b, open) else { continue };
        let lines = b[open..close].iter().filter(|&&c| c == b'\n').count().saturating_sub(1);
        if lines > MAX_FN_LINES {
            let line = b[..pos].iter().filter(|&&c| c == b'\n').count() + 1;
            out.push((line, name, lines));
        }
    }
    out
}

/// Tarjan's strongly connected components.
fn strongly_connected(g: &Graph) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        if let Some(tos) = t.g.edges.get(v) {
            for w in tos.keys() {
                let w = w.as_str();
                if !t.index.contains_key(w) {
                    visit(t, w);
                    let lw = t.low[w];
                    let lv = t.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if t.on.contains(w) {
                    let iw = t.index[w];
                    let lv = t.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            comp.sort();
            t.out.push(comp);
        }
    }
    let mut t = T { g, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), on: BTreeSet::new(), next: 0, out: Vec::new() };
    for m in &g.modules {
        if !t.index.contains_key(m.as_str()) {
            visit(&mut t, m);
        }
    }
    t.out
}

/// Edges to a module still on the depth-first path (modules in name order).
fn back_edges(g: &Graph) -> Vec<(String, String)> {
    fn visit(g: &Graph, v: &str, state: &mut BTreeMap<String, u8>, out: &mut Vec<(String, String)>) {
        state.insert(v.to_owned(), 1);
        if let Some(tos) = g.edges.get(v) {
            for w in tos.keys() {
                match state.get(w.as_str()).copied().unwrap_or(0) {
                    0 => visit(g, w, state, out),
                    1 => out.push((v.to_owned(), w.clone())),
                    _ => {}
                }
            }
        }
        state.insert(v.to_owned(), 2);
    }
    let mut state = BTreeMap::new();
    let mut out = Vec::new();
    for m in &g.modules {
        if !state.contains_key(m) {
            visit(g, m, &mut state, &mut out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_paths_groups_and_skips_comments_strings_and_tests() {
        let src = r#"
use crate::{a::X, b, c::{d, e}, self};
// crate::commented
/* crate::blocked */
fn f() { let s = "crate::in_string"; crate::g::h(); }
#[cfg(test)]
mod tests { use crate::test_only; }
"#;
        let paths = crate_paths(&strip_tests(&blank(src)));
        assert_eq!(paths, ["a", "b", "c", "g"]);
    }

    #[test]
    fn measures_function_bodies() {
        let mut src = String::from("fn short() {\n}\nfn long() {\n");
        for _ in 0..=MAX_FN_LINES {
            src.push_str("    x();\n");
        }
        src.push_str("}\nfn decl();\n");
        let long = long_fns(&blank(&src));
        assert_eq!(long.len(), 1);
        assert_eq!((long[0].0, long[0].1.as_str()), (3, "long"));
    }

    #[test]
    fn finds_cycles_and_back_edges() {
        let mut g = Graph::default();
        for m in ["a", "b", "c"] {
            g.modules.insert(m.into());
        }
        let mut edge = |a: &str, b: &str| {
            g.edges.entry(a.into()).or_default().insert(b.into(), (1, PathBuf::new()));
        };
        edge("a", "b");
        edge("b", "c");
        edge("c", "a");
        assert_eq!(strongly_connected(&g).into_iter().filter(|c| c.len() > 1).count(), 1);
        assert_eq!(back_edges(&g), [("c".to_owned(), "a".to_owned())]);
    }

    /// The layering holds on the real tree: no cycle, nothing against the
    /// layer table, no function over the limit.
    #[test]
    fn the_daemon_crate_is_layered() {
        let report = analyze(&crate::workspace_root()).unwrap();
        assert!(report.is_clean(), "{}", render(&report));
    }
}
