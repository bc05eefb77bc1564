//! The sans-IO wall (STYLE.md (a), (b) 6): the core folders never name a runtime, a socket, a
//! thread or a clock read. Scans the source of `src/protocol`, `src/call`, `src/queue`,
//! `src/netsim` (except `src/netsim/proxy.rs`, its UDP driver), `src/record` (except
//! `src/record/writer.rs`, its file thread), `src/ui` (the kiosk's screen) and `src/media` (except `src/media/codec.rs` and `src/media/codec/`, which wrap C libraries) and
//! fails on `tokio`, `std::net`, `std::thread`, `Instant::now` or `SystemTime::now` outside
//! comments and outside test code (`#[cfg(test)]` items and the files of `#[cfg(test)] mod x;`),
//! where one `Instant::now()` as `t0` is the house style for fake clocks.

use std::fs;
use std::path::{Path, PathBuf};

/// Folders that hold sans-IO cores.
const CORE_DIRS: [&str; 7] =
    ["src/protocol", "src/call", "src/queue", "src/media", "src/netsim", "src/record", "src/ui"];

/// Paths inside the core folders that may do otherwise: the codec wrappers, the UDP driver of
/// the network model and the recording's file thread.
const EXEMPT: [&str; 4] =
    ["src/media/codec.rs", "src/media/codec", "src/netsim/proxy.rs", "src/record/writer.rs"];

/// What a core must not name.
const FORBIDDEN: [&str; 5] = ["tokio", "std::net", "std::thread", "Instant::now", "SystemTime::now"];

#[test]
fn core_folders_stay_sans_io() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in CORE_DIRS {
        let dir = root.join(dir);
        assert!(dir.is_dir(), "{} is gone: update the wall test", dir.display());
        collect_rs(&dir, &mut files);
    }
    let exempt: Vec<PathBuf> = EXEMPT.iter().map(|p| root.join(p)).collect();
    files.retain(|f| !exempt.iter().any(|e| f.starts_with(e)));

    // Files that are `#[cfg(test)]` modules of another file are test code.
    let mut test_files: Vec<PathBuf> = Vec::new();
    for file in &files {
        for name in cfg_test_out_of_line_mods(&lex(&read(file))) {
            let dir = module_dir(file);
            test_files.push(dir.join(format!("{name}.rs")));
            test_files.push(dir.join(&name));
        }
    }
    files.retain(|f| !test_files.iter().any(|t| f.starts_with(t)));
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
