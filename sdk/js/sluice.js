// Write Sluice processor plugins in JavaScript (componentize-js).
//
//   import { Processor, exportProcessor } from "./sluice.js";
//
//   class Hot extends Processor {
//     init(config) { this.threshold = Number(config.threshold ?? 80); }
//     process(event, out) {
//       if (event.json().temperature > this.threshold) out.forward(event, "alerts");
//     }
//   }
//
//   export const { init, process } = exportProcessor(Hot);
//
// The host hands plugins *batches*: one byte buffer and spans into it, so that one
// boundary crossing serves many events (see wit/plugin.wit). This module keeps that
// layout out of plugin code: events arrive as `Event` objects and results go to an
// `Output`, which writes the spans back. `log`, `metrics` and `state` wrap the host's
// imports.

// componentize-js resolves imports by exact name: these follow the contract version in
// wit/plugin.wit and move with it.
import { log as hostLog } from "sluice:plugin/log@0.1.3";
import { counterAdd, gaugeSet } from "sluice:plugin/metrics@0.1.3";
import * as hostState from "sluice:plugin/state@0.1.3";
import { get as hostLimits } from "sluice:plugin/limits@0.1.3";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Thrown from `process`: the event goes to the stage's dead-letter route with this reason. */
export class Reject extends Error {}

/** One input event. Reading a field slices the batch's shared buffer on demand. */
export class Event {
  constructor(batch, raw, index) {
    this.batch = batch;
    this.raw = raw;
    /** Position in the batch (what the host acknowledges and dead-letters by). */
    this.index = index;
  }

  bytes(span) {
    return this.batch.data.subarray(span.offset, span.offset + span.len);
  }

  /** The payload as a Uint8Array (a view: copy it to keep it past `process`). */
  get payload() {
    return this.bytes(this.raw.payload);
  }

  /** The payload as text (UTF-8). */
  text() {
    return decoder.decode(this.payload);
  }

  /** The payload parsed as JSON (throws a SyntaxError if it is not JSON). */
  json() {
    return JSON.parse(this.text());
  }

  /** The key as a Uint8Array, or undefined. */
  get key() {
    return this.raw.key === undefined ? undefined : this.bytes(this.raw.key);
  }

  /** The headers as `[name, value]` pairs: string names, Uint8Array values. */
  get headers() {
    const { first, count } = this.raw.headers;
    return this.batch.headers
      .slice(first, first + count)
      .map((h) => [decoder.decode(this.bytes(h.name)), this.bytes(h.value)]);
  }

  /** The value of the first header called `name`, or undefined. */
  header(name) {
    return this.headers.find(([headerName]) => headerName === name)?.[1];
  }

  /** Event time in milliseconds since the Unix epoch. */
  get timestamp() {
    return Number(this.raw.timestampMs);
  }

  /** Where the event came from (a topic, a source stage). */
  get origin() {
    return decoder.decode(this.bytes(this.raw.origin));
  }
}

