//! `${VAR}` interpolation of environment variables, so that secrets stay out of the file.
//! `${VAR:-default}` falls back; `$$` is a literal `$` (so `$${VAR}` is the text `${VAR}`).
//!
//! Substitution happens only inside string values of the **parsed** document, never in
//! its text: a variable's value is data, not TOML. A secret holding a quote, a newline
//! or `[plugins.evil]` therefore stays one string and can never add a stage, a key or a
//! grant. Keys are not interpolated, a value is not scanned again (a variable holding
//! `${OTHER}` yields those characters), and a reference outside a string (`port =
//! ${PORT}`) is a TOML syntax error: variables always produce strings.

use std::borrow::Cow;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::diagnostics::Diagnostic;

/// What interpolating a document found wrong.
#[derive(Default)]
pub struct Interpolation {
    /// One per failed reference, in the order of the file.
    pub diagnostics: Vec<Diagnostic>,
    /// The string values holding a failed reference.
    broken: Vec<Range<usize>>,
}

impl Interpolation {
    /// Whether `diagnostic` is about a value whose reference failed: it then follows
    /// from that failure (`"127.0.0.1:${PORT}"` without PORT is no address either) and
    /// would only repeat it.
    pub fn explains(&self, diagnostic: &Diagnostic) -> bool {
        diagnostic.span.as_ref().is_some_and(|span| {
            self.broken
                .iter()
                .any(|value| value.start <= span.start && span.end <= value.end)
        })
    }
}

/// Substitute the variables of every string value under `root` from `lookup`, in place.
/// `source` is the text `root` was parsed from: problems point into it. An unset
/// variable without a default is an error, and its reference becomes empty.
pub fn interpolate(
    root: &mut Spanned<DeTable<'_>>,
    source: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Interpolation {
    let mut found = Interpolation::default();
    for (_, value) in root.get_mut().iter_mut() {
        walk(value, source, lookup, &mut found);
    }
    // Tables iterate in key order; report in the order of the file.
    found
        .diagnostics
        .sort_by_key(|d| d.span.as_ref().map(|s| s.start));
    found
}

fn walk(
    value: &mut Spanned<DeValue<'_>>,
    source: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    found: &mut Interpolation,
) {
    let span = value.span();
    match value.get_mut() {
        DeValue::String(text) if text.contains('$') => {
            let (expanded, problems) = expand(text, lookup);
            let raw = source.get(span.clone()).unwrap_or_default();
            if !problems.is_empty() {
                found.broken.push(span.clone());
            }
            found
                .diagnostics
                .extend(problems.into_iter().map(|problem| {
                    let at = locate(raw, text, &problem.reference)
                        .map_or(span.clone(), |r| span.start + r.start..span.start + r.end);
                    Diagnostic {
                        span: Some(at),
                        ..problem.diagnostic
                    }
                }));
            *text = Cow::Owned(expanded);
        }
        DeValue::Array(items) => {
            for item in items.iter_mut() {
                walk(item, source, lookup, found);
            }
        }
        DeValue::Table(table) => {
            for (_, item) in table.iter_mut() {
                walk(item, source, lookup, found);
            }
        }
        _ => {}
    }
}

/// A problem with one reference, placed within the string value (not yet the file).
struct Problem {
    reference: Range<usize>,
    diagnostic: Diagnostic,
}

/// The string with its references replaced, and the references that failed.
fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> (String, Vec<Problem>) {
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let at = text.len() - rest.len() + dollar;
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(close) = body.find('}') else {
            problems.push(Problem {
                reference: at..at + 2,
                diagnostic: Diagnostic::new(None, "unterminated `${`")
                    .with_hint("write `${NAME}`, or `$$` for a literal `$`"),
            });
            return (out, problems);
        };
        let inner = &body[..close];
        let reference = at..at + close + 3;
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            problems.push(Problem {
                reference,
                diagnostic: Diagnostic::new(
                    None,
                    format!("`${{{inner}}}` is not a valid variable reference"),
                )
                .with_hint("variable names are letters, digits and `_`"),
            });
        } else {
            match (lookup(name), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => problems.push(Problem {
                    reference,
                    diagnostic: Diagnostic::new(
                        None,
                        format!("environment variable `{name}` is not set"),
                    )
                    .with_hint(format!(
                        "set {name}, or give a default: `${{{name}:-value}}`"
                    )),
                }),
            }
        }
        rest = &body[close + 1..];
    }
    out.push_str(rest);
    (out, problems)
}

