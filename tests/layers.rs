//! The architecture, checked (docs/DESIGN.md §2):
//!
//! - **The sans-IO wall** (STYLE.md (a), (b) 6): the core folders never name a runtime, a
//!   socket, a thread or a clock read. Scans the source of the cores (`src/protocol`,
//!   `src/call`, `src/queue`, `src/media` except `src/media/codec.rs`, which wraps C libraries,
//!   `src/netsim`, `src/record`, `src/ui`) and fails on `tokio`, `std::net`, `std::thread`,
//!   `Instant::now` or `SystemTime::now` outside comments and outside test code
//!   (`#[cfg(test)]` items and the files of `#[cfg(test)] mod x;`), where one `Instant::now()`
//!   as `t0` is the house style for fake clocks.
//! - **The layers**: every module of `src/` is a core (a top-level folder), an edge
//!   (`src/edges/X`) or a role (`src/roles/X`). Cores import only cores, edges import cores and
//!   edges, roles import cores and edges, and only the demo and the bench (which run the other
//!   roles in one process) import other roles. No two modules import each other, directly or
//!   through others.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The cores: the top-level modules of `src/`, each a folder.
const CORES: [&str; 9] =
    ["call", "console", "limits", "media", "netsim", "protocol", "queue", "record", "ui"];

/// Paths inside the core folders that may do otherwise: the codec wrappers (C libraries).
const EXEMPT: [&str; 2] = ["src/media/codec.rs", "src/media/codec"];

/// Roles that run other roles in one process, and the roles they may import.
const COMPOSERS: [(&str, &[&str]); 2] = [
    ("roles::demo", &["roles::agent", "roles::hub", "roles::kiosk"]),
    ("roles::bench", &["roles::agent", "roles::hub", "roles::kiosk"]),
];

/// What a core must not name.
const FORBIDDEN: [&str; 5] = ["tokio", "std::net", "std::thread", "Instant::now", "SystemTime::now"];

#[test]
fn core_folders_stay_sans_io() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for core in CORES {
        let dir = root.join("src").join(core);
        assert!(dir.is_dir(), "{} is gone: update the wall test", dir.display());
        collect_rs(&dir, &mut files);
    }
    let exempt: Vec<PathBuf> = EXEMPT.iter().map(|p| root.join(p)).collect();
    files.retain(|f| !exempt.iter().any(|e| f.starts_with(e)));

    drop_test_files(&mut files);
    assert!(files.len() >= 8, "scanned only {files:?}: update the wall test");

    let mut breaches = Vec::new();
    for file in &files {
        for (n, line) in scannable(&read(file)).lines().enumerate() {
            for word in FORBIDDEN {
                if line.contains(word) {
                    let shown = file.strip_prefix(root).unwrap_or(file).display();
                    breaches.push(format!("{shown}:{}: names `{word}`: {}", n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        breaches.is_empty(),
        "sans-IO cores must take time and I/O as arguments:\n{}",
        breaches.join("\n")
    );
}

/// What a module is, by where its file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layer {
    Core,
    Edge,
    Role,
}

fn layer(unit: &str) -> Layer {
    if unit.starts_with("edges::") {
        Layer::Edge
    } else if unit.starts_with("roles::") {
        Layer::Role
    } else {
        Layer::Core
    }
}

/// The module a file of `src/` belongs to (`queue`, `edges::net`, `roles::hub`), or `None` for
/// the files that only declare modules (`lib.rs`, `edges/mod.rs`, `roles/mod.rs`) and the
/// binary's `main.rs`.
fn unit_of(rel: &Path) -> Option<String> {
    let parts: Vec<String> =
        rel.iter().map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string()).collect();
    match parts.as_slice() {
        [_, file] if file == "lib" || file == "main" => None,
        [_, group, file] if (group == "edges" || group == "roles") && file == "mod" => None,
        [_, group, name, ..] if group == "edges" || group == "roles" => Some(format!("{group}::{name}")),
        [_, name, ..] => Some(name.clone()),
        _ => None,
    }
}

/// The modules named by `crate::` paths in `code` (comments and test code already blanked):
/// `crate::queue::X`, `crate::edges::net::Y`, `crate::roles::{hub, kiosk}`, `crate::{media, ui}`.
fn imports(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `kioskd_crate::`, not ours
        }
        for first in path_heads(rest) {
            if first == "edges" || first == "roles" {
                let after = &rest[rest.find(&first).map_or(0, |i| i + first.len())..];
                for second in after.strip_prefix("::").map(path_heads).unwrap_or_default() {
                    found.insert(format!("{first}::{second}"));
                }
            } else if !first.is_empty() {
                found.insert(first);
            }
        }
    }
    found
}

