// sluice.h: helpers over wit-bindgen's C bindings of the Sluice `processor` world.
//
// The host hands plugins *batches*: one byte buffer and spans into it, so that one
// boundary crossing serves many events (see wit/plugin.wit). These helpers read an
// event's fields as byte views and build the `output` record (its shared buffer, header
// table, emitted events, named routes and rejections), so plugin code never computes
// a span:
//
//   sluice_output_t out = {0};
//   for (uint32_t i = 0; i < batch->events.len; i++) {
//     sluice_bytes_t payload = sluice_payload(batch, i);
//     if (payload.len == 0) { sluice_reject(&out, i, "empty payload"); continue; }
//     sluice_emit(&out, batch, i, payload.ptr, payload.len, "non-empty");
//   }
//   sluice_finish(&out, ret);        // moves the output into the return value
//   processor_batch_free(batch);
//
// Include it after "processor.h". Everything is `static`: one header, no library.

#ifndef SLUICE_H
#define SLUICE_H

#include <stdlib.h>
#include <string.h>

#include "processor.h"

/// A read-only view of bytes inside a batch (not NUL-terminated).
typedef struct {
  const uint8_t *ptr;
  size_t len;
} sluice_bytes_t;

static inline sluice_bytes_t sluice_span(const processor_batch_t *batch, sluice_plugin_types_span_t span) {
  sluice_bytes_t bytes = {batch->data.ptr + span.offset, span.len};
  return bytes;
}

/// The payload of event `index`.
static inline sluice_bytes_t sluice_payload(const processor_batch_t *batch, uint32_t index) {
  return sluice_span(batch, batch->events.ptr[index].payload);
}

/// The key of event `index` into `*key`; false when the event has none.
static inline bool sluice_key(const processor_batch_t *batch, uint32_t index, sluice_bytes_t *key) {
  const sluice_plugin_types_event_t *event = &batch->events.ptr[index];
  if (event->key.is_some) *key = sluice_span(batch, event->key.val);
  return event->key.is_some;
}

/// The origin (topic, source stage) of event `index`, UTF-8.
static inline sluice_bytes_t sluice_origin(const processor_batch_t *batch, uint32_t index) {
  return sluice_span(batch, batch->events.ptr[index].origin);
}

/// Event time of event `index`, in milliseconds since the Unix epoch.
static inline int64_t sluice_timestamp_ms(const processor_batch_t *batch, uint32_t index) {
  return batch->events.ptr[index].timestamp_ms;
}

/// The value of the first header of event `index` called `name` into `*value`; false
/// when there is none.
static inline bool sluice_header(const processor_batch_t *batch, uint32_t index, const char *name,
                                 sluice_bytes_t *value) {
  const sluice_plugin_types_event_t *event = &batch->events.ptr[index];
  size_t n = strlen(name);
  for (uint32_t h = 0; h < event->headers.count; h++) {
    const sluice_plugin_types_header_t *header = &batch->headers.ptr[event->headers.first + h];
    if (header->name.len == n && memcmp(batch->data.ptr + header->name.offset, name, n) == 0) {
      *value = sluice_span(batch, header->value);
      return true;
    }
  }
  return false;
}

/// An output under construction. Zero-initialize it; `sluice_finish` hands it over.
typedef struct {
  uint8_t *data;
  size_t len, cap;
  sluice_plugin_types_header_t *headers;
  size_t headers_len, headers_cap;
  sluice_plugin_types_emitted_t *events;
  size_t events_len, events_cap;
  sluice_plugin_types_rejected_t *rejected;
  size_t rejected_len, rejected_cap;
  processor_string_t *routes;
  size_t routes_len, routes_cap;
  // Events of one batch mostly share their origin: it is written once per run.
  sluice_bytes_t last_origin;
  sluice_plugin_types_span_t last_origin_span;
} sluice_output_t;

#define SLUICE_GROW(ptr, len, cap)                        \
  do {                                                    \
    if ((len) == (cap)) {                                 \
      (cap) = (cap) ? (cap) * 2 : 16;                     \
      (ptr) = realloc((ptr), (cap) * sizeof(*(ptr)));     \
      if (!(ptr)) abort();                                \
    }                                                     \
  } while (0)

/// Append `n` bytes to the output's buffer; their span.
static inline sluice_plugin_types_span_t sluice_push(sluice_output_t *out, const uint8_t *bytes, size_t n) {
  if (out->len + n > out->cap) {
    size_t cap = out->cap ? out->cap : 4096;
    while (out->len + n > cap) cap *= 2;
    out->data = realloc(out->data, cap);
    if (!out->data) abort();
    out->cap = cap;
  }
  if (n) memcpy(out->data + out->len, bytes, n);
  sluice_plugin_types_span_t span = {(uint32_t)out->len, (uint32_t)n};
  out->len += n;
  return span;
}

/// The index of route `name` in the output's route table, added on first use.
static inline uint32_t sluice_route(sluice_output_t *out, const char *name) {
  size_t n = strlen(name);
  for (size_t r = 0; r < out->routes_len; r++) {
    if (out->routes[r].len == n && memcmp(out->routes[r].ptr, name, n) == 0) return (uint32_t)r;
  }
  SLUICE_GROW(out->routes, out->routes_len, out->routes_cap);
  processor_string_dup(&out->routes[out->routes_len], name);
  return (uint32_t)out->routes_len++;
}