/// Where `reference` (a range of the decoded string `text`) is written in `raw`, the
/// string's source token. The n-th occurrence of the same reference text in `text` is
/// the n-th in `raw`; `None` when escapes hide it (`"\u0024{X}"`), and the caller then
/// points at the whole string.
fn locate(raw: &str, text: &str, reference: &Range<usize>) -> Option<Range<usize>> {
    let needle = &text[reference.clone()];
    let nth = text[..reference.start].match_indices(needle).count();
    let (start, _) = raw.match_indices(needle).nth(nth)?;
    Some(start..start + needle.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cr3t-value".to_owned()),
            "NESTED" => Some("${TOKEN}".to_owned()),
            _ => None,
        }
    }

    fn expanded(text: &str) -> String {
        let (out, problems) = expand(text, &env);
        assert!(problems.is_empty());
        out
    }

    #[test]
    fn substitutes_defaults_and_escapes() {
        assert_eq!(expanded("a ${TOKEN} b"), "a s3cr3t-value b");
        assert_eq!(expanded("${MISSING:-x}"), "x");
        assert_eq!(expanded("${MISSING:-}"), "");
        assert_eq!(expanded("$$5 and $${TOKEN}"), "$5 and ${TOKEN}");
        assert_eq!(expanded("cost: $5, $"), "cost: $5, $");
        assert_eq!(expanded("é${TOKEN}ü"), "és3cr3t-valueü");
    }

    #[test]
    fn a_value_is_not_expanded_again() {
        assert_eq!(expanded("${NESTED}"), "${TOKEN}");
    }

    #[test]
    fn problems_name_the_reference_within_the_string() {
        let (out, problems) = expand("x${NOPE}y${bad name}z${", &env);
        assert_eq!(out, "xyz");
        let found: Vec<(Range<usize>, &str)> = problems
            .iter()
            .map(|p| (p.reference.clone(), p.diagnostic.message.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (1..8, "environment variable `NOPE` is not set"),
                (9..20, "`${bad name}` is not a valid variable reference"),
                (21..23, "unterminated `${`"),
            ]
        );
    }

    #[test]
    fn an_unset_variable_is_an_error_at_its_place_in_the_file() {
        let source = "[a]\nx = \"ok ${TOKEN} ${NOPE}\"\ny = ['${NOPE}']\n";
        let mut root = DeTable::parse(source).unwrap();
        let errors = interpolate(&mut root, source, &env).diagnostics;
        let spans: Vec<&str> = errors
            .iter()
            .map(|e| &source[e.span.clone().unwrap()])
            .collect();
        assert_eq!(spans, ["${NOPE}", "${NOPE}"]);
        assert_eq!(
            errors[0].span.as_ref().unwrap().start,
            source.find("${NOPE}").unwrap()
        );
        assert_eq!(
            errors[1].span.as_ref().unwrap().start,
            source.rfind("${NOPE}").unwrap()
        );
    }

    #[test]
    fn a_reference_hidden_by_an_escape_points_at_the_whole_string() {
        let source = "x = \"\\u0024{NOPE}\"";
        let mut root = DeTable::parse(source).unwrap();
        let errors = interpolate(&mut root, source, &env).diagnostics;
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].span, Some(4..source.len()));
    }

    #[test]
    fn keys_are_not_interpolated() {
        let source = "\"${TOKEN}\" = \"${TOKEN}\"";
        let mut root = DeTable::parse(source).unwrap();
        assert!(interpolate(&mut root, source, &env).diagnostics.is_empty());
        let (key, value) = root.get_ref().iter().next().unwrap();
        assert_eq!(key.get_ref(), "${TOKEN}");
        assert!(matches!(value.get_ref(), DeValue::String(s) if s == "s3cr3t-value"));
    }
}