/// The first segments of a path after `::`: `a::b` gives `a`, `{a, b::c, self}` gives `a`, `b`.
fn path_heads(s: &str) -> Vec<String> {
    let s = s.trim_start();
    let ident = |t: &str| -> String {
        t.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
    };
    let Some(list) = s.strip_prefix('{') else { return vec![ident(s)] };
    let mut heads = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in list.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                heads.push(ident(&list[start..i]));
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                heads.push(ident(&list[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    heads.retain(|h| !h.is_empty() && h != "self");
    heads
}

/// Leaves out the files that are `#[cfg(test)]` modules of another file (test code).
fn drop_test_files(files: &mut Vec<PathBuf>) {
    let mut test_files: Vec<PathBuf> = Vec::new();
    for file in files.iter() {
        for name in cfg_test_out_of_line_mods(&lex(&read(file))) {
            let dir = module_dir(file);
            test_files.push(dir.join(format!("{name}.rs")));
            test_files.push(dir.join(&name));
        }
    }
    files.retain(|f| !test_files.iter().any(|t| f.starts_with(t)));
}

/// Which module imports which, from the production code of `src/` (comments and test code
/// left out).
fn import_graph(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    collect_rs(&root.join("src"), &mut files);
    drop_test_files(&mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(unit) = unit_of(file.strip_prefix(root).unwrap_or(file)) else { continue };
        let deps = imports(&scannable(&read(file)));
        let entry = graph.entry(unit.clone()).or_default();
        entry.extend(deps.into_iter().filter(|d| *d != unit));
    }
    graph
}

#[test]
fn layers_import_downwards_only() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let graph = import_graph(root);
    for core in CORES {
        assert!(graph.contains_key(core), "core {core} is gone: update the layer test");
    }
    for unit in ["edges::net", "edges::devices", "edges::session", "roles::hub", "roles::kiosk"] {
        assert!(graph.contains_key(unit), "{unit} is gone: update the layer test");
    }
    let mut breaches = Vec::new();
    for (unit, deps) in &graph {
        for dep in deps {
            if !graph.contains_key(dep) {
                breaches.push(format!("{unit} names crate::{dep}, which is not a module of src/"));
                continue;
            }
            let allowed = match (layer(unit), layer(dep)) {
                (Layer::Core, Layer::Core) => true,
                (Layer::Core, _) => false,
                (Layer::Edge, Layer::Role) => false,
                (Layer::Edge, _) => true,
                (Layer::Role, Layer::Role) => {
                    COMPOSERS.iter().any(|(c, may)| c == unit && may.contains(&dep.as_str()))
                }
                (Layer::Role, _) => true,
            };
            if !allowed {
                breaches.push(format!("{unit} ({:?}) imports {dep} ({:?})", layer(unit), layer(dep)));
            }
        }
    }
    assert!(breaches.is_empty(), "imports against the layers:\n{}", breaches.join("\n"));
}

#[test]
fn no_import_cycles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let graph = import_graph(root);
    // Depth-first search; a back edge is a cycle, reported with its path.
    fn visit<'a>(
        unit: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
        cycles: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|u| *u == unit) {
            let mut cycle = path[at..].to_vec();
            cycle.push(unit);
            cycles.push(cycle.join(" → "));
            return;
        }
        if !done.insert(unit) {
            return;
        }
        path.push(unit);
        for dep in graph.get(unit).into_iter().flatten() {
            visit(dep, graph, path, done, cycles);
        }
        path.pop();
    }
    let (mut done, mut cycles) = (BTreeSet::new(), Vec::new());
    for unit in graph.keys() {
        visit(unit, &graph, &mut Vec::new(), &mut done, &mut cycles);
    }
    assert!(cycles.is_empty(), "modules that import each other:\n{}", cycles.join("\n"));
}

