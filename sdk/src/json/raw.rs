//! [`RawObject`]: a JSON object kept as slices of its payload, read and edited without
//! building a document.

use std::borrow::Cow;

use super::scan::Scanner;
use crate::Error;

/// A JSON object as the slices of its text: each member's key and value as written.
/// Reading a field scans the members; an edit replaces one member's text, and
/// [`RawObject::write`] joins the untouched slices and the new text. Nested objects are
/// indexed only when a path goes into them.
///
/// ```
/// use sluice_sdk::json::RawObject;
/// let mut reading = RawObject::parse(r#"{"temp": 21.5, "unit": "C", "raw": [1, 2]}"#).unwrap();
/// assert_eq!(reading.get("temp").as_deref(), Some("21.5"));
/// reading.rename("temp", "temperature_c").unwrap();
/// reading.set("site.name", "\"plant-1\"").unwrap();
/// reading.remove("raw");
/// assert_eq!(
///     reading.to_string(),
///     r#"{"temperature_c":21.5,"unit":"C","site":{"name":"plant-1"}}"#
/// );
/// ```
#[derive(Debug, Clone, Default)]
pub struct RawObject<'a> {
    members: Vec<Member<'a>>,
}

#[derive(Debug, Clone)]
struct Member<'a> {
    /// The key as JSON text, quotes included.
    key: Cow<'a, str>,
    /// Whether `key` holds an escape: most keys do not, and comparing their text with a
    /// name is then enough.
    escaped: bool,
    value: Raw<'a>,
}

impl<'a> Member<'a> {
    fn new(name: &str, value: Raw<'a>) -> Self {
        let key = quote(name);
        Member {
            escaped: key.contains('\\'),
            key: Cow::Owned(key),
            value,
        }
    }

    /// Whether this member's key is `name`.
    #[inline]
    fn is(&self, name: &str) -> bool {
        if !self.escaped {
            let key = self.key.as_bytes();
            return key.len() == name.len() + 2 && &key[1..key.len() - 1] == name.as_bytes();
        }
        escaped_key_is(&self.key, name)
    }
}

