//! Encoding of host events into the flat WIT batch layout, and validated decoding of
//! what a plugin returns. See `wit/plugin.wit` for why the layout is flat.

use std::sync::Arc;

use bytes::Bytes;

use super::bindings::wit;
use super::error::LimitExceeded;
use super::limits::Limits;
use crate::event::Event;

/// An event a plugin emitted, with the route it took.
#[derive(Debug, Clone, PartialEq)]
pub struct Emitted {
    /// Index of the input event it derives from (0 for collectors).
    pub input: usize,
    /// The named route, or `None` for the stage's default output.
    pub route: Option<Arc<str>>,
    pub event: Event,
}

/// An input event the plugin refused or the runtime isolated as the cause of a failure.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub input: usize,
    pub reason: String,
}

/// The outcome of one batch: what went on, and which inputs go to the dead-letter route.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Processed {
    pub emitted: Vec<Emitted>,
    pub rejected: Vec<Rejection>,
}

impl Processed {
    /// Append `other`, whose input indexes start at `offset` in the combined batch.
    pub(crate) fn extend_shifted(&mut self, other: Processed, offset: usize) {
        self.emitted.extend(other.emitted.into_iter().map(|mut e| {
            e.input += offset;
            e
        }));
        self.rejected
            .extend(other.rejected.into_iter().map(|mut r| {
                r.input += offset;
                r
            }));
    }
}

/// Lay `events` out as one WIT batch: three lists, whatever the batch size.
pub fn encode_batch(events: &[Event]) -> wit::Batch {
    let bytes: usize = events
        .iter()
        .map(|e| {
            e.payload.len()
                + e.key.as_ref().map_or(0, Bytes::len)
                + e.origin.len()
                + e.headers
                    .iter()
                    .map(|(n, v)| n.len() + v.len())
                    .sum::<usize>()
        })
        .sum();
    let mut batch = wit::Batch {
        data: Vec::with_capacity(bytes),
        headers: Vec::new(),
        events: Vec::with_capacity(events.len()),
    };
    for event in events {
        let key = event.key.as_ref().map(|key| push(&mut batch.data, key));
        let payload = push(&mut batch.data, &event.payload);
        let first = batch.headers.len() as u32;
        for (name, value) in &event.headers {
            let name = push(&mut batch.data, name.as_bytes());
            let value = push(&mut batch.data, value);
            batch.headers.push(wit::Header { name, value });
        }
        let headers = wit::HeaderRange {
            first,
            count: event.headers.len() as u32,
        };
        let origin = push(&mut batch.data, event.origin.as_bytes());
        batch.events.push(wit::Event {
            key,
            payload,
            headers,
            timestamp_ms: event.timestamp_ms,
            origin,
        });
    }
    batch
}

fn push(data: &mut Vec<u8>, bytes: &[u8]) -> wit::Span {
    let span = wit::Span {
        offset: data.len() as u32,
        len: bytes.len() as u32,
    };
    data.extend_from_slice(bytes);
    span
}

/// Refuse an output past the stage's quotas before decoding it, so that a plugin cannot
/// turn a few events into a flood downstream. A batch may always emit one event per
/// input. `inputs` is 0 for collectors.
pub fn check_size(
    output: &wit::Output,
    inputs: usize,
    limits: &Limits,
) -> Result<(), LimitExceeded> {
    let allowed = (limits.outputs_per_call as usize).max(inputs);
    if output.events.len() > allowed {
        return Err(LimitExceeded::new(
            "outputs_per_call",
            format!(
                "{} outputs from a {inputs}-event batch",
                output.events.len()
            ),
            allowed as u64,
        ));
    }
    if output.data.len() as u64 > limits.output_bytes_per_call {
        return Err(LimitExceeded::new(
            "output_bytes_per_call",
            format!("an output of {} bytes", output.data.len()),
            limits.output_bytes_per_call,
        ));
    }
    let mut header_bytes = 0u64;
    for (n, event) in output.events.iter().enumerate() {
        if event.headers.count > limits.headers_per_event {
            return Err(LimitExceeded::new(
                "headers_per_event",
                format!("output event {n} with {} headers", event.headers.count),
                u64::from(limits.headers_per_event),
            ));
        }
        // Out-of-range tables are the decoder's error; only what exists costs here.
        let first = event.headers.first as usize;
        let last = first.saturating_add(event.headers.count as usize);
        for header in output.headers.get(first..last).unwrap_or_default() {
            header_bytes += u64::from(header.name.len) + u64::from(header.value.len);
        }
        if header_bytes > limits.header_bytes_per_call {
            return Err(LimitExceeded::new(
                "header_bytes_per_call",
                format!("headers of {header_bytes} bytes by output event {n}"),
                limits.header_bytes_per_call,
            ));
        }
    }
    Ok(())
}

