//! Write side of the flat batch layout: what a plugin emits, routes and rejects.

use crate::__bindings::sluice::plugin::types as wit;
use crate::batch::{Batch, Event, push};

/// A new event, built by a collector or a test.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewEvent {
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub timestamp_ms: i64,
    pub origin: String,
}

impl NewEvent {
    /// An event whose payload is `value` serialized as JSON.
    pub fn json(value: &impl serde::Serialize) -> Result<Self, crate::Error> {
        Ok(NewEvent {
            payload: serde_json::to_vec(value)?,
            ..NewEvent::default()
        })
    }
}

/// What a plugin returns for a batch: emitted events (each on a route) and rejections.
pub struct Output {
    inner: wit::Output,
}

impl Default for Output {
    fn default() -> Self {
        Output::new()
    }
}

impl Output {
    pub fn new() -> Self {
        Output {
            inner: wit::Output {
                data: Vec::new(),
                headers: Vec::new(),
                events: Vec::new(),
                routes: Vec::new(),
                rejected: Vec::new(),
            },
        }
    }

    /// An output with room for what a processor typically makes of `batch`: an event
    /// per input, about as many bytes as came in and a field's worth more per event.
    /// Growing from empty instead copies the buffers about a dozen times a batch.
    #[cfg(feature = "processor")]
    pub(crate) fn for_batch(batch: &Batch) -> Self {
        let mut output = Output::new();
        output
            .inner
            .data
            .reserve(batch.inner.data.len() + batch.len() * 64);
        output.inner.events.reserve(batch.len());
        output
    }

    pub(crate) fn into_wit(self) -> wit::Output {
        self.inner
    }

    /// Pass `event` on unchanged to the default output.
    pub fn forward(&mut self, event: &Event<'_>) {
        self.emit(event, event.payload(), None);
    }

    /// Pass `event` on unchanged to the named route.
    pub fn forward_to(&mut self, event: &Event<'_>, route: &str) {
        self.emit(event, event.payload(), Some(route));
    }

    /// Emit an event derived from `event` (same key, headers, time and origin) with a new
    /// payload, to the default output or to `route`.
    pub fn emit(&mut self, event: &Event<'_>, payload: &[u8], route: Option<&str>) {
        let result: Result<(), std::convert::Infallible> = self.emit_with(event, route, |data| {
            data.extend_from_slice(payload);
            Ok(())
        });
        let Ok(()) = result;
    }

    /// Emit an event derived from `event`, like [`Output::emit`], whose payload `write`
    /// appends to the buffer it is handed: a payload built from the input's bytes (a
    /// field appended, say) is then written once, where the host reads it, instead of
    /// into a buffer of the plugin's and copied. When `write` fails, what it wrote is
    /// dropped, nothing is emitted and its error is returned.
    pub fn emit_with<E>(
        &mut self,
        event: &Event<'_>,
        route: Option<&str>,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let source = &event.batch.events[event.index];
        let start = self.inner.data.len();
        let key = source
            .key
            .map(|span| push(&mut self.inner.data, event.bytes(span)));
        let payload_start = self.inner.data.len();
        if let Err(error) = write(&mut self.inner.data) {
            self.inner.data.truncate(start);
            return Err(error);
        }
        let payload = wit::Span {
            offset: payload_start as u32,
            len: (self.inner.data.len() - payload_start) as u32,
        };
        let first = self.inner.headers.len() as u32;
        let range = source.headers;
        for header in
            &event.batch.headers[range.first as usize..(range.first + range.count) as usize]
        {
            let name = push(&mut self.inner.data, event.bytes(header.name));
            let value = push(&mut self.inner.data, event.bytes(header.value));
            self.inner.headers.push(wit::Header { name, value });
        }
        let headers = wit::HeaderRange {
            first,
            count: range.count,
        };
        let origin = push(&mut self.inner.data, event.bytes(source.origin));
        let route = route.map(|name| self.route_index(name));
        self.inner.events.push(wit::Emitted {
            input: event.index as u32,
            key,
            payload,
            headers,
            timestamp_ms: source.timestamp_ms,
            origin,
            route,
        });
        Ok(())
    }

    /// Emit `value` serialized as JSON, derived from `event`.
    pub fn emit_json(
        &mut self,
        event: &Event<'_>,
        value: &impl serde::Serialize,
        route: Option<&str>,
    ) -> Result<(), crate::Error> {
        let payload = serde_json::to_vec(value)?;
        self.emit(event, &payload, route);
        Ok(())
    }

    /// Emit a brand-new event (collectors) to the default output or to `route`.
    pub fn push(&mut self, event: &NewEvent, route: Option<&str>) {
        let key = event
            .key
            .as_deref()
            .map(|key| push(&mut self.inner.data, key));
        let payload = push(&mut self.inner.data, &event.payload);
        let first = self.inner.headers.len() as u32;
        for (name, value) in &event.headers {
            let name = push(&mut self.inner.data, name.as_bytes());
            let value = push(&mut self.inner.data, value);
            self.inner.headers.push(wit::Header { name, value });
        }
        let headers = wit::HeaderRange {
            first,
            count: event.headers.len() as u32,
        };
        let origin = push(&mut self.inner.data, event.origin.as_bytes());
        let route = route.map(|name| self.route_index(name));
        self.inner.events.push(wit::Emitted {
            input: 0,
            key,
            payload,
            headers,
            timestamp_ms: event.timestamp_ms,
            origin,
            route,
        });
    }