#[test]
fn import_scanner_reads_paths() {
    let code = "use crate::edges::{config::X, net};\nlet a = crate::queue::AgentQueue::new();\nuse crate::{media, ui::Lang, self};\nuse crate::roles::hub;\nmy_crate::foo;";
    let got: Vec<String> = imports(code).into_iter().collect();
    assert_eq!(got, ["edges::config", "edges::net", "media", "queue", "roles::hub", "ui"]);
    assert_eq!(unit_of(Path::new("src/edges/net/tls.rs")).as_deref(), Some("edges::net"));
    assert_eq!(unit_of(Path::new("src/edges/health.rs")).as_deref(), Some("edges::health"));
    assert_eq!(unit_of(Path::new("src/queue/log.rs")).as_deref(), Some("queue"));
    assert_eq!(unit_of(Path::new("src/roles/mod.rs")), None);
    assert_eq!(unit_of(Path::new("src/main.rs")), None);
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Where the out-of-line submodules of `file` live: beside `mod.rs`, or in `name/` for
/// `name.rs`.
fn module_dir(file: &Path) -> PathBuf {
    let parent = file.parent().unwrap_or(Path::new("."));
    match file.file_stem().and_then(|s| s.to_str()) {
        Some("mod" | "lib" | "main") | None => parent.to_path_buf(),
        Some(stem) => parent.join(stem),
    }
}

/// What a character of the source is part of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Code,
    /// A string or char literal, quotes included.
    Literal,
    Comment,
}

/// Classifies every character of `src`: code, literal (strings, raw strings, chars) or comment
/// (line, block, nested block). A lifetime's quote is code.
fn lex(src: &str) -> Vec<(char, Kind)> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let (c, next) = (chars[i], chars.get(i + 1).copied());
        let end = if c == '/' && next == Some('/') {
            (i..chars.len()).find(|&j| chars[j] == '\n').unwrap_or(chars.len())
        } else if c == '/' && next == Some('*') {
            block_comment_end(&chars, i)
        } else if c == '"' {
            string_end(&chars, i)
        } else if c == 'r' && raw_string_hashes(&chars, i).is_some() {
            raw_string_end(&chars, i)
        } else if c == '\'' {
            char_literal_end(&chars, i).unwrap_or(i)
        } else {
            i
        };
        if end == i {
            out.push((c, Kind::Code));
            i += 1;
            continue;
        }
        let kind = if c == '/' { Kind::Comment } else { Kind::Literal };
        out.extend(chars[i..end].iter().map(|&c| (c, kind)));
        i = end;
    }
    out
}

fn block_comment_end(chars: &[char], mut i: usize) -> usize {
    let mut depth = 0;
    while i < chars.len() {
        if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
            depth += 1;
            i += 2;
        } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    chars.len()
}

/// The index after the string literal whose `"` is at `i`.
fn string_end(chars: &[char], mut i: usize) -> usize {
    i += 1;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    chars.len()
}

/// With `r` at `i` starting a raw string (`r"`, `r#"`, `br"`, not inside an identifier): the
/// number of `#`.
fn raw_string_hashes(chars: &[char], i: usize) -> Option<usize> {
    let before = match i.checked_sub(1).map(|j| chars[j]) {
        Some('b') => i.checked_sub(2).map(|j| chars[j]),
        other => other,
    };
    if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
        return None;
    }
    let hashes = chars[i + 1..].iter().take_while(|&&c| c == '#').count();
    (chars.get(i + 1 + hashes) == Some(&'"')).then_some(hashes)
}

fn raw_string_end(chars: &[char], i: usize) -> usize {
    let hashes = raw_string_hashes(chars, i).unwrap_or(0);
    let mut j = i + 2 + hashes;
    while j < chars.len() {
        if chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) {
            return j + 1 + hashes;
        }
        j += 1;
    }
    chars.len()
}

