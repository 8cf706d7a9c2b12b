#![no_main]
//! A topic or key template (the input's first line) rendered against an event whose
//! payload is the rest. Parsing and rendering must not panic; the placeholders, put back
//! between braces, give the template's text again; and the fields that rendering reads
//! by scanning the payload agree with a full parse of it.

use libfuzzer_sys::fuzz_target;
use sluice::event::Event;
use sluice::template::Template;

/// What the MQTT sinks do to a field's text: it may not add a topic level.
fn one_level(text: &str) -> String {
    text.replace(['/', '+', '#'], "_")
}

fuzz_target!(|input: &[u8]| {
    let (template, payload) = match input.iter().position(|b| *b == b'\n') {
        Some(at) => (&input[..at], &input[at + 1..]),
        None => (input, &[][..]),
    };
    let Ok(template) = std::str::from_utf8(template) else {
        return;
    };
    let Ok(parsed) = Template::parse(template, "topic") else {
        return;
    };
    let mut parts = String::new();
    parsed.render_into(&mut parts, |name, out| {
        out.push('{');
        out.push_str(name);
        out.push('}');
    });
    assert_eq!(parts, template, "the parts are the text");

    let event = Event::new(payload.to_vec(), "fuzz");
    let rendered = parsed.render(&event, one_level);
    if parsed.is_constant() {
        assert_eq!(rendered, template);
    }
    // A payload serde_json reads whole renders the same from its parsed value; one it
    // does not (not JSON, or not an object) renders every field as missing.
    match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(value) if value.is_object() => {
            assert_eq!(rendered, parsed.render_fields(Some(&value), one_level));
        }
        Ok(_) => assert_eq!(rendered, parsed.render_fields(None, one_level)),
        // The scan skips unread fields without building them: it may take a payload
        // (a lone surrogate, a number past f64) that a full parse refuses.
        Err(_) => {}
    }
});