/// Longest rejection reason kept; a longer one is cut with a marker (each becomes a
/// dead-letter record).
pub const MAX_REASON_BYTES: usize = 4 << 10;

/// Decode a plugin's output, checking every span and index. `inputs` is the size of
/// the batch it answers (0 for collectors, whose `input` fields are ignored).
pub fn decode_output(output: wit::Output, inputs: usize) -> Result<Processed, String> {
    let data = Bytes::from(output.data);
    let slice = |span: wit::Span, what: &str, event: usize| -> Result<Bytes, String> {
        let end = span.offset as u64 + span.len as u64;
        if end > data.len() as u64 {
            return Err(format!(
                "output event {event}: {what} span {}..{end} is outside the data buffer ({} bytes)",
                span.offset,
                data.len()
            ));
        }
        Ok(data.slice(span.offset as usize..end as usize))
    };
    let routes: Vec<Arc<str>> = output.routes.into_iter().map(Arc::from).collect();
    let mut origins: Vec<Arc<str>> = Vec::new();
    let mut emitted = Vec::with_capacity(output.events.len());
    for (n, raw) in output.events.into_iter().enumerate() {
        if inputs > 0 && raw.input as usize >= inputs {
            return Err(format!(
                "output event {n} names input {} of a {inputs}-event batch",
                raw.input
            ));
        }
        let route = match raw.route {
            None => None,
            Some(index) => Some(routes.get(index as usize).cloned().ok_or_else(|| {
                format!(
                    "output event {n} names route #{index} but only {} routes exist",
                    routes.len()
                )
            })?),
        };
        let first = raw.headers.first as usize;
        let last = first + raw.headers.count as usize;
        let header_table = output.headers.get(first..last).ok_or_else(|| {
            format!(
                "output event {n}: headers {first}..{last} are outside the header table ({})",
                output.headers.len()
            )
        })?;
        let mut headers = Vec::with_capacity(header_table.len());
        for header in header_table {
            let name = slice(header.name, "header name", n)?;
            let name = String::from_utf8(name.to_vec())
                .map_err(|_| format!("output event {n}: a header name is not UTF-8"))?;
            headers.push((name, slice(header.value, "header value", n)?));
        }
        let origin_bytes = slice(raw.origin, "origin", n)?;
        let origin = std::str::from_utf8(&origin_bytes)
            .map_err(|_| format!("output event {n}: origin is not UTF-8"))?;
        // Most outputs repeat a handful of origins: share one allocation per distinct one.
        let origin = match origins.iter().find(|known| &***known == origin) {
            Some(known) => known.clone(),
            None => {
                let new: Arc<str> = Arc::from(origin);
                origins.push(new.clone());
                new
            }
        };
        let event = Event {
            key: raw.key.map(|span| slice(span, "key", n)).transpose()?,
            payload: slice(raw.payload, "payload", n)?,
            headers,
            timestamp_ms: raw.timestamp_ms,
            origin,
        };
        emitted.push(Emitted {
            input: raw.input as usize,
            route,
            event,
        });
    }
    // Each rejection becomes a dead letter with a copy of its input: one per input.
    let mut rejected: Vec<Rejection> = Vec::with_capacity(output.rejected.len().min(inputs));
    let mut seen = vec![false; inputs];
    for reject in output.rejected {
        let input = reject.input as usize;
        if input >= inputs {
            return Err(format!(
                "a rejection names input {input} of a {inputs}-event batch"
            ));
        }
        if std::mem::replace(&mut seen[input], true) {
            return Err(format!("input {input} is rejected twice"));
        }
        rejected.push(Rejection {
            input,
            reason: cut(reject.reason),
        });
    }
    Ok(Processed { emitted, rejected })
}

