//! Config problems with their place in the file, rendered like a compiler's errors:
//! `file:line:column: message`, the line, a caret under the spot, and a hint.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// Byte range in the file, when the problem has a place.
    pub span: Option<Range<usize>>,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(span: Option<Range<usize>>, message: impl Into<String>) -> Self {
        Diagnostic {
            span,
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Every problem found in one config file. A config with any problem never starts.
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub text: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl ConfigErrors {
    /// 1-based line and column (in characters) of byte `offset`.
    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[line_start..].chars().count() + 1)
    }

    /// Where each diagnostic points, as (line, column), for tests and tools.
    pub fn positions(&self) -> Vec<Option<(usize, usize)>> {
        self.diagnostics
            .iter()
            .map(|d| d.span.as_ref().map(|s| self.line_column(s.start)))
            .collect()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, diagnostic) in self.diagnostics.iter().enumerate() {
            if n > 0 {
                writeln!(f)?;
            }
            let Some(span) = &diagnostic.span else {
                writeln!(f, "{}: error: {}", self.file.display(), diagnostic.message)?;
                if let Some(hint) = &diagnostic.hint {
                    writeln!(f, "  = hint: {hint}")?;
                }
                continue;
            };
            let (line, column) = self.line_column(span.start);
            writeln!(
                f,
                "{}:{line}:{column}: error: {}",
                self.file.display(),
                diagnostic.message
            )?;
            let text = self.text.lines().nth(line - 1).unwrap_or("");
            let width = self.text[span.clone()]
                .lines()
                .next()
                .map_or(1, |l| l.chars().count().max(1));
            let width = width.min(text.chars().count().saturating_sub(column - 1).max(1));
            writeln!(f, "{line:>5} | {text}")?;
            writeln!(f, "      | {}{}", " ".repeat(column - 1), "^".repeat(width))?;
            if let Some(hint) = &diagnostic.hint {
                writeln!(f, "  = hint: {hint}")?;
            }
        }
        write!(
            f,
            "{} problem(s) in {}",
            self.diagnostics.len(),
            self.file.display()
        )
    }
}

impl std::error::Error for ConfigErrors {}

/// The closest of `candidates` to `wanted`, if it is close enough to be a typo.
pub fn did_you_mean<'a>(
    wanted: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| (edit_distance(wanted, candidate), candidate))
        .filter(|(distance, candidate)| *distance <= (candidate.len() / 3).max(1))
        .min()
        .map(|(_, candidate)| candidate)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(did_you_mean("fitler", ["filter", "map"]), Some("filter"));
        assert_eq!(did_you_mean("zzz", ["filter", "map"]), None);
    }

    #[test]
    fn renders_file_line_column_and_caret() {
        let errors = ConfigErrors {
            file: "p.toml".into(),
            text: "[a]\nkey = 1\n".into(),
            diagnostics: vec![Diagnostic::new(Some(4..7), "bad key").with_hint("remove it")],
        };
        assert_eq!(
            errors.to_string(),
            "p.toml:2:1: error: bad key\n    2 | key = 1\n      | ^^^\n  = hint: remove it\n1 problem(s) in p.toml"
        );
    }
}
