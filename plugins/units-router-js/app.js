// units-router in JavaScript: the same plugin as plugins/units-router (Rust), byte for byte.
//
// Adds `temperature_f` (from `temperature` in Celsius) and routes each event to `alerts`
// above `threshold_f`, else to `normal`. The output is defined textually (see the Rust
// version) so that every language prints the same bytes.

const NOT_AN_OBJECT = "payload is not a JSON object";
const NO_TEMPERATURE = "missing numeric field `temperature`";
const ROUTES = ["alerts", "normal"];

let thresholdF = 176.0;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Builds an `output`: one byte buffer and spans into it (the WIT batch layout). */
class Writer {
  constructor() {
    this.chunks = [];
    this.length = 0;
    this.headers = [];
    this.events = [];
    this.rejected = [];
  }

  span(bytes) {
    const span = { offset: this.length, len: bytes.length };
    this.chunks.push(bytes);
    this.length += bytes.length;
    return span;
  }

  emit(batch, index, payload, route) {
    const event = batch.events[index];
    const raw = (span) => batch.data.subarray(span.offset, span.offset + span.len);
    const key = event.key === undefined ? undefined : this.span(raw(event.key));
    const body = this.span(payload);
    const first = this.headers.length;
    for (const header of batch.headers.slice(event.headers.first, event.headers.first + event.headers.count)) {
      this.headers.push({ name: this.span(raw(header.name)), value: this.span(raw(header.value)) });
    }
    const origin = this.span(raw(event.origin));
    this.events.push({
      input: index,
      key,
      payload: body,
      headers: { first, count: event.headers.count },
      timestampMs: event.timestampMs,
      origin,
      route,
    });
  }

  output() {
    const data = new Uint8Array(this.length);
    let offset = 0;
    for (const chunk of this.chunks) {
      data.set(chunk, offset);
      offset += chunk.length;
    }
    return { data, headers: this.headers, events: this.events, routes: ROUTES, rejected: this.rejected };
  }
}

export function init(config) {
  try {
    const settings = JSON.parse(config);
    thresholdF = Number(settings.threshold_f ?? 176.0);
  } catch (error) {
    throw `invalid plugin config: ${error}`;
  }
}

export function process(batch) {
  const out = new Writer();
  batch.events.forEach((event, index) => {
    const payload = batch.data.subarray(event.payload.offset, event.payload.offset + event.payload.len);
    const text = decoder.decode(payload);
    let value;
    try {
      value = JSON.parse(text);
    } catch {
      value = undefined;
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      out.rejected.push({ input: index, reason: NOT_AN_OBJECT });
      return;
    }
    const celsius = value.temperature;
    if (typeof celsius !== "number") {
      out.rejected.push({ input: index, reason: NO_TEMPERATURE });
      return;
    }
    const fahrenheit = (celsius * 9.0) / 5.0 + 32.0;
    const trimmed = text.trimEnd();
    if (!trimmed.endsWith("}")) {
      out.rejected.push({ input: index, reason: NOT_AN_OBJECT });
      return;
    }
    const body = `${trimmed.slice(0, -1)},"temperature_f":${fahrenheit.toFixed(2)}}`;
    out.emit(batch, index, encoder.encode(body), fahrenheit > thresholdF ? 0 : 1);
  });
  return out.output();
}
