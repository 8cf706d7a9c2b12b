"""Write Sluice processor plugins in Python (componentize-py).

A plugin is a class and one export line::

    import sluice_sdk as sluice

    class Hot(sluice.Processor):
        def init(self, config):
            self.threshold = float(config.get("threshold", 80))

        def process(self, event, out):
            if event.json()["temperature"] > self.threshold:
                out.forward(event, route="alerts")

    WitWorld = sluice.export(Hot)

The host hands plugins *batches*: one byte buffer and spans into it, so that one
boundary crossing serves many events (see `wit/plugin.wit`). This module keeps that
layout out of plugin code: events arrive as `Event` objects and results go to an
`Output`, which writes the spans back. `log`, `metrics` and `state` wrap the host's
imports.
"""

import json as _json

from componentize_py_types import Err
from wit_world.imports import limits as _limits
from wit_world.imports import log as _log
from wit_world.imports import metrics as _metrics
from wit_world.imports import state as _state
from wit_world.imports.types import Emitted, Header, HeaderRange, Output as _WitOutput, Rejected, Span

__all__ = ["Event", "Output", "Processor", "Reject", "export", "log", "metrics", "state", "limits"]


class Reject(Exception):
    """Raised from `process`: the event goes to the stage's dead-letter route with this reason."""


class Event:
    """One input event. Reading a field slices the batch's shared buffer on demand."""

    __slots__ = ("_data", "_raw", "_headers", "index")

    def __init__(self, batch, raw, index):
        self._data = batch.data
        self._headers = batch.headers
        self._raw = raw
        #: Position in the batch (what the host acknowledges and dead-letters by).
        self.index = index

    def _bytes(self, span):
        return self._data[span.offset : span.offset + span.len]

    @property
    def payload(self) -> bytes:
        span = self._raw.payload
        return self._data[span.offset : span.offset + span.len]

    def text(self) -> str:
        """The payload as UTF-8 text (a `ValueError` if it is not UTF-8)."""
        return self.payload.decode("utf-8")

    def json(self):
        """The payload parsed as JSON (a `ValueError` if it is not JSON)."""
        return _json.loads(self.payload)

    @property
    def key(self):
        """The key as bytes, or None."""
        key = self._raw.key
        return None if key is None else self._bytes(key)

    @property
    def headers(self):
        """The headers as a list of `(name, value)`: `str` names, `bytes` values."""
        first, count = self._raw.headers.first, self._raw.headers.count
        return [
            (self._bytes(h.name).decode("utf-8"), self._bytes(h.value))
            for h in self._headers[first : first + count]
        ]

    def header(self, name: str):
        """The value of the first header called `name`, or None."""
        for header_name, value in self.headers:
            if header_name == name:
                return value
        return None

    @property
    def timestamp(self) -> int:
        """Event time in milliseconds since the Unix epoch."""
        return self._raw.timestamp_ms

    @property
    def origin(self) -> str:
        """Where the event came from (a topic, a source stage)."""
        return self._bytes(self._raw.origin).decode("utf-8")


class Output:
    """What a plugin returns for a batch: emitted events, each on a route, and rejections."""

    def __init__(self):
        self._data = bytearray()
        self._headers = []
        self._events = []
        self._routes = {}
        self._rejected = []
        self._origin = (None, None)
        #: The event `process` is handling: the default source of `emit`.
        self.current = None

    def _span(self, raw) -> Span:
        offset = len(self._data)
        self._data += raw
        return Span(offset, len(raw))

    def _route(self, name):
        if name is None:
            return None
        index = self._routes.get(name)
        if index is None:
            index = self._routes[name] = len(self._routes)
        return index

    def forward(self, event: Event, route=None) -> None:
        """Pass `event` on unchanged, to the default output or to `route`."""
        self.emit(event.payload, route, source=event)

    def emit(self, payload, route=None, *, source: Event = None) -> None:
        """Emit an event derived from `source` (by default the event being processed):
        same key, headers, time and origin, a new payload. `payload` is bytes, a str
        (UTF-8) or any other value, which is written as compact JSON."""
        source = source or self.current
        if source is None:
            raise ValueError("emit outside process: pass source=EVENT")
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        elif not isinstance(payload, (bytes, bytearray)):
            payload = _json.dumps(payload, separators=(",", ":")).encode("utf-8")
        raw = source._raw
        data = source._data
        key = raw.key
        if key is not None:
            key = self._span(data[key.offset : key.offset + key.len])
        body = self._span(payload)
        first, count = raw.headers.first, raw.headers.count
        headers = self._headers
        start = len(headers)
        for header in source._headers[first : first + count]:
            headers.append(Header(self._span(source._bytes(header.name)), self._span(source._bytes(header.value))))
        # Events of one batch mostly share their origin: write it once.
        origin_bytes = data[raw.origin.offset : raw.origin.offset + raw.origin.len]
        cached, span = self._origin
        if cached != origin_bytes:
            span = self._span(origin_bytes)
            self._origin = (origin_bytes, span)
        self._events.append(
            Emitted(source.index, key, body, HeaderRange(start, count), raw.timestamp_ms, span, self._route(route))
        )

    def reject(self, event: Event, reason: str) -> None:
        """Refuse `event`: the host sends it to the dead-letter route with `reason`."""
        self._rejected.append(Rejected(event.index, str(reason)))

    def _finish(self) -> _WitOutput:
        return _WitOutput(bytes(self._data), self._headers, self._events, list(self._routes), self._rejected)


