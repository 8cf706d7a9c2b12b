//! A JSON checker over bytes that allocates nothing: it returns the span of each value
//! it passes, so callers keep slices of the payload instead of a document.

use crate::Error;

/// Nesting deeper than this is refused rather than risking the guest's stack.
const MAX_DEPTH: usize = 128;

pub(super) struct Scanner<'a> {
    text: &'a str,
    pos: usize,
}

// The small steps below are marked `#[inline]`: they run a few times per member, and
// a call between them is not free in a Wasm guest (Cranelift sets up a whole frame on
// entry, and a `Result` comes back through memory).
impl<'a> Scanner<'a> {
    pub fn new(text: &'a str) -> Self {
        Scanner { text, pos: 0 }
    }

    #[inline]
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.pos).copied()
    }

    // Errors are built out of line: Cranelift, which compiles the plugin, sets up a
    // function's whole frame on entry, so a cold path's formatting left inline would be
    // paid on every call of the hot one.
    #[cold]
    #[inline(never)]
    pub fn error(&self, what: &str) -> Error {
        match self.peek() {
            Some(found) => Error::new(format!(
                "invalid JSON: {what}, found `{}` at byte {}",
                found.escape_ascii(),
                self.pos
            )),
            None => Error::new(format!("invalid JSON: {what}, found the end")),
        }
    }

    #[inline]
    pub fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.pos += 1;
        }
    }

    /// Consume `byte` (after whitespace) or fail.
    #[inline]
    pub fn expect(&mut self, byte: u8) -> Result<(), Error> {
        self.skip_whitespace();
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.expected(byte))
        }
    }

    #[cold]
    #[inline(never)]
    fn expected(&self, byte: u8) -> Error {
        self.error(&format!("expected `{}`", byte as char))
    }

    /// Consume `byte` (after whitespace) if it is next.
    #[inline]
    pub fn eat(&mut self, byte: u8) -> bool {
        self.skip_whitespace();
        let next = self.peek() == Some(byte);
        if next {
            self.pos += 1;
        }
        next
    }

    #[inline]
    pub fn at_end(&mut self) -> bool {
        self.skip_whitespace();
        self.pos == self.text.len()
    }

    /// The next byte after whitespace, unconsumed.
    #[inline]
    pub fn next_byte(&mut self) -> Option<u8> {
        self.skip_whitespace();
        self.peek()
    }

    /// A string, quotes included.
    pub fn string(&mut self) -> Result<&'a str, Error> {
        self.string_and_escapes().map(|(text, _)| text)
    }

    /// A string, quotes included, and whether it holds an escape (so that comparing
    /// its text with a name is enough when it does not).
    pub fn string_and_escapes(&mut self) -> Result<(&'a str, bool), Error> {
        self.skip_whitespace();
        let start = self.pos;
        if self.peek() != Some(b'"') {
            return Err(self.error("expected a string"));
        }
        self.pos += 1;
        let bytes = self.bytes();
        let mut escaped = false;
        loop {
            // The run of plain bytes, the common case, counted in a local: a Wasm guest
            // would otherwise store the position to memory on every byte.
            let mut pos = self.pos;
            while let Some(&byte) = bytes.get(pos) {
                if byte == b'"' || byte == b'\\' || byte < 0x20 {
                    break;
                }
                pos += 1;
            }
            self.pos = pos;
            let Some(&byte) = bytes.get(self.pos) else {
                return Err(self.error("unterminated string"));
            };
            self.pos += 1;
            match byte {
                b'"' => return Ok((&self.text[start..self.pos], escaped)),
                b'\\' => match self.peek() {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                        self.pos += 1;
                        escaped = true;
                    }
                    Some(b'u') => {
                        let hex = self.bytes().get(self.pos + 1..self.pos + 5);
                        if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                            return Err(self.error("a \\u escape needs four hex digits"));
                        }
                        self.pos += 5;
                        escaped = true;
                    }
                    _ => return Err(self.error("invalid escape")),
                },
                0..=0x1f => {
                    self.pos -= 1;
                    return Err(self.error("a control character inside a string"));
                }
                _ => {}
            }
        }
    }

    /// Any value; its text.
    #[inline]
    pub fn value(&mut self) -> Result<&'a str, Error> {
        self.value_at(0)
    }

    /// A value at nesting `depth`. Scalars, most of a telemetry payload's values, are
    /// read here, inlined into the caller's loop; objects and arrays out of line.
    #[inline]
    fn value_at(&mut self, depth: usize) -> Result<&'a str, Error> {
        self.skip_whitespace();
        let start = self.pos;
        match self.peek() {
            Some(b'"') => {
                self.string()?;
            }
            Some(b'-' | b'0'..=b'9') => self.number()?,
            Some(b'{' | b'[') => self.container(depth)?,
            Some(b't') => self.literal("true")?,
            Some(b'f') => self.literal("false")?,
            Some(b'n') => self.literal("null")?,
            _ => return Err(self.error("expected a value")),
        }
        Ok(&self.text[start..self.pos])
    }

    /// The object or array that starts here, at nesting `depth`.
    #[inline(never)]
    fn container(&mut self, depth: usize) -> Result<(), Error> {
        self.nested(depth)?;
        if self.peek() == Some(b'{') {
            self.pos += 1;
            if !self.eat(b'}') {
                loop {
                    self.string()?;
                    self.expect(b':')?;
                    self.value_at(depth + 1)?;
                    if self.eat(b'}') {
                        break;
                    }
                    self.expect(b',')?;
                }
            }
        } else {
            self.pos += 1;
            if !self.eat(b']') {
                loop {
                    self.value_at(depth + 1)?;
                    if self.eat(b']') {
                        break;
                    }
                    self.expect(b',')?;
                }
            }
        }
        Ok(())
    }

    fn nested(&self, depth: usize) -> Result<(), Error> {
        if depth >= MAX_DEPTH {
            return Err(self.too_deep());
        }
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn too_deep(&self) -> Error {
        self.error(&format!("nesting deeper than {MAX_DEPTH}"))
    }

    fn literal(&mut self, word: &str) -> Result<(), Error> {
        if self.text[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.expected_word(word))
        }
    }

    #[cold]
    #[inline(never)]
    fn expected_word(&self, word: &str) -> Error {
        self.error(&format!("expected `{word}`"))
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Result<(), Error> {
        let digits = |scanner: &mut Scanner| {
            let start = scanner.pos;
            while matches!(scanner.peek(), Some(b'0'..=b'9')) {
                scanner.pos += 1;
            }
            scanner.pos > start
        };
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        if self.peek() == Some(b'0') {
            self.pos += 1;
        } else if !digits(self) {
            return Err(self.error("expected a digit"));
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !digits(self) {
                return Err(self.error("expected a digit after `.`"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if !digits(self) {
                return Err(self.error("expected a digit in the exponent"));
            }
        }
        Ok(())
    }
}
