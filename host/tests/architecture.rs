//! The host's modules form layers that import downwards only, and no two files of the
//! host or of the SDK import each other in a cycle.
//!
//! Why: with the layers pointing down, a new kind (source, transform, sink) or a new
//! plugin capability is added in its own layer without touching the layers above it, and
//! each layer can be read, tested and replaced knowing only the layers below. See
//! `docs/architecture.md`.
//!
//! The check reads the sources at run time with a small scanner (std only): comments and
//! string/char literals are blanked out, then `use` trees and inline `crate::`, `$crate::`,
//! `self::` and `super::` paths are collected and resolved to the file-backed module they
//! name. `#[cfg(test)] mod … { … }` blocks, `tests/` folders, `tests.rs`, `main.rs` and the
//! binary's `commands/` are left out: they are not part of the library's layering.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// The host's top-level modules, bottom layer first. A module may use the layers below
/// its own, never its own layer's siblings nor the layers above.
const LAYERS: &[&[&str]] = &[
    &[
        "event", "counters", "signals", "tls", "buffer", "state", "storage",
    ],
    &["pipeline", "template", "tables", "event_record"],
    &["inference"],
    &["runtime"],
    &["connect", "release"],
    &["component", "emit"],
    &["sources", "transforms", "sinks", "jobs"],
    &["config"],
    &["topology"],
    &["broker", "fleet", "workflow", "testing"],
    &["api"],
    &["supervisor"],
    &["agent"],
];

/// A module path relative to the crate root (`[]` is the root).
type ModulePath = Vec<String>;

// ---------------------------------------------------------------------------------------
// The rules
// ---------------------------------------------------------------------------------------

#[test]
fn layers_point_down() {
    let host = Crate::load(&host_src(), "host/src");
    let mut violations = Vec::new();
    for file in &host.files {
        // The crate root only declares the modules: it is exempt.
        let Some(own) = file.module.first() else {
            continue;
        };
        let Some(own_layer) = layer(own) else {
            if file.module.len() == 1 {
                violations.push(format!(
                    "{}: module `{own}` is in no layer: add it to LAYERS in \
                     tests/architecture.rs and to docs/architecture.md",
                    file.display
                ));
            }
            continue;
        };
        let mut reported = BTreeSet::new();
        for (line, target) in &file.uses {
            let Some(used) = target.first() else { continue };
            // A module in no layer is reported once, above, for its own file.
            let Some(used_layer) = layer(used) else {
                continue;
            };
            if used != own && used_layer >= own_layer && reported.insert((line, used)) {
                violations.push(format!(
                    "{}:{line}: {own} (layer {own_layer}) uses {used} (layer {used_layer}): \
                     a layer may only use the layers below it",
                    file.display
                ));
            }
        }
    }
    assert_none("layer violation(s)", &violations);
}

#[test]
fn host_has_no_import_cycles() {
    assert_none(
        "import cycle(s)",
        &import_cycles(&Crate::load(&host_src(), "host/src")),
    );
}

#[test]
fn sdk_has_no_import_cycles() {
    let sdk_src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/src");
    assert_none(
        "import cycle(s)",
        &import_cycles(&Crate::load(&sdk_src, "sdk/src")),
    );
}

fn host_src() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The layer (1 = bottom) of a host top-level module.
fn layer(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
        .map(|index| index + 1)
}

fn assert_none(what: &str, violations: &[String]) {
    assert!(
        violations.is_empty(),
        "{} {what}:\n\n{}\n",
        violations.len(),
        violations.join("\n")
    );
}

/// Every strongly connected component of more than one file in the crate's file graph,
/// with the edges inside it.
fn import_cycles(krate: &Crate) -> Vec<String> {
    let graph = krate.file_graph();
    let mut cycles = Vec::new();
    for mut component in strongly_connected(&graph) {
        if component.len() < 2 {
            continue;
        }
        component.sort_unstable();
        let names: Vec<&str> = component
            .iter()
            .map(|&f| krate.files[f].display.as_str())
            .collect();
        let mut text = format!(
            "import cycle between {} files: {}",
            names.len(),
            names.join(", ")
        );
        for &from in &component {
            let mut edges: Vec<(usize, usize)> = graph[from]
                .iter()
                .filter(|(to, _)| component.contains(to))
                .flat_map(|(&to, lines)| lines.iter().map(move |&line| (line, to)))
                .collect();
            edges.sort_unstable();
            let source = &krate.files[from];
            for (line, to) in edges {
                let target = &krate.files[to];
                text += &format!(
                    "\n    {}:{line}: {} uses {} ({})",
                    source.display,
                    module_name(&source.module),
                    module_name(&target.module),
                    target.display
                );
            }
        }
        cycles.push(text);
    }
    cycles
}

