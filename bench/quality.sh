#!/usr/bin/env bash
# Quality of the features: runs `fruitpipe run` on a Fruits-360 sample with both splits and
# prints the 1-NN top-1 accuracy of its Test photos against its Training photos in PCA
# space, by cosine and by Euclidean distance, for plain and whitened components, at k = 64
# and at the default k (or the --components / --variance given). Every later change of a
# default is chosen by this table.
#
#   [MODEL=file.onnx] bench/quality.sh [PHOTOS] [extra fruitpipe run flags...]
#   PHOTOS defaults to ../shared/data/fruits360-sample (4,250 photos) when present, else the
#   510 photos shipped in data/. ONLY=whiten (or ONLY=plain) runs only that row of the
#   default k.
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

measure() { # label flags... -> one line of the table
  local label=$1
  shift
  target/release/fruitpipe run --input "$photos" --output "$out" \
    --model "${MODEL:-data/models/efficientnet_lite0_features.onnx}" "$@" >/dev/null 2>&1
  printf '%-34s %s\n' "$label" "$(target/release/examples/knn_accuracy "$out/features_pca.csv")"
}

own_k=false
for flag in "$@"; do
  case $flag in --components* | --variance*) own_k=true ;; esac
done
echo "photos: $photos; model: ${MODEL:-data/models/efficientnet_lite0_features.onnx}; flags: ${*:-(defaults)}"
case ${ONLY:-} in
  whiten) measure "whitened, default k" "$@" --whiten ;;
  plain) measure "plain, default k" "$@" --no-whiten ;;
  *)
    if [ "$own_k" = false ]; then
      measure "plain, k = 64" "$@" --components 64 --no-whiten
      measure "whitened, k = 64" "$@" --components 64 --whiten
    fi
    measure "plain, default k" "$@" --no-whiten
    measure "whitened, default k" "$@" --whiten
    ;;
esac
