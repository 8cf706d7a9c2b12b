#![no_main]
//! An HTTP ingest body through `split_payloads`, which turns it into events: a JSON
//! array gives one event per element, anything else is NDJSON, one event per non-blank
//! line. It must not panic; a body it accepts gives only whole JSON values, cut from the
//! body itself, one per element or per line.

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;
use sluice::sources::http::split_payloads;

fuzz_target!(|input: &[u8]| {
    let body = Bytes::copy_from_slice(input);
    let Ok(payloads) = split_payloads(&body) else {
        return;
    };
    let range = body.as_ptr_range();
    for payload in &payloads {
        assert!(serde_json::from_slice::<IgnoredAny>(payload).is_ok(), "{payload:?}");
        assert_eq!(payload.trim_ascii().len(), payload.len(), "{payload:?}");
        let within = payload.as_ptr_range();
        assert!(range.start <= within.start && within.end <= range.end, "a copy");
    }
    if body.trim_ascii_start().first() == Some(&b'[') {
        let elements = serde_json::from_slice::<Vec<IgnoredAny>>(&body).expect("an array");
        assert_eq!(payloads.len(), elements.len());
    } else {
        let lines = body
            .split(|b| *b == b'\n')
            .filter(|line| !line.trim_ascii().is_empty())
            .count();
        assert_eq!(payloads.len(), lines);
    }
});