#[derive(Debug, Clone)]
enum Raw<'a> {
    /// Text of the payload, untouched, or text that outlives it.
    Text(&'a str),
    /// New JSON text.
    Owned(String),
    /// An object a path went into.
    Object(RawObject<'a>),
}

impl<'a> RawObject<'a> {
    /// Check `text` as one JSON object and index its members.
    pub fn parse(text: &'a str) -> Result<RawObject<'a>, Error> {
        match RawObject::parse_document(text)? {
            Some(object) => Ok(object),
            None => Err(Error::new(format!(
                "expected a JSON object, found {}",
                kind(text.trim_start())
            ))),
        }
    }

    /// Check `text` as one JSON value: its members if it is an object, `None` if it is
    /// valid JSON of another kind.
    pub fn parse_document(text: &'a str) -> Result<Option<RawObject<'a>>, Error> {
        let mut scanner = Scanner::new(text);
        if scanner.next_byte() != Some(b'{') {
            scanner.value()?;
            return match scanner.at_end() {
                true => Ok(None),
                false => Err(scanner.error("trailing characters")),
            };
        }
        let object = RawObject::members(&mut scanner)?;
        if !scanner.at_end() {
            return Err(scanner.error("trailing characters"));
        }
        Ok(Some(object))
    }

    fn members(scanner: &mut Scanner<'a>) -> Result<RawObject<'a>, Error> {
        scanner.expect(b'{')?;
        let mut members = Vec::with_capacity(8);
        if !scanner.eat(b'}') {
            loop {
                let (key, escaped) = scanner.string_and_escapes()?;
                scanner.expect(b':')?;
                let value = scanner.value()?;
                members.push(Member {
                    key: Cow::Borrowed(key),
                    escaped,
                    value: Raw::Text(value),
                });
                if scanner.eat(b'}') {
                    break;
                }
                scanner.expect(b',')?;
            }
        }
        Ok(RawObject { members })
    }

    /// The JSON text of the value at the dotted `path`, if every step exists.
    pub fn get(&self, path: &str) -> Option<Cow<'_, str>> {
        let (step, rest) = split_first(path);
        let member = self.members.iter().rev().find(|m| m.is(step))?;
        match (rest, &member.value) {
            (None, Raw::Text(text)) => Some(Cow::Borrowed(text)),
            (None, Raw::Owned(text)) => Some(Cow::Borrowed(text)),
            (None, Raw::Object(object)) => Some(Cow::Owned(object.to_string())),
            (Some(rest), Raw::Object(object)) => object.get(rest),
            (Some(rest), Raw::Text(text)) => field_of(text, rest),
            // Text that `set` put here reads as the payload's own does.
            (Some(rest), Raw::Owned(text)) => field_of(text, rest),
        }
    }

    /// Remove the value at `path`; whether it was there.
    pub fn remove(&mut self, path: &str) -> bool {
        self.take(path).is_some()
    }

    /// Remove the value at `path` and return it.
    fn take(&mut self, path: &str) -> Option<Raw<'a>> {
        let (step, rest) = split_first(path);
        match rest {
            None => {
                let found = self.members.iter().rposition(|m| m.is(step))?;
                let removed = self.members.remove(found);
                // A duplicated key goes entirely, as a parser keeping the last would see it.
                self.members.retain(|m| !m.is(step));
                Some(removed.value)
            }
            Some(rest) => self.object_at(step, false).ok()??.take(rest),
        }
    }

    /// Set `path` to the JSON text `value` (which the caller vouches for: serialized by
    /// serde_json, or a value taken from another field), creating intermediate objects.
    /// An existing field keeps its place; a new one comes last. Text that outlives the
    /// payload (a plugin's configured value) is borrowed, not copied per event.
    pub fn set(&mut self, path: &str, value: impl Into<Cow<'a, str>>) -> Result<(), Error> {
        let value = match value.into() {
            Cow::Borrowed(text) => Raw::Text(text),
            Cow::Owned(text) => Raw::Owned(text),
        };
        self.insert(path, value)
    }

    fn insert(&mut self, path: &str, value: Raw<'a>) -> Result<(), Error> {
        let (step, rest) = split_first(path);
        match rest {
            None => {
                // An existing field keeps its place (and its key's text); a new one
                // comes last.
                match self.members.iter().rposition(|m| m.is(step)) {
                    Some(found) => {
                        self.members[found].value = value;
                        let mut index = 0;
                        self.members.retain(|m| {
                            index += 1;
                            index - 1 == found || !m.is(step)
                        });
                    }
                    None => self.members.push(Member::new(step, value)),
                }
                Ok(())
            }
            Some(rest) => match self.object_at(step, true) {
                Ok(Some(object)) => object.insert(rest, value),
                _ => Err(Error::new(format!(
                    "cannot set `{path}`: a parent is not an object"
                ))),
            },
        }
    }

    /// Move the value at `from` to `to`; false when `from` does not exist. A field
    /// renamed within one object keeps its place; one moved elsewhere comes last there.
    pub fn rename(&mut self, from: &str, to: &str) -> Result<bool, Error> {
        if dot(from).is_none() && dot(to).is_none() {
            let Some(found) = self.members.iter().rposition(|m| m.is(from)) else {
                return Ok(false);
            };
            let mut index = 0;
            self.members.retain(|m| {
                index += 1;
                index - 1 == found || !(m.is(from) || m.is(to))
            });
            let found = self
                .members
                .iter()
                .position(|m| m.is(from))
                .expect("the renamed member was kept");
            let value = std::mem::replace(&mut self.members[found].value, Raw::Text(""));
            self.members[found] = Member::new(to, value);
            return Ok(true);
        }
        match self.take(from) {
            Some(value) => self.insert(to, value).map(|()| true),
            None => Ok(false),
        }
    }

    /// The object member `step`, indexed for editing; created when `create` and
    /// missing. `Err` when the member is not an object.
    fn object_at(&mut self, step: &str, create: bool) -> Result<Option<&mut RawObject<'a>>, ()> {
        let found = self.members.iter().rposition(|m| m.is(step));
        let index = match found {
            Some(index) => index,
            None if create => {
                self.members
                    .push(Member::new(step, Raw::Object(RawObject::default())));
                self.members.len() - 1
            }
            None => return Ok(None),
        };
        let value = &mut self.members[index].value;
        if let Raw::Text(text) = value {
            if !text.starts_with('{') {
                return Err(());
            }
            *value = Raw::Object(RawObject::parse(text).map_err(|_| ())?);
        }
        if let Raw::Owned(text) = value {
            // New text was checked by whoever made it; index it in place.
            let owned = std::mem::take(text);
            let parsed = match RawObject::parse(&owned) {
                Ok(object) => object.into_owned(),
                Err(_) => {
                    *text = owned;
                    return Err(());
                }
            };
            *value = Raw::Object(parsed);
        }
        match value {
            Raw::Object(object) => Ok(Some(object)),
            _ => Err(()),
        }
    }

    /// The same object, owning all of its text.
    fn into_owned(self) -> RawObject<'static> {
        RawObject {
            members: self
                .members
                .into_iter()
                .map(|m| Member {
                    key: Cow::Owned(m.key.into_owned()),
                    escaped: m.escaped,
                    value: match m.value {
                        Raw::Text(text) => Raw::Owned(text.to_owned()),
                        Raw::Owned(text) => Raw::Owned(text),
                        Raw::Object(object) => Raw::Object(object.into_owned()),
                    },
                })
                .collect(),
        }
    }

    /// Append the object's JSON text (compact between members; untouched values as
    /// they were written) to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        for (i, member) in self.members.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(member.key.as_bytes());
            out.push(b':');
            match &member.value {
                Raw::Text(text) => out.extend_from_slice(text.as_bytes()),
                Raw::Owned(text) => out.extend_from_slice(text.as_bytes()),
                Raw::Object(object) => object.write(out),
            }
        }
        out.push(b'}');
    }
}

