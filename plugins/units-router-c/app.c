// units-router in C: the same plugin as plugins/units-router (Rust), byte for byte.
//
// Adds `temperature_f` (from `temperature` in Celsius) and routes each event to
// `alerts` above `threshold_f`, else to `normal`. The output is defined textually (see
// the Rust version) so that every language prints the same bytes. A small JSON
// validator stands in for a JSON library: the payload must be one JSON object.

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "processor.h"

static const char NOT_AN_OBJECT[] = "payload is not a JSON object";
static const char NO_TEMPERATURE[] = "missing numeric field `temperature`";

static double threshold_f = 176.0;

// ---- JSON validation -----------------------------------------------------------

typedef struct {
  const uint8_t *p, *end;
} cursor_t;

static void skip_ws(cursor_t *c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

static bool literal(cursor_t *c, const char *word) {
  size_t n = strlen(word);
  if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0) return false;
  c->p += n;
  return true;
}

static bool is_digit(cursor_t *c) { return c->p < c->end && *c->p >= '0' && *c->p <= '9'; }

static bool number(cursor_t *c) {
  if (c->p < c->end && *c->p == '-') c->p++;
  if (!is_digit(c)) return false;
  if (*c->p == '0') c->p++;
  else while (is_digit(c)) c->p++;
  if (c->p < c->end && *c->p == '.') {
    c->p++;
    if (!is_digit(c)) return false;
    while (is_digit(c)) c->p++;
  }
  if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
    c->p++;
    if (c->p < c->end && (*c->p == '+' || *c->p == '-')) c->p++;
    if (!is_digit(c)) return false;
    while (is_digit(c)) c->p++;
  }
  return true;
}

// A string; on success [*start, *start + *len) is its raw content between the quotes.
static bool string(cursor_t *c, const uint8_t **start, size_t *len) {
  if (c->p >= c->end || *c->p != '"') return false;
  *start = ++c->p;
  while (c->p < c->end && *c->p != '"') {
    if (*c->p < 0x20) return false;
    if (*c->p == '\\') {
      c->p++;
      if (c->p >= c->end) return false;
      if (*c->p == 'u') {
        for (int i = 0; i < 4; i++) {
          c->p++;
          if (c->p >= c->end || !strchr("0123456789abcdefABCDEF", *c->p)) return false;
        }
      } else if (!strchr("\"\\/bfnrt", *c->p)) {
        return false;
      }
    }
    c->p++;
  }
  if (c->p >= c->end) return false;
  *len = (size_t)(c->p - *start);
  c->p++;
  return true;
}

static bool value(cursor_t *c, int depth);

// An object. At the top level (`found` set), remembers the last `temperature` member
// whose value is a number.
static bool object(cursor_t *c, int depth, bool *found, double *temperature) {
  c->p++;
  skip_ws(c);
  if (c->p < c->end && *c->p == '}') { c->p++; return true; }
  for (;;) {
    const uint8_t *key;
    size_t key_len;
    skip_ws(c);
    if (!string(c, &key, &key_len)) return false;
    skip_ws(c);
    if (c->p >= c->end || *c->p != ':') return false;
    c->p++;
    skip_ws(c);
    const uint8_t *start = c->p;
    if (!value(c, depth + 1)) return false;
    if (found && key_len == 11 && memcmp(key, "temperature", 11) == 0) {
      *found = (*start == '-' || (*start >= '0' && *start <= '9'));
      if (*found) *temperature = strtod((const char *)start, NULL);
    }
    skip_ws(c);
    if (c->p < c->end && *c->p == ',') { c->p++; continue; }
    if (c->p < c->end && *c->p == '}') { c->p++; return true; }
    return false;
  }
}

static bool value(cursor_t *c, int depth) {
  if (depth > 128 || c->p >= c->end) return false;
  const uint8_t *s;
  size_t n;
  switch (*c->p) {
    case '{': return object(c, depth, NULL, NULL);
    case '[':
      c->p++;
      skip_ws(c);
      if (c->p < c->end && *c->p == ']') { c->p++; return true; }
      for (;;) {
        skip_ws(c);
        if (!value(c, depth + 1)) return false;
        skip_ws(c);
        if (c->p < c->end && *c->p == ',') { c->p++; continue; }
        if (c->p < c->end && *c->p == ']') { c->p++; return true; }
        return false;
      }
    case '"': return string(c, &s, &n);
    case 't': return literal(c, "true");
    case 'f': return literal(c, "false");
    case 'n': return literal(c, "null");
    default: return number(c);
  }
}

// ---- output building -------------------------------------------------------------

typedef struct {
  uint8_t *data;
  size_t len, cap;
  sluice_plugin_types_header_t *headers;
  size_t headers_len, headers_cap;
  sluice_plugin_types_emitted_t *events;
  size_t events_len, events_cap;
  sluice_plugin_types_rejected_t *rejected;
  size_t rejected_len, rejected_cap;
} writer_t;

#define GROW(ptr, len, cap)                                   \
  do {                                                        \
    if ((len) == (cap)) {                                     \
      (cap) = (cap) ? (cap) * 2 : 16;                         \
      (ptr) = realloc((ptr), (cap) * sizeof(*(ptr)));         \
      if (!(ptr)) abort();                                    \
    }                                                         \
  } while (0)

