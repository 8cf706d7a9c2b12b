//! `${VAR}` interpolation of environment variables into the config text, so that
//! secrets stay out of the file. `${VAR:-default}` falls back; `$$` is a literal `$`.
//! Positions in the interpolated text map back to the original file for diagnostics.

use std::ops::Range;

use super::diagnostics::Diagnostic;

/// The interpolated text and the edits that produced it.
pub struct Interpolated {
    pub text: String,
    /// (range in the original, length of its replacement), in order.
    edits: Vec<(Range<usize>, usize)>,
}

impl Interpolated {
    /// Map a byte offset in the interpolated text back to the original file.
    pub fn original_offset(&self, offset: usize) -> usize {
        let mut shift: isize = 0;
        for (range, replacement) in &self.edits {
            let new_start = (range.start as isize + shift) as usize;
            if offset < new_start {
                break;
            }
            if offset < new_start + replacement {
                return range.start;
            }
            shift += *replacement as isize - range.len() as isize;
        }
        (offset as isize - shift) as usize
    }

    pub fn original_span(&self, span: Range<usize>) -> Range<usize> {
        let start = self.original_offset(span.start);
        start..self.original_offset(span.end).max(start)
    }
}

/// Substitute variables from `lookup`; unset variables without a default are errors.
pub fn interpolate(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> (Interpolated, Vec<Diagnostic>) {
    let mut out = String::with_capacity(text.len());
    let mut edits = Vec::new();
    let mut errors = Vec::new();
    let mut rest = 0;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'$') {
            out.push_str(&text[rest..i]);
            out.push('$');
            edits.push((i..i + 2, 1));
            i += 2;
            rest = i;
            continue;
        }
        if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'{') {
            let Some(close) = text[i..].find('}').map(|c| i + c) else {
                errors.push(
                    Diagnostic::new(Some(i..i + 2), "unterminated `${`")
                        .with_hint("write `${NAME}`, or `$$` for a literal `$`"),
                );
                break;
            };
            let inner = &text[i + 2..close];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            let value = if name.is_empty()
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                errors.push(
                    Diagnostic::new(
                        Some(i..close + 1),
                        format!("`${{{inner}}}` is not a valid variable reference"),
                    )
                    .with_hint("variable names are letters, digits and `_`"),
                );
                String::new()
            } else {
                match (lookup(name), default) {
                    (Some(value), _) => value,
                    (None, Some(default)) => default.to_owned(),
                    (None, None) => {
                        errors.push(
                            Diagnostic::new(
                                Some(i..close + 1),
                                format!("environment variable `{name}` is not set"),
                            )
                            .with_hint(format!(
                                "set {name}, or give a default: `${{{name}:-value}}`"
                            )),
                        );
                        String::new()
                    }
                }
            };
            out.push_str(&text[rest..i]);
            out.push_str(&value);
            edits.push((i..close + 1, value.len()));
            i = close + 1;
            rest = i;
            continue;
        }
        i += 1;
    }
    out.push_str(&text[rest..]);
    (Interpolated { text: out, edits }, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "TOKEN").then(|| "s3cr3t-value".to_owned())
    }

    #[test]
    fn substitutes_defaults_and_escapes() {
        let (done, errors) = interpolate("a = \"${TOKEN}\"\nb = \"${MISSING:-x}\" # $$5", env);
        assert!(errors.is_empty());
        assert_eq!(done.text, "a = \"s3cr3t-value\"\nb = \"x\" # $5");
        // `b` sits after a longer replacement: its offset maps back to the original.
        let b_new = done.text.find('b').unwrap();
        assert_eq!(done.original_offset(b_new), "a = \"${TOKEN}\"\n".len());
    }

    #[test]
    fn an_unset_variable_is_an_error_at_its_place() {
        let (_, errors) = interpolate("x = \"${NOPE}\"", env);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].span, Some(5..12));
        assert_eq!(errors[0].message, "environment variable `NOPE` is not set");
    }
}
