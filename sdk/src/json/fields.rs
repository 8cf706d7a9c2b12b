//! [`top_level_fields`]: a few named members of a JSON object, read in the one pass
//! that checks it, for callers that read fields and edit nothing (a model's features).

use super::raw::escaped_key_is;
use super::scan::Scanner;
use crate::Error;

/// Check `text` as one JSON object, as [`RawObject::parse`](super::RawObject::parse)
/// does, and set `found[i]` to the JSON text of its member `names[i]` (the last one,
/// when a key repeats; `None` when it is absent). Names are member names, not dotted
/// paths.
///
/// Unlike `RawObject`, nothing is indexed: the members that are not asked for are
/// checked and passed over, so a scan allocates nothing, which is what a per-event read
/// of a few fields costs most in a Wasm guest otherwise.
///
/// ```
/// use sluice_sdk::json::top_level_fields;
/// let mut found = [None; 3];
/// top_level_fields(r#"{"t": 21.5, "id": "a", "v": [1]}"#, &["v", "t", "x"], &mut found).unwrap();
/// assert_eq!(found, [Some("[1]"), Some("21.5"), None]);
/// ```
pub fn top_level_fields<'a>(
    text: &'a str,
    names: &[impl AsRef<str>],
    found: &mut [Option<&'a str>],
) -> Result<(), Error> {
    assert_eq!(names.len(), found.len(), "one slot per name");
    found.fill(None);
    let mut scanner = Scanner::new(text);
    if scanner.next_byte() != Some(b'{') {
        return Err(Error::new("expected a JSON object"));
    }
    scanner.expect(b'{')?;
    if !scanner.eat(b'}') {
        loop {
            let (key, escaped) = scanner.string_and_escapes()?;
            scanner.expect(b':')?;
            let value = scanner.value()?;
            let name = &key[1..key.len() - 1];
            for (wanted, slot) in names.iter().zip(found.iter_mut()) {
                let wanted = wanted.as_ref();
                let matches = match escaped {
                    false => same_bytes(name.as_bytes(), wanted.as_bytes()),
                    true => escaped_key_is(key, wanted),
                };
                if matches {
                    *slot = Some(value);
                }
            }
            if scanner.eat(b'}') {
                break;
            }
            scanner.expect(b',')?;
        }
    }
    if !scanner.at_end() {
        return Err(scanner.error("trailing characters"));
    }
    Ok(())
}

/// `a == b` for short keys, in a loop: `==` on slices calls `memcmp`, which in a Wasm
/// guest is a call into the C library that costs more than comparing a key's few bytes.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::RawObject;

    /// Whatever the text, the fields agree with `RawObject`'s and so does the verdict.
    #[test]
    fn agrees_with_raw_object() {
        let names = ["t", "v", "q\"", "missing"];
        for text in [
            r#"{"t": 1, "v": {"x": [1, "é"]}, "t": 2}"#,
            r#"{"t\u0020": 1, "q\"": 3, "\u0074": -0.5e2}"#,
            r#" { } "#,
            r#"{"t": 1} x"#,
            r#"{"t": 1,}"#,
            r#"{"t": "\x"}"#,
            "[1, 2]",
            "7",
            "",
        ] {
            let mut found = [None; 4];
            let ours = top_level_fields(text, &names, &mut found);
            match RawObject::parse(text) {
                Ok(object) => {
                    ours.unwrap();
                    for (name, field) in names.iter().zip(found) {
                        assert_eq!(field, object.get(name).as_deref(), "{text} {name}");
                    }
                }
                Err(_) => assert!(ours.is_err(), "{text}"),
            }
        }
    }
}