impl std::fmt::Display for RawObject<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = Vec::new();
        self.write(&mut out);
        f.write_str(&String::from_utf8_lossy(&out))
    }
}

/// The field at `path` of the object whose JSON text is `text`; `None` when `text` is
/// not an object's.
fn field_of(text: &str, path: &str) -> Option<Cow<'static, str>> {
    if !text.starts_with('{') {
        return None;
    }
    let inner = RawObject::parse(text).ok()?;
    inner.get(path).map(|field| Cow::Owned(field.into_owned()))
}

fn split_first(path: &str) -> (&str, Option<&str>) {
    match dot(path) {
        Some(at) => (&path[..at], Some(&path[at + 1..])),
        None => (path, None),
    }
}

/// The first `.` of a path. A plain loop: paths are short, and `str::find` goes through
/// a word-at-a-time `memchr` whose setup costs more than the scan in a Wasm guest.
fn dot(path: &str) -> Option<usize> {
    path.bytes().position(|byte| byte == b'.')
}

/// Whether the quoted JSON key `key`, which holds escapes, decodes to `name`. Out of line
/// (see `Scanner::error`): the common unescaped comparison stays small enough to inline.
#[cold]
#[inline(never)]
pub(super) fn escaped_key_is(key: &str, name: &str) -> bool {
    serde_json::from_str::<String>(key).is_ok_and(|key| key == name)
}

fn quote(name: &str) -> String {
    serde_json::to_string(name).expect("a string serializes")
}

