#![no_main]
//! The SDK's JSON scanner (`sluice_sdk::json::RawObject`) against serde_json.
//!
//! The contract (docs/plugins.md): `RawObject::parse` checks the whole payload, so that
//! malformed JSON is rejected, and reads fields as serde_json would. So:
//! - the scanner accepts exactly the texts that serde_json accepts as JSON syntax (what
//!   it takes while skipping a value); both refuse nesting past their limits, which
//!   differ by one or two levels, so texts nested that deep are only run;
//! - for an object serde_json reads into a `Value`, every field (nested ones by dotted
//!   path, for keys without a dot) reads as the text of the same value, the object
//!   writes back as the same value, and `remove`, `rename` and `set` edit it as the
//!   same operations on the `Value` do. Texts serde_json only checks (a lone surrogate
//!   escape, a number past f64's range) have no `Value` to compare with.

use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};
use sluice_sdk::json::RawObject;

/// Nesting both parsers take (serde_json stops at 128 levels, the scanner past 128).
const SHALLOW: usize = 120;
/// How deep field reads are compared.
const PATH_DEPTH: usize = 4;

/// An upper bound on the nesting of `text`: brackets opened and not yet closed, outside
/// strings (as far as a scan that trusts the quotes and backslashes can tell).
fn nesting(text: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0, false, false);
    for byte in text.bytes() {
        match (in_string, byte) {
            (true, _) if escaped => escaped = false,
            (true, b'\\') => escaped = true,
            (true, b'"') => in_string = false,
            (true, _) => {}
            (false, b'"') => in_string = true,
            (false, b'[' | b'{') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (false, b']' | b'}') => depth = depth.saturating_sub(1),
            (false, _) => {}
        }
    }
    deepest
}

/// Every field of `object` (and of its objects, to [`PATH_DEPTH`]) reads as its value.
fn same_fields(raw: &RawObject<'_>, object: &Map<String, Value>, prefix: &str, depth: usize) {
    for (key, value) in object {
        if key.contains('.') {
            continue;
        }
        let path = format!("{prefix}{key}");
        let text = raw
            .get(&path)
            .unwrap_or_else(|| panic!("`{path}` is missing"));
        let read: Value = serde_json::from_str(&text)
            .unwrap_or_else(|error| panic!("`{path}` reads as {text:?}: {error}"));
        assert_eq!(&read, value, "`{path}`");
        if let Value::Object(inner) = value
            && depth < PATH_DEPTH
        {
            same_fields(raw, inner, &format!("{path}."), depth + 1);
        }
    }
}

/// `raw`, written out, parses as `expected`.
fn writes_as(raw: &RawObject<'_>, expected: &Map<String, Value>, what: &str) {
    let written = raw.to_string();
    let read: Value = serde_json::from_str(&written)
        .unwrap_or_else(|error| panic!("after {what}, {written:?}: {error}"));
    assert_eq!(read.as_object(), Some(expected), "after {what}: {written}");
}

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let scanned = RawObject::parse_document(text);
    if nesting(text) <= SHALLOW {
        let syntax = serde_json::from_str::<IgnoredAny>(text);
        assert_eq!(
            scanned.is_ok(),
            syntax.is_ok(),
            "scanner: {:?}, serde_json: {:?}",
            scanned.as_ref().err(),
            syntax.err()
        );
    }
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let mut raw = match scanned {
        Ok(Some(raw)) => raw,
        other => panic!("serde_json reads an object, the scanner {other:?}"),
    };
    same_fields(&raw, &object, "", 0);
    writes_as(&raw, &object, "parsing");

    // Edit the first plain key as serde_json's map would be edited.
    let Some(key) = object.keys().find(|key| !key.contains('.')).cloned() else {
        return;
    };
    let mut expected = object;
    let value = expected.remove(&key).expect("the key is there");
    // Its own text: serde_json's floats do not always survive a print and a parse.
    let text = raw.get(&key).expect("the key is there").into_owned();
    assert!(raw.remove(&key));
    assert!(raw.get(&key).is_none());
    writes_as(&raw, &expected, "remove");

    raw.set(&key, text).expect("a set at the top");
    expected.insert(key.clone(), value);
    writes_as(&raw, &expected, "set");

    assert!(raw.rename(&key, "renamed").expect("a rename at the top"));
    let value = expected.remove(&key).expect("the key is there");
    expected.insert("renamed".to_owned(), value);
    writes_as(&raw, &expected, "rename");
    same_fields(&raw, &expected, "", 0);
});
