#!/usr/bin/env python3
"""The `train` job of examples/workflow: the next version of the `anomaly` model, fitted
on one slot of the training set that the `trainset` job wrote.

    python3 train.py --trainset file:///tmp/sluice-workflow/lake/trainset \\
        --from 2026-12-06T01:00:00Z --to 2026-12-07T01:00:00Z --out models/anomaly-1.onnx

Reads the Parquet objects under --trainset (file://, or s3:// with the usual AWS_*
variables: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION) whose
`dt=`/`hour=` partition overlaps [--from, --to), and keeps the readings whose `ts` lies
in that range, each (device_id, seq) once (a slot's training set written twice counts
once).

The features are those of models/anomaly.onnx (`temperature`, `vibration`, `battery`,
as f32); the label is the stored `anomaly` flag, the verdict of the version that scored
the reading live. The model is a logistic regression on standardised features: its
scores are graded probabilities (the committed random forest says 0 or 1 on readings
this clear-cut), so a reading scored by the new version tells which version scored it.
Inputs and outputs are those of models/anomaly.onnx: `features` f32 [-1, 3] in, `label`
i64 [-1] and `probabilities` f32 [-1, 2] out.

Writes --out and then --out.sha256 (as sha256sum prints it), which the deploy-model
job's `sha256_file` pins. Bad input (no readings in the slot, a column missing or
empty, one class only) fails with the reason on stderr and exit status 1, and writes
nothing. Package versions: models/requirements.txt.
"""

import argparse
import datetime
import hashlib
import os
import pathlib
import re
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

FEATURES = ["temperature", "vibration", "battery"]
COLUMNS = ["device_id", "seq", "ts", *FEATURES, "anomaly"]
MIN_READINGS = 20


class BadInput(Exception):
    """The training set cannot make a model; the message says why."""


def time(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(datetime.timezone.utc)


def in_slot(path, start, end):
    """Whether the object's dt=/hour= partition overlaps [start, end) (no partition: yes)."""
    date = re.search(r"dt=(\d{4}-\d{2}-\d{2})", path)
    if not date:
        return True
    hour = re.search(r"hour=(\d{1,2})", path)
    first = datetime.datetime.fromisoformat(date.group(1)).replace(tzinfo=datetime.timezone.utc)
    length = datetime.timedelta(days=1)
    if hour:
        first += datetime.timedelta(hours=int(hour.group(1)))
        length = datetime.timedelta(hours=1)
    return first < end and start < first + length


def read(url, start, end):
    """The slot's readings: one table of COLUMNS, each (device_id, seq) once."""
    filesystem, root = pafs.FileSystem.from_uri(url)
    try:
        listed = filesystem.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    except OSError as error:
        raise BadInput(f"cannot list the training set {url}: {error}") from error
    paths = sorted(
        info.path for info in listed
        if info.type == pafs.FileType.File and info.path.endswith(".parquet") and in_slot(info.path, start, end)
    )
    tables = []
    for path in paths:
        try:
            table = pq.read_table(path, filesystem=filesystem)
        except (OSError, pa.ArrowException) as error:
            raise BadInput(f"cannot read {path}: {error}") from error
        missing = [column for column in COLUMNS if column not in table.column_names]
        if missing:
            raise BadInput(f"{path} has no column {', '.join(missing)}: not an object of the training set")
        tables.append(table.select(COLUMNS))
    if not tables:
        raise BadInput(f"no training set objects under {url} for {start:%Y-%m-%dT%H:%M:%SZ} … {end:%Y-%m-%dT%H:%M:%SZ}")
    table = pa.concat_tables(tables, promote_options="permissive")
    ts = pc.cast(table["ts"], pa.timestamp("ms", tz="UTC"))
    table = table.filter(pc.and_(pc.greater_equal(ts, pa.scalar(start, pa.timestamp("ms", tz="UTC"))),
                                 pc.less(ts, pa.scalar(end, pa.timestamp("ms", tz="UTC")))))
    # One row per reading: a trainset run again for its slot stored its readings twice.
    values = [*FEATURES, "anomaly"]
    once = table.group_by(["device_id", "seq"], use_threads=False).aggregate([(c, "first") for c in values])
    return pa.table({c: once[f"{c}_first"] for c in values})


def train(table):
    """The fitted model, after checking that the readings can make one."""
    if table.num_rows < MIN_READINGS:
        raise BadInput(f"{table.num_rows} readings in the slot; at least {MIN_READINGS} are needed")
    for column in [*FEATURES, "anomaly"]:
        nulls = table[column].null_count
        if nulls:
            raise BadInput(f"{nulls} of {table.num_rows} readings have no `{column}`")
    x = np.stack([table[c].to_numpy().astype(np.float32) for c in FEATURES], axis=1)
    y = table["anomaly"].to_numpy(zero_copy_only=False).astype(np.int64)
    if y.min() == y.max():
        kind = "anomalies" if y[0] else "normal readings"
        raise BadInput(f"all {len(y)} readings are {kind}: a classifier needs both")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1))
    model.fit(x, y)
    return model, x, y


def export(model, out, readings):
    """Write the ONNX file and then its .sha256 beside it, each under a temporary name."""
    onnx_model = to_onnx(
        model,
        initial_types=[("features", FloatTensorType([None, len(FEATURES)]))],
        options={id(model.steps[-1][1]): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    onnx_model.doc_string = f"Sluice anomaly model retrained by examples/workflow on {readings} readings"
    data = onnx_model.SerializeToString()
    out.parent.mkdir(parents=True, exist_ok=True)
    sha256 = hashlib.sha256(data).hexdigest()
    for path, content in [(out, data), (out.with_name(out.name + ".sha256"), f"{sha256}  {out.name}\n".encode())]:
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(content)
        os.replace(partial, path)
    return sha256


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trainset", required=True, help="URL of the training set (file:// or s3://)")
    parser.add_argument("--from", dest="start", type=time, required=True, help="slot start, RFC 3339")
    parser.add_argument("--to", dest="end", type=time, required=True, help="slot end, RFC 3339")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="the .onnx file to write")
    args = parser.parse_args()
    try:
        table = read(args.trainset, args.start, args.end)
        model, x, y = train(table)
    except BadInput as error:
        print(f"train.py: bad input, no model written: {error}", file=sys.stderr)
        return 1
    accuracy = float((model.predict(x) == y).mean())
    sha256 = export(model, args.out, len(y))
    print(f"trained on {len(y)} readings ({int(y.sum())} anomalies), training accuracy {accuracy:.4f}")
    print(f"wrote {args.out} (sha256 {sha256}) and {args.out.name}.sha256")
    return 0


if __name__ == "__main__":
    sys.exit(main())