/// The kind of JSON value `text` starts with, named as [`super::type_name`] names it.
fn kind(text: &str) -> &'static str {
    match text.as_bytes().first() {
        Some(b'[') => "array",
        Some(b'"') => "string",
        Some(b't' | b'f') => "boolean",
        Some(b'n') => "null",
        _ => "number",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn same_json(text: &str, expected: Value) {
        assert_eq!(
            serde_json::from_str::<Value>(text).unwrap(),
            expected,
            "{text}"
        );
    }

    #[test]
    fn reads_fields_without_touching_the_rest() {
        let text = r#" { "a" : {"b": [1, {"c": "x"}], "d": -1.5e3}, "e\u0041": "q\"" } "#;
        let object = RawObject::parse(text).unwrap();
        assert_eq!(object.get("a.d").as_deref(), Some("-1.5e3"));
        assert_eq!(object.get("a.b").as_deref(), Some(r#"[1, {"c": "x"}]"#));
        assert_eq!(object.get("eA").as_deref(), Some(r#""q\"""#));
        assert_eq!(object.get("a.b.c"), None);
        assert_eq!(object.get("missing"), None);
        same_json(&object.to_string(), serde_json::from_str(text).unwrap());
    }

    #[test]
    fn edits_splice_and_keep_untouched_bytes() {
        let mut object =
            RawObject::parse(r#"{"t": 21.50, "n": {"x": 1}, "drop": true, "s": "é"}"#).unwrap();
        assert!(object.rename("t", "temp.c").unwrap());
        assert!(!object.rename("nothing", "x").unwrap());
        object.set("n.y", "2").unwrap();
        object.remove("drop");
        assert!(object.remove("n.x"));
        assert!(!object.remove("n.x"));
        assert_eq!(
            object.to_string(),
            r#"{"n":{"y":2},"s":"é","temp":{"c":21.50}}"#
        );
        assert!(object.set("s.inner", "1").is_err());
        object.set("fresh", "\"v\"").unwrap();
        object.set("fresh.deeper", "1").unwrap_err();
    }

    #[test]
    fn escaped_keys_match_the_names_they_spell() {
        let mut object = RawObject::parse(r#"{"t\u0065mp": 1, "q\"": 2}"#).unwrap();
        assert_eq!(object.get("temp").as_deref(), Some("1"));
        assert!(object.rename("q\"", "new \"name\"").unwrap());
        assert_eq!(object.get("new \"name\"").as_deref(), Some("2"));
        object.set("temp", "3").unwrap();
        assert_eq!(object.to_string(), r#"{"t\u0065mp":3,"new \"name\"":2}"#);
    }

    #[test]
    fn an_object_set_as_new_text_is_read_by_path_like_the_payloads_own() {
        // Found by fuzzing (`sdk_json`): `get` went into the payload's objects and into
        // objects an edit had indexed, but not into one that `set` had put as new text.
        let mut object = RawObject::parse(r#"{"a": 1}"#).unwrap();
        let site = String::from(r#"{"name": "plant-1", "at": {"x": 2}}"#);
        object.set("site", site).unwrap();
        assert_eq!(object.get("site.name").as_deref(), Some(r#""plant-1""#));
        assert_eq!(object.get("site.at.x").as_deref(), Some("2"));
        assert!(object.rename("site", "place").unwrap());
        assert_eq!(object.get("place.at.x").as_deref(), Some("2"));
        object.set("plain", String::from("3")).unwrap();
        assert_eq!(object.get("plain.x"), None);
    }

    #[test]
    fn a_rename_within_an_object_keeps_the_place_and_replaces_the_target() {
        let mut object = RawObject::parse(r#"{"a": 1, "b": 2, "c": 3}"#).unwrap();
        assert!(object.rename("b", "c").unwrap());
        assert!(object.rename("a", "z").unwrap());
        assert_eq!(object.to_string(), r#"{"z":1,"c":2}"#);
    }

    #[test]
    fn duplicate_keys_read_as_the_last_and_go_together() {
        let mut object = RawObject::parse(r#"{"k": 1, "k": 2, "z": 0}"#).unwrap();
        assert_eq!(object.get("k").as_deref(), Some("2"));
        object.set("k", "3").unwrap();
        assert_eq!(object.to_string(), r#"{"k":3,"z":0}"#);
        object.remove("k");
        assert_eq!(object.to_string(), r#"{"z":0}"#);
    }

    #[test]
    fn invalid_json_is_refused_with_the_place() {
        for (text, message) in [
            (
                r#"{"a": 1,}"#,
                "invalid JSON: expected a string, found `}` at byte 8",
            ),
            (
                r#"{"a": 01}"#,
                "invalid JSON: expected `,`, found `1` at byte 7",
            ),
            (
                r#"{"a": "x"#,
                "invalid JSON: unterminated string, found the end",
            ),
            (
                r#"{"a": tru}"#,
                "invalid JSON: expected `true`, found `t` at byte 6",
            ),
            (
                r#"{"a": "\x"}"#,
                "invalid JSON: invalid escape, found `x` at byte 8",
            ),
            (
                r#"{"a": 1} x"#,
                "invalid JSON: trailing characters, found `x` at byte 9",
            ),
            ("[1, 2]", "expected a JSON object, found array"),
        ] {
            assert_eq!(
                RawObject::parse(text).unwrap_err().to_string(),
                message,
                "{text}"
            );
        }
        assert!(RawObject::parse_document("[1, 2]").unwrap().is_none());
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(
            RawObject::parse_document(&deep)
                .unwrap_err()
                .to_string()
                .contains("nesting")
        );
    }

    #[test]
    fn long_strings_are_checked_at_every_offset() {
        // A quote, a backslash or a control character must be seen wherever it falls,
        // also by a scanner that would skip plain bytes several at a time.
        for len in 0..24 {
            for at in 0..len {
                for special in ["\"", "\\n", "\\", "\u{1}", "\u{1f}", "é"] {
                    let mut text: String = "x".repeat(len);
                    text.replace_range(at..at + 1, special);
                    let payload = format!("{{\"k\":\"{text}\",\"n\":1}}");
                    let ours =
                        RawObject::parse(&payload).map(|o| o.get("k").map(|k| k.into_owned()));
                    let theirs = serde_json::from_str::<Value>(&payload);
                    assert_eq!(ours.is_ok(), theirs.is_ok(), "{payload:?}");
                    if let (Ok(Some(raw)), Ok(value)) = (ours, theirs) {
                        assert_eq!(
                            serde_json::from_str::<Value>(&raw).unwrap(),
                            value["k"],
                            "{payload:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn agrees_with_serde_json_on_what_is_json() {
        for text in [
            r#"{"a":1e}"#,
            r#"{"a":-}"#,
            r#"{"a":1.}"#,
            r#"{"a":"\u12"}"#,
            "{\"a\":\"\t\"}",
            r#"{"a" 1}"#,
            r#"{"a":[1 2]}"#,
            r#"{"a":{"b":1}"#,
            r#"{"a":nul}"#,
            r#"{"a":.5}"#,
            r#"{"a":+1}"#,
            r#"{"a":1}"#,
            r#"{"a":[]}"#,
            r#"{"a":{}}"#,
            r#"{"a":-0.0E+2}"#,
            r#"{"a":"\ud83d\ude00"}"#,
            r#"{}"#,
            r#"{"a":[{"b":[null,true,false]}]}"#,
        ] {
            assert_eq!(
                RawObject::parse(text).is_ok(),
                serde_json::from_str::<Value>(text).is_ok_and(|v| v.is_object()),
                "{text}"
            );
        }
    }
}
