#!/usr/bin/env python3
"""Train the `anomaly` model on synthetic telemetry and export it to ONNX.

The telemetry follows plugins/sensor-sim exactly (its distributions, not its random
stream): each device has a baseline temperature in [19, 25); a normal reading is the
baseline +- 1 degree with vibration in [0.5, 2.0); an anomalous one (overheating and
shaking) has temperature in [85, 120) and vibration in [8, 15); battery drifts in
[0, 100] and carries no signal. sensor-sim marks anomalies with the header
`sim-anomaly: true`, which is the ground truth here too.

Writes models/anomaly.onnx and prints the held-out metrics that models/anomaly.md
states. Deterministic for a given set of package versions (models/requirements.txt).

    python3 -m pip install -r models/requirements.txt
    python3 models/train_anomaly.py
"""

import hashlib
import json
import pathlib
import sys

import numpy as np
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import precision_score, recall_score

HERE = pathlib.Path(__file__).resolve().parent
FEATURES = ["temperature", "vibration", "battery"]


def telemetry(rows, anomaly_rate, rng):
    """Readings like sensor-sim's: (features float32 [rows, 3], labels int [rows])."""
    baseline = rng.uniform(19.0, 25.0, rows)
    anomaly = rng.random(rows) < anomaly_rate
    noise = rng.random(rows) - 0.5
    temperature = np.where(anomaly, 85.0 + rng.random(rows) * 35.0, baseline + noise * 2.0)
    vibration = np.where(anomaly, 8.0 + rng.random(rows) * 7.0, 0.5 + rng.random(rows) * 1.5)
    battery = rng.uniform(0.0, 100.0, rows)
    features = np.round(np.stack([temperature, vibration, battery], axis=1), 2)
    return features.astype(np.float32), anomaly.astype(np.int64)


def main():
    rng = np.random.default_rng(20261129)
    # Training oversamples anomalies (20%) so that the trees see enough of them;
    # held-out data has sensor-sim's default rate (2%).
    x_train, y_train = telemetry(20_000, 0.20, rng)
    x_test, y_test = telemetry(100_000, 0.02, rng)

    model = RandomForestClassifier(n_estimators=20, max_depth=6, random_state=7)
    model.fit(x_train, y_train)
    predicted = model.predict(x_test)
    metrics = {
        "held_out_rows": int(len(y_test)),
        "held_out_anomalies": int(y_test.sum()),
        "precision": float(precision_score(y_test, predicted)),
        "recall": float(recall_score(y_test, predicted)),
    }

    onnx_model = to_onnx(
        model,
        initial_types=[("features", FloatTensorType([None, len(FEATURES)]))],
        options={id(model): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    onnx_model.doc_string = "Sluice anomaly model: RandomForest on sensor-sim telemetry " + json.dumps(FEATURES)
    out = HERE / "anomaly.onnx"
    out.write_bytes(onnx_model.SerializeToString())
    metrics["bytes"] = out.stat().st_size
    metrics["sha256"] = hashlib.sha256(out.read_bytes()).hexdigest()
    json.dump(metrics, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
