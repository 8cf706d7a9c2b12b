#![no_main]
//! A plugin's output, shaped as any guest could shape it, through what the host does with
//! it: `check_size` against the stage's limits, then `decode_output`. The output starts
//! as an identity plugin's answer to a batch of realistic events (the input's lines up to
//! a 0xFF byte, one event each) and is then tampered with as the bytes after it say.
//!
//! Neither step may panic. An output that passes both keeps within the limits, names
//! only inputs of its batch and routes it declared, rejects an input at most once with
//! a bounded reason, and encodes and decodes back to the same events.

use std::collections::HashSet;
use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice::event::Event;
use sluice::runtime::Limits;
use sluice::runtime::fuzzing::{
    self as wit, MAX_REASON_BYTES, check_size, decode_output, encode_batch,
};

#[derive(Arbitrary, Debug)]
struct Plan {
    /// The size of the batch the output answers: the events' count when `None`, 0 for a
    /// collector.
    inputs: Option<u8>,
    /// Small limits, so that the checks are crossed; the defaults when `None`.
    limits: Option<SmallLimits>,
    tampering: Vec<Tamper>,
}

#[derive(Arbitrary, Debug)]
struct SmallLimits {
    outputs_per_call: u8,
    output_bytes_per_call: u16,
    headers_per_event: u8,
    header_bytes_per_call: u16,
}