fn module_name(module: &[String]) -> String {
    if module.is_empty() {
        "crate".to_string()
    } else {
        module.join("::")
    }
}

/// Tarjan's algorithm: the strongly connected components of `graph` (node → successors).
fn strongly_connected<E>(graph: &[BTreeMap<usize, E>]) -> Vec<Vec<usize>> {
    struct Tarjan<'g, E> {
        graph: &'g [BTreeMap<usize, E>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next_index: usize,
        components: Vec<Vec<usize>>,
    }
    impl<E> Tarjan<'_, E> {
        fn visit(&mut self, node: usize) {
            self.index[node] = Some(self.next_index);
            self.low[node] = self.next_index;
            self.next_index += 1;
            self.stack.push(node);
            self.on_stack[node] = true;
            let graph = self.graph;
            for &next in graph[node].keys() {
                match self.index[next] {
                    None => {
                        self.visit(next);
                        self.low[node] = self.low[node].min(self.low[next]);
                    }
                    Some(index) if self.on_stack[next] => {
                        self.low[node] = self.low[node].min(index)
                    }
                    Some(_) => {}
                }
            }
            if Some(self.low[node]) == self.index[node] {
                let mut component = Vec::new();
                while let Some(member) = self.stack.pop() {
                    self.on_stack[member] = false;
                    component.push(member);
                    if member == node {
                        break;
                    }
                }
                self.components.push(component);
            }
        }
    }
    let nodes = graph.len();
    let mut tarjan = Tarjan {
        graph,
        index: vec![None; nodes],
        low: vec![0; nodes],
        on_stack: vec![false; nodes],
        stack: Vec::new(),
        next_index: 0,
        components: Vec::new(),
    };
    for node in 0..nodes {
        if tarjan.index[node].is_none() {
            tarjan.visit(node);
        }
    }
    tarjan.components
}

// ---------------------------------------------------------------------------------------
// A crate: its files, their modules and what they use
// ---------------------------------------------------------------------------------------

struct Crate {
    files: Vec<SourceFile>,
    /// Every file-backed module, and the index of its file.
    modules: BTreeMap<ModulePath, usize>,
}

struct SourceFile {
    /// The path shown in messages, e.g. `host/src/config/mod.rs`.
    display: String,
    module: ModulePath,
    /// Each reference's line and the file-backed module it resolves to.
    uses: Vec<(usize, ModulePath)>,
}

impl Crate {
    fn load(src: &Path, label: &str) -> Crate {
        let mut relative_paths = Vec::new();
        rust_files(src, &mut Vec::new(), &mut relative_paths);
        let mut files = Vec::new();
        let mut references = Vec::new();
        for relative in relative_paths
            .iter()
            .filter(|relative| is_library_file(relative))
        {
            let path = relative
                .iter()
                .fold(src.to_path_buf(), |path, part| path.join(part));
            let source = fs::read_to_string(&path)
                .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
            let module = module_path(relative);
            references.push(scan(&source, &module));
            let display = format!("{label}/{}", relative.join("/"));
            files.push(SourceFile {
                display,
                module,
                uses: Vec::new(),
            });
        }
        let modules = files
            .iter()
            .enumerate()
            .map(|(i, file)| (file.module.clone(), i))
            .collect();
        let mut krate = Crate { files, modules };

        // `pub use child::Name` in a module: `module::Name` names `module::child`.
        let mut reexports: BTreeMap<ModulePath, BTreeMap<String, ModulePath>> = BTreeMap::new();
        for (file, references) in krate.files.iter().zip(&references) {
            for reference in references {
                let Some(name) = &reference.reexport else {
                    continue;
                };
                let target = Crate::longest_prefix(&krate.modules, &reference.path);
                if target.len() > file.module.len() && target.starts_with(&file.module) {
                    let names = reexports.entry(file.module.clone()).or_default();
                    names.insert(name.clone(), target.to_vec());
                }
            }
        }
        for (file, references) in krate.files.iter_mut().zip(references) {
            for reference in references {
                let mut target = Crate::longest_prefix(&krate.modules, &reference.path).to_vec();
                let next = reference.path.get(target.len());
                if let Some(child) = next.and_then(|name| reexports.get(&target)?.get(name)) {
                    target = child.clone();
                }
                file.uses.push((reference.line, target));
            }
        }
        krate
    }

