"""units-router in Python: the same plugin as plugins/units-router (Rust), byte for byte.

Adds `temperature_f` (from `temperature` in Celsius) and routes each event to `alerts`
above `threshold_f`, else to `normal`. The output is defined textually (see the Rust
version) so that every language prints the same bytes.
"""
import sluice_sdk as sluice

NOT_AN_OBJECT = "payload is not a JSON object"
NO_TEMPERATURE = "missing numeric field `temperature`"


class UnitsRouter(sluice.Processor):
    def init(self, config):
        try:
            self.threshold_f = float(config.get("threshold_f", 176.0))
        except (TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"invalid plugin config: {error}")

    def process(self, event, out):
        try:
            value = event.json()
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise sluice.Reject(NOT_AN_OBJECT)
        celsius = value.get("temperature")
        if isinstance(celsius, bool) or not isinstance(celsius, (int, float)):
            raise sluice.Reject(NO_TEMPERATURE)
        fahrenheit = float(celsius) * 9.0 / 5.0 + 32.0
        text = event.text().rstrip()
        if not text.endswith("}"):
            raise sluice.Reject(NOT_AN_OBJECT)
        body = f'{text[:-1]},"temperature_f":{fahrenheit:.2f}}}'
        out.emit(body, route="alerts" if fahrenheit > self.threshold_f else "normal")


WitWorld = sluice.export(UnitsRouter)