static sluice_plugin_types_span_t push(writer_t *w, const uint8_t *bytes, size_t n) {
  while (w->len + n > w->cap) {
    w->cap = w->cap ? w->cap * 2 : 4096;
    w->data = realloc(w->data, w->cap);
    if (!w->data) abort();
  }
  memcpy(w->data + w->len, bytes, n);
  sluice_plugin_types_span_t span = {(uint32_t)w->len, (uint32_t)n};
  w->len += n;
  return span;
}

static void reject(writer_t *w, uint32_t input, const char *reason) {
  GROW(w->rejected, w->rejected_len, w->rejected_cap);
  sluice_plugin_types_rejected_t *r = &w->rejected[w->rejected_len++];
  r->input = input;
  processor_string_dup(&r->reason, reason);
}

static void emit(writer_t *w, const processor_batch_t *batch, uint32_t index, const uint8_t *payload, size_t n,
                 uint32_t route) {
  const sluice_plugin_types_event_t *in = &batch->events.ptr[index];
  const uint8_t *data = batch->data.ptr;
  GROW(w->events, w->events_len, w->events_cap);
  sluice_plugin_types_emitted_t *out = &w->events[w->events_len++];
  out->input = index;
  out->key.is_some = in->key.is_some;
  if (in->key.is_some) out->key.val = push(w, data + in->key.val.offset, in->key.val.len);
  out->payload = push(w, payload, n);
  out->headers.first = (uint32_t)w->headers_len;
  out->headers.count = in->headers.count;
  for (uint32_t h = 0; h < in->headers.count; h++) {
    const sluice_plugin_types_header_t *header = &batch->headers.ptr[in->headers.first + h];
    GROW(w->headers, w->headers_len, w->headers_cap);
    sluice_plugin_types_header_t *copy = &w->headers[w->headers_len++];
    copy->name = push(w, data + header->name.offset, header->name.len);
    copy->value = push(w, data + header->value.offset, header->value.len);
  }
  out->timestamp_ms = in->timestamp_ms;
  out->origin = push(w, data + in->origin.offset, in->origin.len);
  out->route.is_some = true;
  out->route.val = route;
}

// ---- exports ----------------------------------------------------------------------

bool exports_processor_init(processor_string_t *config, processor_string_t *err) {
  const char *key = "\"threshold_f\"";
  char *text = malloc(config->len + 1);
  memcpy(text, config->ptr, config->len);
  text[config->len] = 0;
  char *at = strstr(text, key);
  if (at) {
    at = strchr(at + strlen(key), ':');
    char *end = NULL;
    threshold_f = at ? strtod(at + 1, &end) : 0;
    if (!at || end == at + 1) {
      processor_string_dup(err, "invalid plugin config: `threshold_f` must be a number");
      free(text);
      processor_string_free(config);
      return false;
    }
  }
  free(text);
  processor_string_free(config);
  return true;
}

bool exports_processor_process(processor_batch_t *batch, processor_output_t *ret, processor_string_t *err) {
  (void)err;
  writer_t w = {0};
  char *line = NULL;
  size_t line_cap = 0;
  for (uint32_t i = 0; i < batch->events.len; i++) {
    const sluice_plugin_types_span_t span = batch->events.ptr[i].payload;
    const uint8_t *payload = batch->data.ptr + span.offset;
    cursor_t c = {payload, payload + span.len};
    bool found = false;
    double celsius = 0;
    skip_ws(&c);
    bool ok = c.p < c.end && *c.p == '{' && object(&c, 0, &found, &celsius);
    skip_ws(&c);
    if (!ok || c.p != c.end) { reject(&w, i, NOT_AN_OBJECT); continue; }
    if (!found) { reject(&w, i, NO_TEMPERATURE); continue; }
    double fahrenheit = celsius * 9.0 / 5.0 + 32.0;
    // The object's closing brace: the last non-whitespace byte.
    size_t body = span.len;
    while (body > 0 && strchr(" \t\n\r", payload[body - 1])) body--;
    body--;
    size_t need = body + 64;
    if (need > line_cap) { line_cap = need * 2; line = realloc(line, line_cap); if (!line) abort(); }
    memcpy(line, payload, body);
    int tail = snprintf(line + body, line_cap - body, ",\"temperature_f\":%.2f}", fahrenheit);
    emit(&w, batch, i, (const uint8_t *)line, body + (size_t)tail, fahrenheit > threshold_f ? 0 : 1);
  }
  free(line);
  processor_batch_free(batch);

  ret->data.ptr = w.data;
  ret->data.len = w.len;
  ret->headers.ptr = w.headers;
  ret->headers.len = w.headers_len;
  ret->events.ptr = w.events;
  ret->events.len = w.events_len;
  ret->rejected.ptr = w.rejected;
  ret->rejected.len = w.rejected_len;
  ret->routes.len = 2;
  ret->routes.ptr = malloc(2 * sizeof(processor_string_t));
  processor_string_dup(&ret->routes.ptr[0], "alerts");
  processor_string_dup(&ret->routes.ptr[1], "normal");
  return true;
}