    /// The longest prefix of `path` that is a file-backed module (at worst the root).
    fn longest_prefix<'p>(
        modules: &BTreeMap<ModulePath, usize>,
        path: &'p [String],
    ) -> &'p [String] {
        let known = (0..=path.len())
            .rev()
            .find(|&len| modules.contains_key(&path[..len]));
        &path[..known.unwrap_or(0)]
    }

    /// File → file → the lines of the references, without a module's references to
    /// itself and to its own descendants (a parent declaring and re-exporting children).
    fn file_graph(&self) -> Vec<BTreeMap<usize, BTreeSet<usize>>> {
        let mut graph = vec![BTreeMap::new(); self.files.len()];
        for (from, file) in self.files.iter().enumerate() {
            for (line, target) in &file.uses {
                let Some(&to) = self.modules.get(target) else {
                    continue;
                };
                if !target.starts_with(&file.module) {
                    graph[from]
                        .entry(to)
                        .or_insert_with(BTreeSet::new)
                        .insert(*line);
                }
            }
        }
        graph
    }
}

/// Every `.rs` file under `dir`, as path components relative to the walk's start, sorted.
fn rust_files(dir: &Path, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let entries =
        fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    let mut entries: Vec<_> = entries
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        prefix.push(name.clone());
        if path.is_dir() {
            rust_files(&path, prefix, out);
        } else if name.ends_with(".rs") {
            out.push(prefix.clone());
        }
        prefix.pop();
    }
}

/// Whether a file (path relative to `src`) is part of the library's layering.
fn is_library_file(relative: &[String]) -> bool {
    let (name, folders) = relative.split_last().expect("a file name");
    name != "main.rs"
        && name != "tests.rs"
        && folders.first().is_none_or(|top| top != "commands")
        && !folders.iter().any(|folder| folder == "tests")
}

/// `lib.rs` → root, `a/mod.rs` → `a`, `a/b.rs` → `a::b`.
fn module_path(relative: &[String]) -> ModulePath {
    let mut module: ModulePath = relative
        .iter()
        .map(|part| part.trim_end_matches(".rs").to_string())
        .collect();
    if module == ["lib"] || module.last().is_some_and(|last| last == "mod") {
        module.pop();
    }
    module
}

// ---------------------------------------------------------------------------------------
// The scanner
// ---------------------------------------------------------------------------------------

/// A path that names something in the crate, made absolute (from the crate root).
#[derive(Debug)]
struct Reference {
    line: usize,
    path: ModulePath,
    /// For a `pub use`, the name under which the path is re-exported.
    reexport: Option<String>,
}

/// The crate paths that a file of module `module` references.
fn scan(source: &str, module: &[String]) -> Vec<Reference> {
    let mut scanner = Scanner {
        tokens: tokenize(&strip_comments_and_literals(source)),
        pos: 0,
        module,
        inline_modules: Vec::new(),
        depth: 0,
        macro_end: 0,
        references: Vec::new(),
    };
    scanner.run();
    scanner.references
}

/// `source` with every comment and string, byte string and char literal blanked out
/// (replaced by spaces, newlines kept so that line numbers stay right).
fn strip_comments_and_literals(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let blank = |&c: &char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        match comment_or_literal_end(&chars, i) {
            Some(end) => {
                out.extend(chars[i..end].iter().map(blank));
                i = end;
            }
            None => {
                out.push(chars[i]);
                i += 1;
            }
        }
    }
    out
}

