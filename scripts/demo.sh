#!/usr/bin/env bash
# Sets up fruitpipe and runs it on the 510 sample photos shipped in data/, with the
# shipped EfficientNet-Lite0 model, in one process: no cluster, no cloud account.
#   OUTPUT   where to write the results (default: /tmp/fruitpipe-demo)
set -euo pipefail
cd "$(dirname "$0")/.."
output=${OUTPUT:-/tmp/fruitpipe-demo}
scripts/setup.sh
cargo build --release --locked --bin fruitpipe
target/release/fruitpipe run \
  --input data/fruits360-sample \
  --output "$output" \
  --model data/models/efficientnet_lite0_features.onnx
echo
echo "CSV: $output/features_pca.csv ($(($(wc -l <"$output/features_pca.csv") - 1)) photos)"
echo "also: $output/report.html (open it in a browser), $output/pca_model.json, $output/summary.json, $output/errors.csv"
echo "try the app's engine on it:"
echo "  target/release/fruitpipe identify --from $output data/fruits360-sample/Test/Kiwi/*.jpg"
echo "  target/release/fruitpipe serve --from $output --listen 127.0.0.1:8080   # then open http://127.0.0.1:8080/"
