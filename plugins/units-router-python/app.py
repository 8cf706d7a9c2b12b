"""units-router in Python: the same plugin as plugins/units-router (Rust), byte for byte.

Adds `temperature_f` (from `temperature` in Celsius) and routes each event to `alerts`
above `threshold_f`, else to `normal`. The output is defined textually (see the Rust
version) so that every language prints the same bytes.
"""
import json

from componentize_py_types import Err
from wit_world.imports.types import Batch, Emitted, Header, HeaderRange, Output, Rejected, Span

NOT_AN_OBJECT = "payload is not a JSON object"
NO_TEMPERATURE = "missing numeric field `temperature`"
ROUTES = ["alerts", "normal"]

threshold_f = 176.0


class Writer:
    """Builds an `Output`: one byte buffer, spans into it (the WIT batch layout)."""

    def __init__(self):
        self.data = bytearray()
        self.headers = []
        self.events = []
        self.rejected = []

    def span(self, raw: bytes) -> Span:
        offset = len(self.data)
        self.data += raw
        return Span(offset, len(raw))

    def emit(self, batch: Batch, index: int, payload: bytes, route: int) -> None:
        event = batch.events[index]
        data = batch.data

        def raw(span: Span) -> bytes:
            return data[span.offset : span.offset + span.len]

        key = self.span(raw(event.key)) if event.key is not None else None
        body = self.span(payload)
        first = len(self.headers)
        for header in batch.headers[event.headers.first : event.headers.first + event.headers.count]:
            self.headers.append(Header(self.span(raw(header.name)), self.span(raw(header.value))))
        origin = self.span(raw(event.origin))
        self.events.append(
            Emitted(index, key, body, HeaderRange(first, event.headers.count), event.timestamp_ms, origin, route)
        )

    def output(self) -> Output:
        return Output(bytes(self.data), self.headers, self.events, ROUTES, self.rejected)


class WitWorld:
    def init(self, config: str) -> None:
        global threshold_f
        try:
            settings = json.loads(config)
            threshold_f = float(settings.get("threshold_f", 176.0))
        except (ValueError, TypeError, AttributeError) as error:
            raise Err(f"invalid plugin config: {error}")

    def process(self, batch: Batch) -> Output:
        out = Writer()
        for index, event in enumerate(batch.events):
            payload = batch.data[event.payload.offset : event.payload.offset + event.payload.len]
            try:
                value = json.loads(payload)
            except ValueError:
                value = None
            if not isinstance(value, dict):
                out.rejected.append(Rejected(index, NOT_AN_OBJECT))
                continue
            celsius = value.get("temperature")
            if isinstance(celsius, bool) or not isinstance(celsius, (int, float)):
                out.rejected.append(Rejected(index, NO_TEMPERATURE))
                continue
            fahrenheit = float(celsius) * 9.0 / 5.0 + 32.0
            text = payload.decode("utf-8").rstrip()
            if not text.endswith("}"):
                out.rejected.append(Rejected(index, NOT_AN_OBJECT))
                continue
            body = f'{text[:-1]},"temperature_f":{fahrenheit:.2f}}}'.encode()
            out.emit(batch, index, body, 0 if fahrenheit > threshold_f else 1)
        return out.output()
