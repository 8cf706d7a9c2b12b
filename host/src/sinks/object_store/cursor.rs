//! A strict JSON reader over a UTF-8 payload, for the scan ([`super::scan`]): it reads
//! values in place (where each string's contents and each number's text are) and leaves
//! what it does not read for sure to serde_json and arrow-json by returning none.

/// Nesting the scan follows (deeper: serde_json decides, as its own limit is 128).
const MAX_DEPTH: usize = 64;
/// A number longer than this is left to serde_json (which refuses one that overflows).
const MAX_NUMBER: usize = 300;

/// A JSON value the scan read, by where its text is.
#[derive(Clone, Copy)]
pub(super) enum Value {
    Null,
    Bool(bool),
    /// A string's contents (without quotes; it holds no escape).
    Text(usize, usize),
    Number {
        start: usize,
        end: usize,
        /// No fraction.
        integer: bool,
    },
    /// An array or an object.
    Nested,
}

/// A strict JSON reader over a UTF-8 payload. Its grammar is JSON's (RFC 8259), minus
/// what it leaves to serde_json by returning none: escapes, exponents, very long
/// numbers, deep nesting. So whatever it reads, serde_json reads the same way and
/// arrow-json's tape decoder, which is laxer, reads too.
pub(super) struct Cursor<'a> {
    bytes: &'a [u8],
    /// Where the next byte to read is.
    pub(super) at: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Cursor<'a> {
        Cursor { bytes, at: 0 }
    }

    pub(super) fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    pub(super) fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    pub(super) fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    pub(super) fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// A string without escapes or control characters: where its contents are.
    pub(super) fn string(&mut self) -> Option<(usize, usize)> {
        self.expect(b'"')?;
        let start = self.at;
        let length = self.bytes[start..]
            .iter()
            .position(|&byte| byte == b'"' || byte == b'\\' || byte < 0x20)?;
        self.at = start + length;
        self.expect(b'"')?;
        Some((start, start + length))
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.bytes[self.at..]
            .starts_with(word)
            .then(|| self.at += word.len())
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while self.peek().is_some_and(|byte| byte.is_ascii_digit()) {
            self.at += 1;
        }
        self.at - start
    }

    fn number(&mut self) -> Option<Value> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        let integer = self.peek() != Some(b'.');
        if !integer {
            self.at += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) || self.at - start > MAX_NUMBER {
            return None;
        }
        Some(Value::Number {
            start,
            end: self.at,
            integer,
        })
    }

    /// One value, arrays and objects read through.
    pub(super) fn value(&mut self, depth: usize) -> Option<Value> {
        match self.peek()? {
            b'"' => {
                let (start, end) = self.string()?;
                Some(Value::Text(start, end))
            }
            b't' => self.literal(b"true").map(|()| Value::Bool(true)),
            b'f' => self.literal(b"false").map(|()| Value::Bool(false)),
            b'n' => self.literal(b"null").map(|()| Value::Null),
            b'-' | b'0'..=b'9' => self.number(),
            open @ (b'[' | b'{') if depth < MAX_DEPTH => {
                self.at += 1;
                let close = if open == b'[' { b']' } else { b'}' };
                self.skip_whitespace();
                if self.peek() == Some(close) {
                    self.at += 1;
                    return Some(Value::Nested);
                }
                loop {
                    if open == b'{' {
                        self.string()?;
                        self.skip_whitespace();
                        self.expect(b':')?;
                        self.skip_whitespace();
                    }
                    self.value(depth + 1)?;
                    self.skip_whitespace();
                    match self.next()? {
                        b',' => self.skip_whitespace(),
                        byte if byte == close => return Some(Value::Nested),
                        _ => return None,
                    }
                }
            }
            _ => None,
        }
    }
}
