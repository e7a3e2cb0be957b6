"""Reads a fruitpipe output's Parquet dataset with pyarrow and pandas, as a data scientist
would, and checks it against features_pca.csv: the same rows, labels and values (to 1e-6),
the documented schema, encoding and metadata. Run by job-runner/tests/parquet.rs.

    python check_parquet.py OUTPUT_DIR EXPECTED_PARTS
"""
import json
import pathlib
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

output, expected_parts = pathlib.Path(sys.argv[1]), int(sys.argv[2])
dataset = output / "features_pca.parquet"
parts = sorted(dataset.glob("part-*.parquet"))
assert len(parts) == expected_parts, f"{len(parts)} parts, expected {expected_parts}"

# The three lines of the README.
frame = pd.read_parquet(dataset)
csv = pd.read_csv(output / "features_pca.csv")
assert list(frame.columns) == list(csv.columns), (frame.columns, csv.columns)

frame = frame.sort_values("path").reset_index(drop=True)
csv = csv.sort_values("path").reset_index(drop=True)
assert len(frame) == len(csv) > 0, (len(frame), len(csv))
assert (frame["path"] == csv["path"]).all()
assert (frame["label"].astype(str) == csv["label"]).all()
pcs = [c for c in csv.columns if c.startswith("pc_")]
difference = np.abs(frame[pcs].to_numpy(np.float64) - csv[pcs].to_numpy(np.float64)).max()
assert difference <= 1e-6, f"values differ by {difference}"

schema = pq.read_schema(parts[0])
assert schema.field("path").type == pa.string(), schema
assert schema.field("pc_1").type == pa.float32(), schema
summary = json.loads((output / "summary.json").read_text())
metadata = {k.decode(): v.decode() for k, v in schema.metadata.items()}
assert metadata["fruitpipe.k"] == str(summary["k"]), metadata
assert metadata["fruitpipe.whiten"] == str(summary["whiten"]).lower(), metadata
model = json.loads((output / "pca_model.json").read_text())
assert metadata["fruitpipe.feature_model_sha256"] == model["feature_model"]["sha256"], metadata

for part in parts:
    meta = pq.ParquetFile(part).metadata
    for group in range(meta.num_row_groups):
        label = meta.row_group(group).column(1)
        assert label.compression == "ZSTD", label.compression
        assert "RLE_DICTIONARY" in label.encodings or "PLAIN_DICTIONARY" in label.encodings, label.encodings
print(f"parquet: {len(frame)} rows in {len(parts)} parts, k = {len(pcs)}, max |parquet - csv| = {difference:.2e}")