/// The index after a char literal (`'x'`, `'\n'`, `'\''`, `'\u{1F600}'`) at `i`, or `None` for
/// a lifetime.
fn char_literal_end(chars: &[char], i: usize) -> Option<usize> {
    if chars.get(i + 1) == Some(&'\\') {
        (i + 3..chars.len().min(i + 14)).find(|&j| chars[j] == '\'').map(|j| j + 1)
    } else {
        (chars.get(i + 2) == Some(&'\'')).then_some(i + 3)
    }
}

/// Char indices in `lexed` just after each `#[cfg(test)]` attribute in code.
fn cfg_test_attrs(lexed: &[(char, Kind)]) -> Vec<usize> {
    let code = |i: usize| lexed.get(i).filter(|(_, k)| *k == Kind::Code).map(|(c, _)| *c);
    let mut found = Vec::new();
    for i in 0..lexed.len() {
        if code(i) != Some('#') || code(i + 1) != Some('[') {
            continue;
        }
        let mut inner = String::new();
        let mut j = i + 2;
        while let Some(c) = code(j).filter(|&c| c != ']') {
            if !c.is_whitespace() {
                inner.push(c);
            }
            j += 1;
        }
        if code(j) == Some(']') && inner == "cfg(test)" {
            found.push(j + 1);
        }
    }
    found
}

/// Where the item starting at `start` ends: after its `;` or its matching `}` (code only).
fn item_end(lexed: &[(char, Kind)], start: usize) -> usize {
    let mut depth = 0usize;
    for (i, (c, kind)) in lexed.iter().enumerate().skip(start) {
        if *kind != Kind::Code {
            continue;
        }
        match c {
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            ';' if depth == 0 => return i + 1,
            _ => {}
        }
    }
    lexed.len()
}

/// The names of `#[cfg(test)] mod name;` declarations.
fn cfg_test_out_of_line_mods(lexed: &[(char, Kind)]) -> Vec<String> {
    cfg_test_attrs(lexed)
        .into_iter()
        .filter_map(|at| {
            let item: String = lexed[at..item_end(lexed, at)].iter().map(|(c, _)| c).collect();
            let item = item.trim();
            let item = item.strip_prefix("pub").map_or(item, str::trim_start);
            let name = item.strip_prefix("mod")?.strip_suffix(';')?.trim();
            (!name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_'))
                .then(|| name.to_string())
        })
        .collect()
}

/// The source with comments and `#[cfg(test)]` items blanked, line breaks kept (so line
/// numbers hold), literals kept.
fn scannable(src: &str) -> String {
    let lexed = lex(src);
    let mut keep: Vec<bool> = lexed.iter().map(|(_, k)| *k != Kind::Comment).collect();
    for at in cfg_test_attrs(&lexed) {
        let end = item_end(&lexed, at);
        keep[at..end].iter_mut().for_each(|k| *k = false);
    }
    lexed.iter().zip(keep).map(|(&(c, _), keep)| if keep || c == '\n' { c } else { ' ' }).collect()
}

#[test]
fn scanner_sees_code_not_comments_or_tests() {
    let src = r##"
use tokio::sync; // flagged
// tokio in a comment
/* std::thread in /* a nested */ block */
let url = "http://example"; let t = Instant::now();
let s = r#"a "quoted" // not a comment"#; let n = std::net::TcpStream::connect;
let c = '"'; let l: &'static str = "x"; std::thread::spawn(f);
#[cfg(test)]
mod tests {
    fn f() { let t0 = Instant::now(); let s = "}"; tokio::spawn(x); }
    const J: &[u8] = br#"{"a":"}"}"#; const C: char = '}';
}
#[cfg(test)]
mod more;
fn after() { SystemTime::now(); }
"##;
    let code = scannable(src);
    let hits: Vec<(usize, &str)> = code
        .lines()
        .enumerate()
        .flat_map(|(n, line)| FORBIDDEN.iter().filter(move |w| line.contains(**w)).map(move |w| (n, *w)))
        .collect();
    assert_eq!(
        hits,
        [(1, "tokio"), (4, "Instant::now"), (5, "std::net"), (6, "std::thread"), (14, "SystemTime::now")]
    );
    assert_eq!(cfg_test_out_of_line_mods(&lex(src)), ["more"]);
    assert_eq!(code.lines().count(), src.lines().count(), "line numbers kept");
}
