#!/usr/bin/env bash
# Quality of the features: runs `fruitpipe run` on a Fruits-360 sample with both splits and
# prints the 1-NN top-1 accuracy (cosine) of its Test photos against its Training photos in
# PCA space, with k.
#
#   [MODEL=file.onnx] bench/quality.sh [PHOTOS] [extra fruitpipe run flags...]
#   PHOTOS defaults to ../shared/data/fruits360-sample (4,250 photos) when present, else the
#   510 photos shipped in data/.
set -euo pipefail
cd "$(dirname "$0")/.."
photos=${1:-}
[ $# -gt 0 ] && shift
if [ -z "$photos" ]; then
  photos=data/fruits360-sample
  [ -d ../shared/data/fruits360-sample ] && photos=../shared/data/fruits360-sample
fi
scripts/setup.sh >/dev/null
cargo build --release --locked --bin fruitpipe --example knn_accuracy 2>&1 | tail -1
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
target/release/fruitpipe run --input "$photos" --output "$out" \
  --model "${MODEL:-data/models/efficientnet_lite0_features.onnx}" "$@" 2>&1 | tail -1
python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print(f\"k = {s['k']}, explained variance {s['cumulative_explained_variance']:.4f}, {s['images_used']} photos\")" "$out/summary.json"
target/release/examples/knn_accuracy "$out/features_pca.csv"