/// `reason`, cut at a character boundary to [`MAX_REASON_BYTES`].
fn cut(mut reason: String) -> String {
    if reason.len() > MAX_REASON_BYTES {
        let total = reason.len();
        let mut end = MAX_REASON_BYTES;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push_str(&format!("… [cut from {total} bytes]"));
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(payload: &str) -> Event {
        Event {
            key: Some(Bytes::from_static(b"k")),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            headers: vec![("h".into(), Bytes::from_static(b"v"))],
            timestamp_ms: 7,
            origin: Arc::from("src"),
        }
    }

    /// Echo a batch back as an output, the way an identity plugin would.
    fn echo(batch: wit::Batch) -> wit::Output {
        wit::Output {
            data: batch.data,
            headers: batch.headers,
            events: batch
                .events
                .iter()
                .enumerate()
                .map(|(n, e)| wit::Emitted {
                    input: n as u32,
                    key: e.key,
                    payload: e.payload,
                    headers: e.headers,
                    timestamp_ms: e.timestamp_ms,
                    origin: e.origin,
                    route: None,
                })
                .collect(),
            routes: vec![],
            rejected: vec![],
        }
    }

    #[test]
    fn round_trips_every_field() {
        let events = vec![event("{\"a\":1}"), event("second")];
        let processed = decode_output(echo(encode_batch(&events)), 2).unwrap();
        let back: Vec<Event> = processed.emitted.into_iter().map(|e| e.event).collect();
        assert_eq!(back, events);
    }

    #[test]
    fn rejects_out_of_bounds_spans_and_indexes() {
        let mut output = echo(encode_batch(&[event("x")]));
        output.events[0].payload.len = 1000;
        assert!(
            decode_output(output, 1)
                .unwrap_err()
                .contains("outside the data buffer")
        );
        let mut output = echo(encode_batch(&[event("x")]));
        output.events[0].input = 5;
        assert!(
            decode_output(output, 1)
                .unwrap_err()
                .contains("names input 5")
        );
        let mut output = echo(encode_batch(&[event("x")]));
        output.events[0].route = Some(3);
        assert!(decode_output(output, 1).unwrap_err().contains("route #3"));
    }

    fn with_headers(headers: &[(&str, &str)]) -> Event {
        Event {
            headers: headers
                .iter()
                .map(|(name, value)| ((*name).to_owned(), Bytes::copy_from_slice(value.as_bytes())))
                .collect(),
            ..event("x")
        }
    }

    #[test]
    fn headers_are_bounded_per_event_and_per_call_however_often_they_are_named() {
        let limits = Limits {
            headers_per_event: 1,
            ..Limits::default()
        };
        let output = echo(encode_batch(&[with_headers(&[("a", "1"), ("b", "2")])]));
        let exceeded = check_size(&output, 1, &limits).unwrap_err();
        assert_eq!(exceeded.limit, "headers_per_event");
        assert_eq!(
            exceeded.to_string(),
            "output event 0 with 2 headers exceeds limits.headers_per_event = 1"
        );

        // Five events naming one 31-byte header: 155 bytes for the host to copy.
        let limits = Limits {
            header_bytes_per_call: 100,
            ..Limits::default()
        };
        let mut output = echo(encode_batch(&[with_headers(&[("h", &"v".repeat(30))])]));
        output.events = std::iter::repeat_n(output.events[0].clone(), 5).collect();
        let exceeded = check_size(&output, 5, &limits).unwrap_err();
        assert_eq!(exceeded.limit, "header_bytes_per_call");
        assert!(
            exceeded
                .to_string()
                .starts_with("headers of 124 bytes by output event 3"),
            "{exceeded}"
        );
        assert!(check_size(&output, 5, &Limits::default()).is_ok());
    }

    #[test]
    fn an_input_is_rejected_at_most_once_with_a_bounded_reason() {
        let rejection = |reason: &str| wit::Rejected {
            input: 0,
            reason: reason.to_owned(),
        };
        let mut output = echo(encode_batch(&[event("x")]));
        output.rejected = vec![rejection("bad"), rejection("bad")];
        assert_eq!(
            decode_output(output, 1).unwrap_err(),
            "input 0 is rejected twice"
        );
        let mut output = echo(encode_batch(&[event("x")]));
        output.rejected = vec![rejection(&"é".repeat(10_000))];
        let reason = &decode_output(output, 1).unwrap().rejected[0].reason;
        assert!(reason.len() < MAX_REASON_BYTES + 40, "{}", reason.len());
        assert!(reason.ends_with("… [cut from 20000 bytes]"), "{reason}");
        let mut output = echo(encode_batch(&[]));
        output.rejected = vec![rejection("a collector has no inputs")];
        assert!(
            decode_output(output, 0)
                .unwrap_err()
                .contains("names input 0 of a 0-event batch")
        );
    }
}