    /// Refuse `event`: the host sends it to the stage's dead-letter route with `reason`.
    pub fn reject(&mut self, event: &Event<'_>, reason: impl Into<String>) {
        self.inner.rejected.push(wit::Rejected {
            input: event.index as u32,
            reason: reason.into(),
        });
    }

    fn route_index(&mut self, name: &str) -> u32 {
        match self.inner.routes.iter().position(|route| route == name) {
            Some(index) => index as u32,
            None => {
                self.inner.routes.push(name.to_owned());
                (self.inner.routes.len() - 1) as u32
            }
        }
    }

    /// How many events were emitted so far.
    pub fn len(&self) -> usize {
        self.inner.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.events.is_empty()
    }

    /// The emitted events as (route, payload) pairs, for tests.
    pub fn emitted(&self) -> impl Iterator<Item = (Option<&str>, &[u8])> {
        self.inner.events.iter().map(|event| {
            let route = event
                .route
                .map(|index| self.inner.routes[index as usize].as_str());
            let start = event.payload.offset as usize;
            (
                route,
                &self.inner.data[start..start + event.payload.len as usize],
            )
        })
    }

    /// The rejections as (input index, reason) pairs, for tests.
    pub fn rejected(&self) -> impl Iterator<Item = (usize, &str)> {
        self.inner
            .rejected
            .iter()
            .map(|reject| (reject.input as usize, reject.reason.as_str()))
    }
}

/// Building input beside building output: both lay events out the same way.
impl Batch {
    /// Build a batch in memory, as the host would send it (for tests and benchmarks).
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a NewEvent>) -> Self {
        let mut inner = wit::Batch {
            data: Vec::new(),
            headers: Vec::new(),
            events: Vec::new(),
        };
        for event in events {
            let key = event.key.as_deref().map(|key| push(&mut inner.data, key));
            let payload = push(&mut inner.data, &event.payload);
            let first = inner.headers.len() as u32;
            for (name, value) in &event.headers {
                let name = push(&mut inner.data, name.as_bytes());
                let value = push(&mut inner.data, value);
                inner.headers.push(wit::Header { name, value });
            }
            let headers = wit::HeaderRange {
                first,
                count: event.headers.len() as u32,
            };
            let origin = push(&mut inner.data, event.origin.as_bytes());
            inner.events.push(wit::Event {
                key,
                payload,
                headers,
                timestamp_ms: event.timestamp_ms,
                origin,
            });
        }
        Batch { inner }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Batch, Processor};

    /// A plugin's logic runs natively too: the way to unit-test it.
    struct Evens;

    impl Processor for Evens {
        type Config = ();
        fn new(_: ()) -> Result<Self, crate::Error> {
            Ok(Evens)
        }
        fn process(
            &mut self,
            event: &crate::Event<'_>,
            out: &mut Output,
        ) -> Result<(), crate::Error> {
            let n: u64 = event.json()?;
            match n % 2 {
                0 => out.forward_to(event, "even"),
                _ => out.emit(event, b"odd", None),
            }
            assert_eq!(event.header("h"), Some(&b"v"[..]));
            assert_eq!(event.key(), Some(&b"k"[..]));
            Ok(())
        }
    }

    #[test]
    fn a_payload_written_in_place_is_emitted_whole_or_not_at_all() {
        let events = [NewEvent {
            key: Some(b"k".to_vec()),
            payload: b"in".to_vec(),
            headers: vec![("h".into(), b"v".to_vec())],
            ..NewEvent::default()
        }];
        let batch = Batch::from_events(&events);
        let event = batch.events().next().unwrap();
        let mut out = Output::new();
        let failed = out.emit_with(&event, None, |data| {
            data.extend_from_slice(b"partial");
            Err("no")
        });
        assert_eq!(failed, Err("no"));
        assert!(out.is_empty() && out.inner.data.is_empty());
        out.emit_with(&event, Some("r"), |data| {
            data.extend_from_slice(event.payload());
            data.extend_from_slice(b"+out");
            Ok::<(), ()>(())
        })
        .unwrap();
        out.emit(&event, b"plain", None);
        let emitted: Vec<(Option<&str>, &[u8])> = out.emitted().collect();
        assert_eq!(
            emitted,
            [(Some("r"), &b"in+out"[..]), (None, &b"plain"[..])]
        );
        let first = &out.inner.events[0];
        assert_eq!(first.key.map(|k| bytes_of(&out, k)), Some(&b"k"[..]));
        assert_eq!(first.headers.count, 1);
    }

    fn bytes_of(out: &Output, span: wit::Span) -> &[u8] {
        &out.inner.data[span.offset as usize..(span.offset + span.len) as usize]
    }

    #[test]
    fn a_processor_runs_natively_on_sdk_batches() {
        let events: Vec<NewEvent> = ["2", "3", "x"]
            .iter()
            .map(|payload| NewEvent {
                key: Some(b"k".to_vec()),
                payload: payload.as_bytes().to_vec(),
                headers: vec![("h".into(), b"v".to_vec())],
                ..NewEvent::default()
            })
            .collect();
        let mut out = Output::new();
        Evens
            .process_batch(&Batch::from_events(&events), &mut out)
            .unwrap();
        let emitted: Vec<(Option<&str>, &[u8])> = out.emitted().collect();
        assert_eq!(emitted, [(Some("even"), &b"2"[..]), (None, &b"odd"[..])]);
        let rejected: Vec<(usize, &str)> = out.rejected().collect();
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].0, 2);
        assert!(rejected[0].1.starts_with("invalid JSON"));
    }
}