function sameBytes(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** What a plugin returns for a batch: emitted events, each on a route, and rejections. */
export class Output {
  constructor() {
    this.chunks = [];
    this.length = 0;
    this.headers = [];
    this.events = [];
    this.routes = new Map();
    this.rejected = [];
    this.origin = undefined;
    /** The event `process` is handling: the default source of `emit`. */
    this.current = undefined;
  }

  span(bytes) {
    const span = { offset: this.length, len: bytes.length };
    this.chunks.push(bytes);
    this.length += bytes.length;
    return span;
  }

  route(name) {
    if (name === undefined || name === null) return undefined;
    let index = this.routes.get(name);
    if (index === undefined) {
      index = this.routes.size;
      this.routes.set(name, index);
    }
    return index;
  }

  /** Pass `event` on unchanged, to the default output or to `route`. */
  forward(event, route) {
    this.emit(event.payload, route, event);
  }

  /**
   * Emit an event derived from `source` (by default the event being processed): same
   * key, headers, time and origin, a new payload. `payload` is a Uint8Array, a string
   * (written as UTF-8) or any other value (written as JSON).
   */
  emit(payload, route, source = this.current) {
    if (source === undefined) throw new Error("emit outside process: pass the source event");
    if (typeof payload === "string") payload = encoder.encode(payload);
    else if (!(payload instanceof Uint8Array)) payload = encoder.encode(JSON.stringify(payload));
    const raw = source.raw;
    const key = raw.key === undefined ? undefined : this.span(source.bytes(raw.key));
    const body = this.span(payload);
    const first = this.headers.length;
    const { first: from, count } = raw.headers;
    for (let h = from; h < from + count; h++) {
      const header = source.batch.headers[h];
      this.headers.push({ name: this.span(source.bytes(header.name)), value: this.span(source.bytes(header.value)) });
    }
    // Events of one batch mostly share their origin: write it once.
    const originBytes = source.bytes(raw.origin);
    if (this.origin === undefined || !sameBytes(this.origin.bytes, originBytes)) {
      this.origin = { bytes: originBytes, span: this.span(originBytes) };
    }
    this.events.push({
      input: source.index,
      key,
      payload: body,
      headers: { first, count },
      timestampMs: raw.timestampMs,
      origin: this.origin.span,
      route: this.route(route),
    });
  }

  /** Refuse `event`: the host sends it to the dead-letter route with `reason`. */
  reject(event, reason) {
    this.rejected.push({ input: event.index, reason: String(reason) });
  }

  finish() {
    const data = new Uint8Array(this.length);
    let offset = 0;
    for (const chunk of this.chunks) {
      data.set(chunk, offset);
      offset += chunk.length;
    }
    return { data, headers: this.headers, events: this.events, routes: [...this.routes.keys()], rejected: this.rejected };
  }
}

function message(error) {
  return error instanceof Error ? error.message || error.name : String(error);
}

/** Base class of transforms, filters, flat-maps and routers. */
export class Processor {
  /** Called once with the stage's `config` table. Throwing stops the stage. */
  init(config) {}

  /**
   * Handle one event: emit zero, one or many outputs. Throwing rejects the event
   * (dead-letter route, the error's message as the reason).
   */
  process(event, out) {
    throw new Error("a Processor overrides process or processBatch");
  }

  /**
   * Handle a whole batch (an array of `Event`). Override it for logic that spans events
   * (windows); the default calls `process` for every event.
   */
  processBatch(events, out) {
    for (const event of events) {
      out.current = event;
      try {
        this.process(event, out);
      } catch (error) {
        out.reject(event, message(error));
      }
    }
    out.current = undefined;
  }
}

/** The world exports componentize-js looks for: `export const { init, process } = exportProcessor(P)`. */
export function exportProcessor(PluginClass) {
  let plugin;
  return {
    init(config) {
      let settings;
      try {
        settings = JSON.parse(config);
      } catch (error) {
        throw `invalid plugin config: ${message(error)}`;
      }
      const instance = new PluginClass();
      try {
        instance.init(settings);
      } catch (error) {
        throw message(error);
      }
      plugin = instance;
    },
    process(batch) {
      if (plugin === undefined) throw "the plugin was called before init";
      const out = new Output();
      const events = batch.events.map((raw, index) => new Event(batch, raw, index));
      try {
        plugin.processBatch(events, out);
      } catch (error) {
        throw message(error);
      }
      return out.finish();
    },
  };
}

const fieldList = (fields) => Object.entries(fields).map(([name, value]) => [name, String(value)]);

/** Structured logs into the host's `tracing`, tagged with the stage: `log.info("msg", { key: value })`. */
export const log = {
  trace: (text, fields = {}) => hostLog("trace", text, fieldList(fields)),
  debug: (text, fields = {}) => hostLog("debug", text, fieldList(fields)),
  info: (text, fields = {}) => hostLog("info", text, fieldList(fields)),
  warn: (text, fields = {}) => hostLog("warn", text, fieldList(fields)),
  error: (text, fields = {}) => hostLog("error", text, fieldList(fields)),
};

/** Plugin metrics, exported as `sluice_plugin_NAME` with the stage as a label. */
export const metrics = {
  counter: (name, value = 1) => counterAdd(name, BigInt(value)),
  gauge: (name, value) => gaugeSet(name, Number(value)),
};

/** The stage's durable key-value state; one call's writes commit when it succeeds. */
export const state = {
  get: (key) => hostState.get(key),
  put: (key, value) => hostState.put(key, typeof value === "string" ? encoder.encode(value) : value),
  delete: (key) => hostState.delete(key),
  /** Up to `limit` `[key, value]` pairs whose key starts with `prefix`, in key order. */
  scan: (prefix, limit = 1000) => hostState.scanPrefix(prefix, limit),
  getJson(key, fallback) {
    const value = hostState.get(key);
    return value === undefined ? fallback : JSON.parse(decoder.decode(value));
  },
  putJson: (key, value) => hostState.put(key, encoder.encode(JSON.stringify(value))),
};

/** The stage's quotas (memory, deadline, state and output sizes). */
export const limits = () => hostLimits();