class Processor:
    """Base class of transforms, filters, flat-maps and routers."""

    def init(self, config: dict) -> None:
        """Called once with the stage's `config` table. An exception stops the stage."""

    def process(self, event: Event, out: Output) -> None:
        """Handle one event: emit zero, one or many outputs. An exception rejects the
        event (dead-letter route, the exception's message as the reason)."""
        raise NotImplementedError("a Processor overrides process or process_batch")

    def process_batch(self, events, out: Output) -> None:
        """Handle a whole batch (a list of `Event`). Override it for logic that spans
        events (windows); the default calls `process` for every event."""
        for event in events:
            out.current = event
            try:
                self.process(event, out)
            except Exception as error:  # an event's error is that event's rejection
                out.reject(event, str(error) or type(error).__name__)
        out.current = None


def export(plugin_class):
    """The world export componentize-py looks for: `WitWorld = export(MyProcessor)`."""
    instance = []

    class WitWorld:
        def init(self, config: str) -> None:
            try:
                settings = _json.loads(config)
            except ValueError as error:
                raise Err(f"invalid plugin config: {error}")
            plugin = plugin_class()
            try:
                plugin.init(settings)
            except Err:
                raise
            except Exception as error:
                raise Err(str(error) or type(error).__name__)
            instance[:] = [plugin]

        def process(self, batch) -> _WitOutput:
            if not instance:
                raise Err("the plugin was called before init")
            out = Output()
            events = [Event(batch, raw, index) for index, raw in enumerate(batch.events)]
            try:
                instance[0].process_batch(events, out)
            except Err:
                raise
            except Exception as error:
                raise Err(str(error) or type(error).__name__)
            return out._finish()

    return WitWorld


def _fields(fields):
    return [(name, str(value)) for name, value in fields.items()]


class _Log:
    """Structured logs into the host's `tracing`, tagged with the stage: `log.info("msg", key=value)`."""

    def trace(self, message: str, **fields) -> None:
        _log.log(_log.Level.TRACE, message, _fields(fields))

    def debug(self, message: str, **fields) -> None:
        _log.log(_log.Level.DEBUG, message, _fields(fields))

    def info(self, message: str, **fields) -> None:
        _log.log(_log.Level.INFO, message, _fields(fields))

    def warn(self, message: str, **fields) -> None:
        _log.log(_log.Level.WARN, message, _fields(fields))

    def error(self, message: str, **fields) -> None:
        _log.log(_log.Level.ERROR, message, _fields(fields))


class _Metrics:
    """Plugin metrics, exported as `sluice_plugin_NAME` with the stage as a label."""

    def counter(self, name: str, value: int = 1) -> None:
        _metrics.counter_add(name, value)

    def gauge(self, name: str, value: float) -> None:
        _metrics.gauge_set(name, float(value))


class _State:
    """The stage's durable key-value state; one call's writes commit when it succeeds."""

    def get(self, key: str):
        return _state.get(key)

    def put(self, key: str, value) -> None:
        _state.put(key, value.encode("utf-8") if isinstance(value, str) else bytes(value))

    def delete(self, key: str) -> None:
        _state.delete(key)

    def scan(self, prefix: str, limit: int = 1000):
        """Up to `limit` `(key, value)` pairs whose key starts with `prefix`, in key order."""
        return _state.scan_prefix(prefix, limit)

    def get_json(self, key: str, default=None):
        value = _state.get(key)
        return default if value is None else _json.loads(value)

    def put_json(self, key: str, value) -> None:
        _state.put(key, _json.dumps(value, separators=(",", ":")).encode("utf-8"))


log = _Log()
metrics = _Metrics()
state = _State()


def limits():
    """The stage's quotas (memory, deadline, state and output sizes)."""
    return _limits.get()
