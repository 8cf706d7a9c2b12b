// units-router in C: the same plugin as plugins/units-router (Rust), byte for byte.
//
// Adds `temperature_f` (from `temperature` in Celsius) and routes each event to
// `alerts` above `threshold_f`, else to `normal`. The output is defined textually (see
// the Rust version) so that every language prints the same bytes. A small JSON
// validator stands in for a JSON library: the payload must be one JSON object.

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice.h"

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
  sluice_output_t out = {0};
  char *line = NULL;
  size_t line_cap = 0;
  for (uint32_t i = 0; i < batch->events.len; i++) {
    const sluice_bytes_t payload = sluice_payload(batch, i);
    cursor_t c = {payload.ptr, payload.ptr + payload.len};
    bool found = false;
    double celsius = 0;
    skip_ws(&c);
    bool ok = c.p < c.end && *c.p == '{' && object(&c, 0, &found, &celsius);
    skip_ws(&c);
    if (!ok || c.p != c.end) { sluice_reject(&out, i, NOT_AN_OBJECT); continue; }
    if (!found) { sluice_reject(&out, i, NO_TEMPERATURE); continue; }
    double fahrenheit = celsius * 9.0 / 5.0 + 32.0;
    // The object's closing brace: the last non-whitespace byte.
    size_t body = payload.len;
    while (body > 0 && strchr(" \t\n\r", payload.ptr[body - 1])) body--;
    body--;
    size_t need = body + 64;
    if (need > line_cap) { line_cap = need * 2; line = realloc(line, line_cap); if (!line) abort(); }
    memcpy(line, payload.ptr, body);
    int tail = snprintf(line + body, line_cap - body, ",\"temperature_f\":%.2f}", fahrenheit);
    sluice_emit(&out, batch, i, (const uint8_t *)line, body + (size_t)tail, fahrenheit > threshold_f ? "alerts" : "normal");
  }
  free(line);
  sluice_finish(&out, ret);
  processor_batch_free(batch);
  return true;
}
