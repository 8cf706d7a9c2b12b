#!/usr/bin/env python3
"""Train the `isolation_forest` model, the heavier one the inference benchmark uses.

An unsupervised scikit-learn IsolationForest of 50 trees, fitted on normal telemetry
with plugins/sensor-sim's distributions (see train_anomaly.py), exported with skl2onnx
and one `Neg` node appended, so that its output reads like the `anomaly` plugin
expects: `outlier_score` [rows, 1], higher is more anomalous, above 0 an outlier
(scikit-learn's decision_function, negated).

Where models/anomaly.onnx costs well under a microsecond a row, this one costs tens of
microseconds: what a real model costs, so that the pipeline's own overhead can be seen
against the model's time (docs/benchmarks.md, "ONNX inference").

Writes models/isolation_forest.onnx and prints its held-out metrics. Deterministic for a
given set of package versions (models/requirements.txt).

    python3 models/train_isolation_forest.py
"""

import hashlib
import json
import pathlib
import sys

import numpy as np
import onnx
from onnx import helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import IsolationForest
from sklearn.metrics import precision_score, recall_score

from train_anomaly import FEATURES, telemetry

HERE = pathlib.Path(__file__).resolve().parent


def main():
    rng = np.random.default_rng(20261207)
    x_train, _ = telemetry(20_000, 0.0, rng)
    x_test, y_test = telemetry(100_000, 0.02, rng)

    model = IsolationForest(n_estimators=50, contamination=0.001, random_state=7)
    model.fit(x_train)
    predicted = (model.predict(x_test) == -1).astype(np.int64)
    metrics = {
        "held_out_rows": int(len(y_test)),
        "held_out_anomalies": int(y_test.sum()),
        "precision": float(precision_score(y_test, predicted)),
        "recall": float(recall_score(y_test, predicted)),
    }

    exported = to_onnx(
        model,
        initial_types=[("features", FloatTensorType([None, len(FEATURES)]))],
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    graph = exported.graph
    scores = next(output for output in graph.output if output.name == "scores")
    graph.node.append(helper.make_node("Neg", ["scores"], ["outlier_score"], name="outlier"))
    graph.output.append(
        helper.make_tensor_value_info("outlier_score", onnx.TensorProto.FLOAT, [None, 1])
    )
    graph.output.remove(scores)
    exported.doc_string = "Sluice isolation_forest model: IsolationForest on sensor-sim telemetry " + json.dumps(FEATURES)
    # skl2onnx lists the operator sets in set order, which varies between runs: sorted,
    # the same package versions give the same bytes.
    opsets = sorted((opset.domain, opset.version) for opset in exported.opset_import)
    del exported.opset_import[:]
    exported.opset_import.extend(helper.make_opsetid(domain, version) for domain, version in opsets)
    onnx.checker.check_model(exported)
    out = HERE / "isolation_forest.onnx"
    out.write_bytes(exported.SerializeToString())
    metrics["bytes"] = out.stat().st_size
    metrics["sha256"] = hashlib.sha256(out.read_bytes()).hexdigest()
    json.dump(metrics, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