/// If a comment or a literal starts at `i`, the index just past its end.
fn comment_or_literal_end(chars: &[char], i: usize) -> Option<usize> {
    let at = |k: usize| chars.get(k).copied().unwrap_or('\0');
    let after_ident = |k: usize| k > 0 && is_ident_char(chars[k - 1]);
    match (at(i), at(i + 1)) {
        ('/', '/') => Some(
            (i..chars.len())
                .find(|&k| chars[k] == '\n')
                .unwrap_or(chars.len()),
        ),
        ('/', '*') => {
            let (mut k, mut depth) = (i + 2, 1);
            while k < chars.len() && depth > 0 {
                match (at(k), at(k + 1)) {
                    ('/', '*') => (depth, k) = (depth + 1, k + 2),
                    ('*', '/') => (depth, k) = (depth - 1, k + 2),
                    _ => k += 1,
                }
            }
            Some(k.min(chars.len()))
        }
        ('"', _) => {
            let mut k = i + 1;
            while k < chars.len() && chars[k] != '"' {
                k += if chars[k] == '\\' { 2 } else { 1 };
            }
            Some((k + 1).min(chars.len()))
        }
        // Raw strings `r"…"`, `r#"…"#`, `br#"…"#`, `cr"…"`; not raw identifiers `r#type`.
        ('r', '"' | '#')
            if !after_ident(i) || (matches!(at(i - 1), 'b' | 'c') && !after_ident(i - 1)) =>
        {
            let hashes = (i + 1..chars.len())
                .take_while(|&k| chars[k] == '#')
                .count();
            if at(i + 1 + hashes) != '"' {
                return None;
            }
            let closing: Vec<char> = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let body = i + 2 + hashes;
            let end = (body..chars.len()).find(|&k| chars[k..].starts_with(&closing));
            Some(end.map_or(chars.len(), |k| k + closing.len()))
        }
        // A char literal `'x'` or `'\n'`; a lifetime or label `'a` is left alone.
        ('\'', '\\') => {
            let end = (i + 3..chars.len()).find(|&k| chars[k] == '\'');
            Some(end.map_or(chars.len(), |k| k + 1))
        }
        ('\'', c) if c != '\'' && at(i + 2) == '\'' => Some(i + 3),
        _ => None,
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

struct Token {
    text: String,
    line: usize,
}

/// Identifiers (also `$crate`, `r#name`, numbers), `::`, and single-char punctuation.
fn tokenize(stripped: &str) -> Vec<Token> {
    let chars: Vec<char> = stripped.chars().collect();
    let at = |k: usize| chars.get(k).copied().unwrap_or('\0');
    let (mut tokens, mut line, mut i) = (Vec::new(), 1, 0);
    while i < chars.len() {
        let start = i;
        if chars[i] == '\n' {
            line += 1;
            i += 1;
            continue;
        } else if chars[i].is_whitespace() {
            i += 1;
            continue;
        } else if (at(i) == '$' && is_ident_char(at(i + 1)))
            || (at(i) == 'r' && at(i + 1) == '#' && is_ident_char(at(i + 2)))
        {
            i += if at(i) == '$' { 1 } else { 2 };
            while is_ident_char(at(i)) {
                i += 1;
            }
        } else if is_ident_char(at(i)) {
            while is_ident_char(at(i)) {
                i += 1;
            }
        } else if at(i) == ':' && at(i + 1) == ':' {
            i += 2;
        } else {
            i += 1;
        }
        tokens.push(Token {
            text: chars[start..i].iter().collect(),
            line,
        });
    }
    tokens
}

fn is_ident(token: &str) -> bool {
    token.starts_with(|c: char| is_ident_char(c) || c == '$')
}

struct Scanner<'m> {
    tokens: Vec<Token>,
    pos: usize,
    /// The file's module.
    module: &'m [String],
    /// The inline `mod name { … }` blocks around `pos`, with the brace depth at each.
    inline_modules: Vec<(String, usize)>,
    depth: usize,
    /// Tokens before this index are inside a `macro_rules!` body, whose `self::` and
    /// `super::` paths are relative to wherever the macro is invoked: they are skipped.
    macro_end: usize,
    references: Vec<Reference>,
}

impl Scanner<'_> {
    fn text(&self, index: usize) -> &str {
        self.tokens
            .get(index)
            .map_or("", |token| token.text.as_str())
    }

    fn peek(&self, ahead: usize) -> &str {
        self.text(self.pos + ahead)
    }

    fn run(&mut self) {
        while self.pos < self.tokens.len() {
            match self.peek(0) {
                "#" if self.at_cfg_test() => self.skip_cfg_test(),
                // `pub(crate)`, `pub(super)`, `pub(in crate::x)` are visibilities, not paths.
                "pub" => {
                    self.pos += 1;
                    if self.peek(0) == "(" {
                        self.pos = self.matching(self.pos) + 1;
                    }
                    if self.peek(0) == "use" {
                        self.use_item(true);
                    }
                }
                "use" => self.use_item(false),
                "macro_rules" if self.peek(1) == "!" => {
                    self.macro_end = self.matching(self.pos + 3);
                    self.pos += 3;
                }
                "mod" if is_ident(self.peek(1)) && self.peek(2) == "{" => {
                    self.inline_modules
                        .push((self.peek(1).to_string(), self.depth));
                    self.pos += 2;
                }
                "{" => {
                    self.depth += 1;
                    self.pos += 1;
                }
                "}" => {
                    self.depth = self.depth.saturating_sub(1);
                    if self
                        .inline_modules
                        .last()
                        .is_some_and(|(_, depth)| *depth == self.depth)
                    {
                        self.inline_modules.pop();
                    }
                    self.pos += 1;
                }
                "crate" | "$crate" | "self" | "super" if self.peek(1) == "::" => self.inline_path(),
                _ => self.pos += 1,
            }
        }
    }

    /// The index of the bracket closing the one at `open` (or the last token).
    fn matching(&self, open: usize) -> usize {
        let (opening, closing) = match self.text(open) {
            "(" => ("(", ")"),
            "[" => ("[", "]"),
            "{" => ("{", "}"),
            _ => return open,
        };
        let mut depth = 0;
        for index in open..self.tokens.len() {
            match self.text(index) {
                text if text == opening => depth += 1,
                text if text == closing && depth == 1 => return index,
                text if text == closing => depth -= 1,
                _ => {}
            }
        }
        self.tokens.len()
    }

    fn at_cfg_test(&self) -> bool {
        (0..7)
            .map(|k| self.peek(k))
            .eq(["#", "[", "cfg", "(", "test", ")", "]"])
    }

    /// Past `#[cfg(test)]`, and past the whole item if it is an inline `mod name { … }`.
    fn skip_cfg_test(&mut self) {
        self.pos += 7;
        let mut k = self.pos;
        while self.text(k) == "#" && self.text(k + 1) == "[" {
            k = self.matching(k + 1) + 1;
        }
        if self.text(k) == "pub" {
            k += 1;
            if self.text(k) == "(" {
                k = self.matching(k) + 1;
            }
        }
        if self.text(k) == "mod" && is_ident(self.text(k + 1)) && self.text(k + 2) == "{" {
            self.pos = self.matching(k + 2) + 1;
        }
    }

    /// The module that `self` names at `pos`: the file's, plus any inline modules.
    fn current_module(&self) -> ModulePath {
        let inline = self.inline_modules.iter().map(|(name, _)| name.clone());
        self.module.iter().cloned().chain(inline).collect()
    }

    /// `path` made absolute, if it names something in the crate. A path that starts with
    /// a plain name is relative to the current module only in a `use` (`relative`).
    fn absolute(&self, path: &[String], relative: bool) -> Option<ModulePath> {
        let in_macro = self.pos < self.macro_end;
        let first = path.first()?.as_str();
        let (mut base, mut rest) = match first {
            "crate" | "$crate" => (Vec::new(), &path[1..]),
            _ if in_macro => return None,
            "self" | "super" => (self.current_module(), path),
            "::" => return None, // an extern crate's path
            _ if relative => (self.current_module(), path),
            _ => return None,
        };
        while let Some(first) = rest.first() {
            match first.as_str() {
                "self" => {}
                "super" => {
                    base.pop()?;
                }
                _ => break,
            }
            rest = &rest[1..];
        }
        base.extend(rest.iter().cloned());
        Some(base)
    }

    /// `crate::a::b::X` (or `$crate::`, `self::`, `super::super::`) anywhere in code.
    fn inline_path(&mut self) {
        let line = self.tokens[self.pos].line;
        let mut path = vec![self.peek(0).to_string()];
        self.pos += 1;
        while self.peek(0) == "::" && is_ident(self.peek(1)) {
            path.push(self.peek(1).to_string());
            self.pos += 2;
        }
        if let Some(path) = self.absolute(&path, false) {
            self.references.push(Reference {
                line,
                path,
                reexport: None,
            });
        }
    }

    /// A `use` item at `pos`, its tree expanded into one reference per leaf.
    fn use_item(&mut self, public: bool) {
        self.pos += 1;
        // Not an item: the precise capturing `impl Trait + use<'a>`.
        if !(is_ident(self.peek(0)) || self.peek(0) == "::" || self.peek(0) == "{") {
            return;
        }
        let mut leaves = Vec::new();
        self.use_tree(Vec::new(), &mut leaves);
        for (path, name, line) in leaves {
            if let Some(path) = self.absolute(&path, true) {
                // A re-export from an inline module is not the file's: left out.
                let reexport = if public && self.inline_modules.is_empty() {
                    name
                } else {
                    None
                };
                self.references.push(Reference {
                    line,
                    path,
                    reexport,
                });
            }
        }
    }

    /// One use tree after `prefix`: `a::b`, `a::b as c`, `a::*`, `a::{tree, …}`. Each leaf
    /// is pushed as (path, name it brings into scope, line of its last segment).
    fn use_tree(
        &mut self,
        mut path: Vec<String>,
        leaves: &mut Vec<(Vec<String>, Option<String>, usize)>,
    ) {
        if path.is_empty() && self.peek(0) == "::" {
            path.push("::".to_string());
            self.pos += 1;
        }
        loop {
            let line = self.tokens.get(self.pos).map_or(0, |token| token.line);
            match self.peek(0) {
                "{" => {
                    self.pos += 1;
                    while self.peek(0) != "}" && self.pos < self.tokens.len() {
                        let before = self.pos;
                        self.use_tree(path.clone(), leaves);
                        if self.peek(0) == "," {
                            self.pos += 1;
                        } else if self.pos == before || self.peek(0) != "}" {
                            return;
                        }
                    }
                    self.pos += 1;
                    return;
                }
                "*" => {
                    self.pos += 1;
                    leaves.push((path, None, line));
                    return;
                }
                segment if is_ident(segment) => {
                    path.push(segment.to_string());
                    self.pos += 1;
                    if self.peek(0) == "::" {
                        self.pos += 1;
                        continue;
                    }
                    if path.last().is_some_and(|last| last == "self") {
                        path.pop(); // `a::{self}` is `a` itself
                    }
                    let mut name = path.last().cloned();
                    if self.peek(0) == "as" {
                        name = Some(self.peek(1).to_string());
                        self.pos += 2;
                    }
                    leaves.push((path, name, line));
                    return;
                }
                _ => return,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Unit tests of the scanner
// ---------------------------------------------------------------------------------------

/// The absolute paths `source` references, as `a::b@line` (`@line` only if `lines`).
fn scanned(source: &str, module: &[&str], lines: bool) -> Vec<String> {
    let module: ModulePath = module.iter().map(|part| part.to_string()).collect();
    let shown = |r: &Reference| {
        if lines {
            format!("{}@{}", r.path.join("::"), r.line)
        } else {
            r.path.join("::")
        }
    };
    scan(source, &module).iter().map(shown).collect()
}

#[test]
fn scanner_ignores_comments_and_literals() {
    let source = r####"
        // crate::line::Comment
        /* crate::block /* crate::nested */ crate::still_comment */
        /// crate::doc::Comment
        //! crate::inner::Doc
        const A: &str = "crate::string \" crate::escaped";
        const B: &str = r#"crate::raw "quoted" crate::still_raw"#;
        const C: &[u8] = br##"crate::raw_bytes "# crate::x"##;
        const D: &[u8] = b"crate::bytes";
        const E: char = '"'; const F: char = '\''; const G: u8 = b'{';
        fn f() { crate::real::Thing::new() }
    "####;
    assert_eq!(scanned(source, &["m"], true), ["real::Thing::new@11"]);
}

#[test]
fn scanner_does_not_take_lifetimes_for_char_literals() {
    let source = "fn f<'a>(x: &'a str) -> &'a str { crate::one::f(x) }\n\
                  fn g<'b>() -> impl Sized + use<'b> { 'outer: loop { break 'outer crate::two::g(); } }\n\
                  fn h(r#type: u8) -> char { let _ = r#type; crate::three::h(); 'x' }";
    assert_eq!(
        scanned(source, &["m"], true),
        ["one::f@1", "two::g@2", "three::h@3"]
    );
}

#[test]
fn scanner_expands_use_brace_groups() {
    let source = "use crate::a::{b, c::{d, e as f}, self, g::*};\nuse ::std::fmt;\nuse std::io;";
    assert_eq!(
        scanned(source, &["m"], false),
        ["a::b", "a::c::d", "a::c::e", "a", "a::g", "m::std::io"]
    );
    let references = scan("pub use child::{Name, Other as Alias};", &["m".to_string()]);
    let names: Vec<_> = references.iter().map(|r| r.reexport.as_deref()).collect();
    assert_eq!(names, [Some("Name"), Some("Alias")]);
}

#[test]
fn scanner_resolves_super_and_self() {
    let file = "use super::cache::Cache;\nuse super::{x, y::Z};\nfn f() { super::super::event::Event::new(); self::helper(); }";
    assert_eq!(
        scanned(file, &["runtime", "engine"], false),
        [
            "runtime::cache::Cache",
            "runtime::x",
            "runtime::y::Z",
            "event::Event::new",
            "runtime::engine::helper"
        ]
    );
    // In `runtime/mod.rs`, the module is `runtime`: `super` is the crate root.
    assert_eq!(
        scanned("use super::event::Event;", &["runtime"], false),
        ["event::Event"]
    );
    // Inside an inline module, `super` is the file's own module.
    assert_eq!(
        scanned(
            "mod inner { use super::X; }\nuse super::Y;",
            &["a", "b"],
            false
        ),
        ["a::b::X", "a::Y"]
    );
    // `self::`/`super::` in a macro body are relative to the invocation: skipped.
    let source = "macro_rules! m { () => { super::a::B; $crate::c::D; } }\nsuper::e::F;";
    assert_eq!(scanned(source, &["x", "y"], false), ["c::D", "x::e::F"]);
}

#[test]
fn scanner_skips_cfg_test_modules() {
    let source = "#[cfg(test)]\n#[allow(unused)]\nmod tests {\n    use crate::hidden::X;\n    fn f() { let _ = '}'; crate::hidden::y(); }\n}\nuse crate::after::Z;";
    assert_eq!(scanned(source, &["m"], true), ["after::Z@7"]);
}

#[test]
fn scanner_ignores_visibilities() {
    let source = "pub(crate) struct S;\npub(super) fn f() {}\npub(in crate::x) fn g() {}\npub(self) fn h() {}\n\
                  extern crate self as me;\npub(crate) use crate::a::B;";
    let references = scan(source, &["m".to_string()]);
    assert_eq!(references.len(), 1, "{references:?}");
    assert_eq!(
        (
            references[0].path.join("::"),
            references[0].reexport.as_deref()
        ),
        ("a::B".to_string(), Some("B"))
    );
}

#[test]
fn references_resolve_through_one_reexport() {
    let src = std::env::temp_dir().join(format!("architecture-test-{}", std::process::id()));
    let write = |path: &str, text: &str| {
        let path = src.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    };
    write("lib.rs", "pub mod a;\npub mod b;");
    write(
        "a/mod.rs",
        "mod inner;\npub use inner::Thing;\npub use self::inner::{Other};",
    );
    write("a/inner.rs", "pub struct Thing; pub struct Other;");
    write(
        "b.rs",
        "use crate::a::Thing;\nfn f() { crate::a::Other; crate::a::Missing; crate::a::inner::Thing; }",
    );
    let krate = Crate::load(&src, "src");
    fs::remove_dir_all(&src).unwrap();
    let b = krate
        .files
        .iter()
        .find(|file| file.display == "src/b.rs")
        .unwrap();
    let uses: Vec<String> = b
        .uses
        .iter()
        .map(|(line, target)| format!("{}@{line}", target.join("::")))
        .collect();
    assert_eq!(uses, ["a::inner@1", "a::inner@2", "a@2", "a::inner@2"]);
}
