"""The benchmark's `map` in quixstreams: what a Python team would run instead of Sluice.

Reads JSON telemetry from IN_TOPIC, renames temperature to temperature_c in Fahrenheit,
sets site, and writes to OUT_TOPIC: the same transform as the Wasm `map` stage.
"""
import os

from quixstreams import Application


def shape(value):
    celsius = value.pop("temperature")
    value["temperature_c"] = celsius * 9.0 / 5.0 + 32.0
    value["site"] = "plant-1"
    return value


app = Application(
    broker_address=os.environ["BROKER"],
    consumer_group=os.environ["GROUP"],
    auto_offset_reset="earliest",
    auto_create_topics=False,
    use_changelog_topics=False,
)
source = app.topic(os.environ["IN_TOPIC"], value_deserializer="json")
sink = app.topic(os.environ["OUT_TOPIC"], value_serializer="json")
app.dataframe(source).apply(shape).to_topic(sink)
app.run()
