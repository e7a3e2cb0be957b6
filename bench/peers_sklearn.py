"""The seed recipe as a plain Python pipeline, for bench/peers.sh: PIL decode and resize,
ONNX Runtime in batches of 64, scikit-learn StandardScaler, PCA at 0.99 variance, CSV.

    python bench/peers_sklearn.py PHOTOS MODEL OUTPUT.csv [SIZE] [THREADS]

Prints one line of JSON: photos, seconds (end to end, from listing to the CSV written), k.
"""
import csv
import json
import pathlib
import sys
import time

started = time.perf_counter()

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

photos_dir, model_path, output = sys.argv[1:4]
size = int(sys.argv[4]) if len(sys.argv) > 4 else 224
threads = int(sys.argv[5]) if len(sys.argv) > 5 else 0
BATCH = 64

paths = sorted(p for p in pathlib.Path(photos_dir).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
options = ort.SessionOptions()
if threads:
    options.intra_op_num_threads = threads
session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
input_name = session.get_inputs()[0].name


def tensor(path):
    image = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32)
    return ((pixels - 127.0) / 128.0).transpose(2, 0, 1)  # the `lite` preset, NCHW


features = []
for first in range(0, len(paths), BATCH):
    batch = np.stack([tensor(p) for p in paths[first:first + BATCH]])
    features.append(session.run(None, {input_name: batch})[0])
features = np.concatenate(features).astype(np.float64)

scaled = StandardScaler().fit_transform(features)
pca = PCA(n_components=0.99, svd_solver="full")
components = pca.fit_transform(scaled)

with open(output, "w", newline="") as out:
    writer = csv.writer(out)
    writer.writerow(["path", "label"] + [f"pc_{i + 1}" for i in range(components.shape[1])])
    for path, row in zip(paths, components):
        writer.writerow([str(path), path.parent.name] + [f"{v:.7g}" for v in row])

print(json.dumps({"photos": len(paths), "seconds": time.perf_counter() - started, "k": int(components.shape[1])}))
