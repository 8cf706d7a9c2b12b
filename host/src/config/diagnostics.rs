//! Config problems with their place in the file, rendered like a compiler's errors:
//! `file:line:column: message`, the line, a caret under the spot, and a hint.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use annotate_snippets::{AnnotationKind, Element, Level, Origin, Renderer, Snippet};

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

    /// Each problem as a compiler renders it, `error:` first, each followed by a blank
    /// line. Plain text (annotate-snippets without colours): it also goes to logs.
    pub fn report(&self) -> String {
        let file = self.file.display().to_string();
        let renderer = Renderer::plain();
        let mut report = String::new();
        for diagnostic in &self.diagnostics {
            let title = Level::ERROR.primary_title(diagnostic.message.as_str());
            let place: Element<'_> = match &diagnostic.span {
                Some(span) => Snippet::source(self.text.as_str())
                    .path(file.as_str())
                    .annotation(AnnotationKind::Primary.span(self.underline(span)))
                    .into(),
                None => Origin::path(file.as_str()).into(),
            };
            let mut group = title.element(place);
            if let Some(hint) = &diagnostic.hint {
                group = group.element(Level::HELP.message(hint.as_str()));
            }
            report.push_str(&renderer.render(&[group]));
            report.push_str("\n\n");
        }
        report
    }

    /// One line per problem, `file:line:column: message (hint)`: for logs that keep
    /// lines, not pages.
    pub fn lines(&self) -> Vec<String> {
        let file = self.file.display();
        self.diagnostics
            .iter()
            .map(|diagnostic| {
                let place = match &diagnostic.span {
                    Some(span) => {
                        let (line, column) = self.line_column(span.start);
                        format!("{file}:{line}:{column}")
                    }
                    None => file.to_string(),
                };
                match &diagnostic.hint {
                    Some(hint) => format!("{place}: {} ({hint})", diagnostic.message),
                    None => format!("{place}: {}", diagnostic.message),
                }
            })
            .collect()
    }

    /// What to underline for `span`: its first line only (a whole table would
    /// underline pages), and at least one character so that the caret shows.
    fn underline(&self, span: &Range<usize>) -> Range<usize> {
        let start = span.start.min(self.text.len());
        let end = span.end.clamp(start, self.text.len());
        let end = self.text[start..end].find('\n').map_or(end, |n| start + n);
        if end > start {
            return start..end;
        }
        let next = self.text[start..].chars().next().map_or(0, char::len_utf8);
        start..start + next
    }
}

impl fmt::Display for ConfigErrors {
    /// The [report](ConfigErrors::report), then the count.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{} problem(s) in {}",
            self.report(),
            self.diagnostics.len(),
            self.file.display()
        )
    }
}

impl std::error::Error for ConfigErrors {}

/// The closest of `candidates` to `wanted`, if it is close enough to be a typo: at
/// most a third of the candidate's length in edits (Levenshtein), and at least one.
pub fn did_you_mean<'a>(
    wanted: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| (strsim::levenshtein(wanted, candidate), candidate))
        .filter(|(distance, candidate)| *distance <= (candidate.len() / 3).max(1))
        .min()
        .map(|(_, candidate)| candidate)
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
    fn renders_file_line_column_the_line_a_caret_and_the_hint() {
        let errors = ConfigErrors {
            file: "p.toml".into(),
            text: "[a]\nkey = 1\n".into(),
            diagnostics: vec![Diagnostic::new(Some(4..7), "bad key").with_hint("remove it")],
        };
        assert_eq!(
            errors.to_string(),
            "error: bad key\n --> p.toml:2:1\n  |\n2 | key = 1\n  | ^^^\n  |\n  = help: remove it\n\n1 problem(s) in p.toml"
        );
    }

    #[test]
    fn a_span_over_several_lines_underlines_its_first_line() {
        let errors = ConfigErrors {
            file: "p.toml".into(),
            text: "[a]\nkey = 1\n".into(),
            diagnostics: vec![Diagnostic::new(Some(0..12), "table")],
        };
        assert!(
            errors.to_string().contains("1 | [a]\n  | ^^^\n"),
            "{errors}"
        );
    }

    #[test]
    fn an_empty_span_still_shows_a_caret_and_one_without_a_place_names_the_file() {
        let errors = ConfigErrors {
            file: "p.toml".into(),
            text: "x = [".into(),
            diagnostics: vec![
                Diagnostic::new(Some(5..5), "unexpected end"),
                Diagnostic::new(None, "cannot read the config"),
            ],
        };
        let shown = errors.to_string();
        assert!(shown.contains(" --> p.toml:1:6\n"), "{shown}");
        assert!(shown.contains("1 | x = [\n  |      ^"), "{shown}");
        assert!(
            shown.contains("error: cannot read the config\n--> p.toml\n"),
            "{shown}"
        );
        assert!(shown.ends_with("2 problem(s) in p.toml"), "{shown}");
    }
}