/// Emit an event derived from input `index` (same key, headers, time and origin) with
/// a new payload, to `route` (NULL: the stage's default output).
static inline void sluice_emit(sluice_output_t *out, const processor_batch_t *batch, uint32_t index,
                               const uint8_t *payload, size_t n, const char *route) {
  const sluice_plugin_types_event_t *in = &batch->events.ptr[index];
  SLUICE_GROW(out->events, out->events_len, out->events_cap);
  sluice_plugin_types_emitted_t *emitted = &out->events[out->events_len++];
  emitted->input = index;
  emitted->key.is_some = in->key.is_some;
  if (in->key.is_some) {
    sluice_bytes_t key = sluice_span(batch, in->key.val);
    emitted->key.val = sluice_push(out, key.ptr, key.len);
  }
  emitted->payload = sluice_push(out, payload, n);
  emitted->headers.first = (uint32_t)out->headers_len;
  emitted->headers.count = in->headers.count;
  for (uint32_t h = 0; h < in->headers.count; h++) {
    const sluice_plugin_types_header_t *header = &batch->headers.ptr[in->headers.first + h];
    sluice_bytes_t name = sluice_span(batch, header->name), value = sluice_span(batch, header->value);
    SLUICE_GROW(out->headers, out->headers_len, out->headers_cap);
    sluice_plugin_types_header_t *copy = &out->headers[out->headers_len++];
    copy->name = sluice_push(out, name.ptr, name.len);
    copy->value = sluice_push(out, value.ptr, value.len);
  }
  emitted->timestamp_ms = in->timestamp_ms;
  sluice_bytes_t origin = sluice_span(batch, in->origin);
  if (!out->last_origin.ptr || out->last_origin.len != origin.len ||
      memcmp(out->last_origin.ptr, origin.ptr, origin.len) != 0) {
    out->last_origin = origin;
    out->last_origin_span = sluice_push(out, origin.ptr, origin.len);
  }
  emitted->origin = out->last_origin_span;
  emitted->route.is_some = route != NULL;
  if (route) emitted->route.val = sluice_route(out, route);
}

/// Pass input `index` on unchanged, to `route` (NULL: the default output).
static inline void sluice_forward(sluice_output_t *out, const processor_batch_t *batch, uint32_t index,
                                  const char *route) {
  sluice_bytes_t payload = sluice_payload(batch, index);
  sluice_emit(out, batch, index, payload.ptr, payload.len, route);
}

/// Refuse input `index`: the host sends it to the dead-letter route with `reason`.
static inline void sluice_reject(sluice_output_t *out, uint32_t index, const char *reason) {
  SLUICE_GROW(out->rejected, out->rejected_len, out->rejected_cap);
  sluice_plugin_types_rejected_t *rejected = &out->rejected[out->rejected_len++];
  rejected->input = index;
  processor_string_dup(&rejected->reason, reason);
}

/// Move the output into `process`'s return value (the generated code frees it).
static inline void sluice_finish(sluice_output_t *out, processor_output_t *ret) {
  ret->data.ptr = out->data;
  ret->data.len = out->len;
  ret->headers.ptr = out->headers;
  ret->headers.len = out->headers_len;
  ret->events.ptr = out->events;
  ret->events.len = out->events_len;
  ret->rejected.ptr = out->rejected;
  ret->rejected.len = out->rejected_len;
  ret->routes.ptr = out->routes;
  ret->routes.len = out->routes_len;
  memset(out, 0, sizeof *out);
}

// ---- host imports ---------------------------------------------------------------

/// Log `message` at `level` (SLUICE_PLUGIN_LOG_LEVEL_INFO, ...), without fields.
static inline void sluice_log(sluice_plugin_log_level_t level, const char *message) {
  processor_string_t text;
  processor_string_set(&text, message);
  processor_list_tuple2_string_string_t fields = {NULL, 0};
  sluice_plugin_log_log(level, &text, &fields);
}

/// Add `value` to the counter `name` (exported as `sluice_plugin_NAME`).
static inline void sluice_counter_add(const char *name, uint64_t value) {
  processor_string_t text;
  processor_string_set(&text, name);
  sluice_plugin_metrics_counter_add(&text, value);
}

/// Set the gauge `name` to `value`.
static inline void sluice_gauge_set(const char *name, double value) {
  processor_string_t text;
  processor_string_set(&text, name);
  sluice_plugin_metrics_gauge_set(&text, value);
}

/// The state value under `key` into `*value` (free it with processor_list_u8_free);
/// false when absent.
static inline bool sluice_state_get(const char *key, processor_list_u8_t *value) {
  processor_string_t text;
  processor_string_set(&text, key);
  return sluice_plugin_state_get(&text, value);
}

/// Store `n` bytes under `key`; committed when this call succeeds.
static inline void sluice_state_put(const char *key, const uint8_t *bytes, size_t n) {
  processor_string_t text;
  processor_string_set(&text, key);
  processor_list_u8_t value = {(uint8_t *)bytes, n};
  sluice_plugin_state_put(&text, &value);
}

/// Remove `key` (absent keys are fine).
static inline void sluice_state_delete(const char *key) {
  processor_string_t text;
  processor_string_set(&text, key);
  sluice_plugin_state_delete(&text);
}

#endif