/// One change to the output; `event` and `index` pick an existing entry (modulo).
#[derive(Arbitrary, Debug)]
enum Tamper {
    Payload { event: u8, span: SpanChoice },
    Key { event: u8, span: Option<SpanChoice> },
    Origin { event: u8, span: SpanChoice },
    HeaderRange { event: u8, first: u32, count: u32 },
    Header { index: u8, name: SpanChoice, value: SpanChoice },
    Input { event: u8, input: u32 },
    Route { event: u8, route: Option<u32> },
    Repeat { event: u8, times: u8 },
    Remove { event: u8 },
    AddRoute(String),
    Reject { input: u32, reason: String },
    /// A reason of `repeat` copies of `text`: past the decoder's cut when long enough.
    LongReject { input: u8, text: String, repeat: u8 },
    CutData { len: u16 },
    AppendData(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum SpanChoice {
    /// Inside the data buffer or just past it: the usual case.
    Near { offset: u16, len: u16 },
    /// Anywhere in the 32-bit range, overflowing sums included.
    Anywhere { offset: u32, len: u32 },
}

impl SpanChoice {
    fn span(&self, data_len: usize) -> wit::Span {
        match *self {
            SpanChoice::Near { offset, len } => {
                let room = data_len as u32 + 2;
                wit::Span {
                    offset: u32::from(offset) % room,
                    len: u32::from(len) % room,
                }
            }
            SpanChoice::Anywhere { offset, len } => wit::Span { offset, len },
        }
    }
}

/// One event per non-blank line, with a key, headers and origins varied by position.
fn events(text: &[u8]) -> Vec<Event> {
    text.split(|b| *b == b'\n')
        .filter(|line| !line.trim_ascii().is_empty())
        .enumerate()
        .map(|(n, line)| Event {
            key: (n % 2 == 1).then(|| Bytes::from(format!("key-{n}"))),
            payload: Bytes::copy_from_slice(line),
            headers: match n % 3 {
                0 => vec![("content-type".to_owned(), Bytes::from_static(b"application/json"))],
                _ => Vec::new(),
            },
            timestamp_ms: n as i64 * 1000,
            origin: Arc::from(format!("sensors/{}", n % 2)),
        })
        .collect()
}

/// What an identity plugin returns for `events`: each event, unchanged, as its output.
fn echo(events: &[Event]) -> wit::Output {
    let batch = encode_batch(events);
    wit::Output {
        data: batch.data,
        headers: batch.headers,
        events: batch
            .events
            .iter()
            .enumerate()
            .map(|(n, event)| wit::Emitted {
                input: n as u32,
                key: event.key,
                payload: event.payload,
                headers: event.headers,
                timestamp_ms: event.timestamp_ms,
                origin: event.origin,
                route: None,
            })
            .collect(),
        routes: Vec::new(),
        rejected: Vec::new(),
    }
}

fn tamper(output: &mut wit::Output, change: &Tamper) {
    let data_len = output.data.len();
    let events = output.events.len();
    let event = |n: u8| (events > 0).then(|| usize::from(n) % events);
    match change {
        Tamper::Payload { event: n, span } => {
            if let Some(at) = event(*n) {
                output.events[at].payload = span.span(data_len);
            }
        }
        Tamper::Key { event: n, span } => {
            if let Some(at) = event(*n) {
                output.events[at].key = span.as_ref().map(|span| span.span(data_len));
            }
        }
        Tamper::Origin { event: n, span } => {
            if let Some(at) = event(*n) {
                output.events[at].origin = span.span(data_len);
            }
        }
        Tamper::HeaderRange { event: n, first, count } => {
            if let Some(at) = event(*n) {
                output.events[at].headers = wit::HeaderRange {
                    first: *first,
                    count: *count,
                };
            }
        }
        Tamper::Header { index, name, value } => {
            let header = wit::Header {
                name: name.span(data_len),
                value: value.span(data_len),
            };
            match output.headers.len() {
                0 => output.headers.push(header),
                len => output.headers[usize::from(*index) % len] = header,
            }
        }
        Tamper::Input { event: n, input } => {
            if let Some(at) = event(*n) {
                output.events[at].input = *input;
            }
        }
        Tamper::Route { event: n, route } => {
            if let Some(at) = event(*n) {
                output.events[at].route = *route;
            }
        }
        Tamper::Repeat { event: n, times } => {
            if let Some(at) = event(*n) {
                let copy = output.events[at];
                output
                    .events
                    .extend(std::iter::repeat_n(copy, usize::from(*times)));
            }
        }
        Tamper::Remove { event: n } => {
            if let Some(at) = event(*n) {
                output.events.remove(at);
            }
        }
        Tamper::AddRoute(name) => output.routes.push(name.clone()),
        Tamper::Reject { input, reason } => output.rejected.push(wit::Rejected {
            input: *input,
            reason: reason.clone(),
        }),
        Tamper::LongReject { input, text, repeat } => output.rejected.push(wit::Rejected {
            input: u32::from(*input),
            reason: text.repeat(usize::from(*repeat)),
        }),
        Tamper::CutData { len } => output.data.truncate(usize::from(*len)),
        Tamper::AppendData(bytes) => output.data.extend_from_slice(bytes),
    }
}

fuzz_target!(|input: &[u8]| {
    let (lines, control) = match input.iter().position(|b| *b == 0xff) {
        Some(at) => (&input[..at], &input[at + 1..]),
        None => (input, &[][..]),
    };
    let Ok(plan) = Plan::arbitrary_take_rest(Unstructured::new(control)) else {
        return;
    };
    let batch = events(lines);
    let inputs = plan.inputs.map_or(batch.len(), usize::from);
    let limits = match &plan.limits {
        Some(small) => Limits {
            outputs_per_call: u32::from(small.outputs_per_call),
            output_bytes_per_call: u64::from(small.output_bytes_per_call),
            headers_per_event: u32::from(small.headers_per_event),
            header_bytes_per_call: u64::from(small.header_bytes_per_call),
            ..Limits::default()
        },
        None => Limits::default(),
    };
    let mut output = echo(&batch);
    for change in &plan.tampering {
        tamper(&mut output, change);
    }
    let within_limits = check_size(&output, inputs, &limits).is_ok();
    let routes = output.routes.clone();
    let reasons: Vec<String> = output.rejected.iter().map(|r| r.reason.clone()).collect();
    // The host decodes only what passed the limits; the decoder must not panic either way.
    let Ok(processed) = decode_output(output, inputs) else {
        return;
    };
    if !within_limits {
        return;
    }

    let allowed = (limits.outputs_per_call as usize).max(inputs);
    assert!(processed.emitted.len() <= allowed);
    let mut header_bytes = 0;
    for emitted in &processed.emitted {
        assert!(inputs == 0 || emitted.input < inputs);
        if let Some(route) = &emitted.route {
            assert!(routes.iter().any(|declared| **declared == **route));
        }
        assert!(emitted.event.headers.len() <= limits.headers_per_event as usize);
        header_bytes += emitted
            .event
            .headers
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum::<usize>();
    }
    assert!(header_bytes as u64 <= limits.header_bytes_per_call);

    let mut rejected = HashSet::new();
    for (rejection, original) in processed.rejected.iter().zip(&reasons) {
        assert!(rejection.input < inputs && rejected.insert(rejection.input));
        if original.len() <= MAX_REASON_BYTES {
            assert_eq!(&rejection.reason, original);
        } else {
            let marker = format!("… [cut from {} bytes]", original.len());
            let kept = rejection
                .reason
                .strip_suffix(&marker)
                .expect("a cut reason says so");
            assert!(original.starts_with(kept) && kept.len() + 4 > MAX_REASON_BYTES);
            assert!(kept.len() <= MAX_REASON_BYTES);
        }
    }

    // What was decoded is what an identity plugin would hand back for it.
    let decoded: Vec<Event> = processed.emitted.into_iter().map(|e| e.event).collect();
    let again = decode_output(echo(&decoded), decoded.len()).expect("an echo decodes");
    let again: Vec<Event> = again.emitted.into_iter().map(|e| e.event).collect();
    assert_eq!(again, decoded);
});
