//! Read side of the flat batch layout: [`Batch`] owns the buffers the host sent,
//! [`Event`] borrows one event's bytes out of them.

use crate::__bindings::sluice::plugin::types as wit;

/// A batch as the host hands it in: one byte buffer, a header table and the events.
pub struct Batch {
    pub(crate) inner: wit::Batch,
}

impl Batch {
    #[cfg(feature = "processor")]
    pub(crate) fn from_wit(inner: wit::Batch) -> Self {
        Batch { inner }
    }

    /// The number of events.
    pub fn len(&self) -> usize {
        self.inner.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.events.is_empty()
    }

    /// The events in arrival order.
    pub fn events(&self) -> impl Iterator<Item = Event<'_>> {
        (0..self.inner.events.len()).map(move |index| Event {
            batch: &self.inner,
            index,
        })
    }
}

#[inline]
pub(crate) fn push(data: &mut Vec<u8>, bytes: &[u8]) -> wit::Span {
    let span = wit::Span {
        offset: data.len() as u32,
        len: bytes.len() as u32,
    };
    data.extend_from_slice(bytes);
    span
}

/// One input event, borrowed from its batch.
#[derive(Clone, Copy)]
pub struct Event<'a> {
    pub(crate) batch: &'a wit::Batch,
    pub(crate) index: usize,
}

impl<'a> Event<'a> {
    #[inline]
    fn raw(&self) -> &'a wit::Event {
        &self.batch.events[self.index]
    }

    #[inline]
    pub(crate) fn bytes(&self, span: wit::Span) -> &'a [u8] {
        let start = span.offset as usize;
        &self.batch.data[start..start + span.len as usize]
    }

    /// Position of the event in its batch.
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn key(&self) -> Option<&'a [u8]> {
        self.raw().key.map(|span| self.bytes(span))
    }

    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        self.bytes(self.raw().payload)
    }

    /// The payload as UTF-8 text.
    pub fn text(&self) -> Result<&'a str, crate::Error> {
        std::str::from_utf8(self.payload())
            .map_err(|error| crate::Error::new(format!("payload is not UTF-8: {error}")))
    }

    /// The payload parsed as JSON into `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, crate::Error> {
        Ok(serde_json::from_slice(self.payload())?)
    }

    pub fn timestamp_ms(&self) -> i64 {
        self.raw().timestamp_ms
    }

    /// Where the event came from: a topic or a source stage.
    pub fn origin(&self) -> &'a str {
        std::str::from_utf8(self.bytes(self.raw().origin)).unwrap_or("")
    }

    /// The event's headers as (name, value) pairs.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let batch = self.batch;
        let range = self.raw().headers;
        let event = *self;
        let first = range.first as usize;
        batch.headers[first..first + range.count as usize]
            .iter()
            .map(move |header| {
                let name = std::str::from_utf8(event.bytes(header.name)).unwrap_or("");
                (name, event.bytes(header.value))
            })
    }

    /// The first header called `name`.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers()
            .find(|(candidate, _)| *candidate == name)
            .map(|(_, value)| value)
    }
}
