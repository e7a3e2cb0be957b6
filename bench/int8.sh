#!/usr/bin/env bash
# The int8 model against the float one, in one run on the same photos (the shipped sample
# replicated, COPIES x 510) at each size: ONNX Runtime alone on pre-decoded tensors and
# `fruitpipe run` end to end, alternating float and int8. Accuracy: bench/quality.sh with
# MODEL=data/models/efficientnet_lite0_features_int8.onnx.
#
#   COPIES=4 SIZES="224 100" bench/int8.sh
set -euo pipefail
cd "$(dirname "$0")/.."
copies=${COPIES:-4}
sizes=${SIZES:-224 100}
threads=$(nproc)
float=data/models/efficientnet_lite0_features.onnx
int8=data/models/efficientnet_lite0_features_int8.onnx

scripts/setup.sh >/dev/null
cargo build --release --locked --bin fruitpipe --example inference_floor 2>&1 | tail -1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - data/fruits360-sample "$work/photos" "$copies" <<'PY'
import pathlib, shutil, sys
source, target, copies = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3])
for c in range(copies):
    for photo in sorted(source.rglob("*.jpg")):
        destination = target / photo.relative_to(source).with_name(f"{photo.stem}-{c}.jpg")
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(photo, destination)
PY
photos=$(find "$work/photos" -name '*.jpg' | wc -l)
echo "photos: $photos, threads $threads"
rate() { # model size -> photos/s of fruitpipe run
  local started ended
  started=$(date +%s.%N)
  target/release/fruitpipe run --input "$work/photos" --output "$work/out" --model "$1" \
    --size "$2" --threads "$threads" >/dev/null 2>&1
  ended=$(date +%s.%N)
  python3 -c "print(f'{$photos / ($ended - $started):.1f}')"
}
for size in $sizes; do
  ff=$(target/release/examples/inference_floor "$float" "$work/photos" "$photos" "$size" 32 "$threads")
  fi=$(target/release/examples/inference_floor "$int8" "$work/photos" "$photos" "$size" 32 "$threads")
  rf=$(rate "$float" "$size")
  ri=$(rate "$int8" "$size")
  python3 -c "print(f'{$size} px: ONNX Runtime alone float {$ff} int8 {$fi} photos/s (x{$fi / $ff:.2f}); fruitpipe run float {$rf} int8 {$ri} photos/s (x{$ri / $rf:.2f})')"
done
