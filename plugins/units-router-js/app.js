// units-router in JavaScript: the same plugin as plugins/units-router (Rust), byte for byte.
//
// Adds `temperature_f` (from `temperature` in Celsius) and routes each event to `alerts`
// above `threshold_f`, else to `normal`. The output is defined textually (see the Rust
// version) so that every language prints the same bytes.

import { Processor, Reject, exportProcessor } from "./sluice.js";

const NOT_AN_OBJECT = "payload is not a JSON object";
const NO_TEMPERATURE = "missing numeric field `temperature`";

class UnitsRouter extends Processor {
  init(config) {
    this.thresholdF = Number(config.threshold_f ?? 176.0);
  }

  process(event, out) {
    const text = event.text();
    let value;
    try {
      value = JSON.parse(text);
    } catch {
      value = undefined;
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) throw new Reject(NOT_AN_OBJECT);
    const celsius = value.temperature;
    if (typeof celsius !== "number") throw new Reject(NO_TEMPERATURE);
    const fahrenheit = (celsius * 9.0) / 5.0 + 32.0;
    const trimmed = text.trimEnd();
    if (!trimmed.endsWith("}")) throw new Reject(NOT_AN_OBJECT);
    const body = `${trimmed.slice(0, -1)},"temperature_f":${fahrenheit.toFixed(2)}}`;
    out.emit(body, fahrenheit > this.thresholdF ? "alerts" : "normal");
  }
}

export const { init, process } = exportProcessor(UnitsRouter);
