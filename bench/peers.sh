#!/usr/bin/env bash
# fruitpipe next to its peers, in one run on the same photos and model at 224x224:
#   (p) the seed recipe as plain Python + scikit-learn (bench/peers_sklearn.py: PIL decode
#       and resize, ONNX Runtime in batches of 64, StandardScaler, PCA at 0.99, CSV),
#   (s) `fruitpipe run --standardize --variance 0.99` (the seed's settings),
#   (d) `fruitpipe run` with its defaults,
#   (q) `fruitpipe run` with the int8 model at 128 px (FAST_SIZE), the fastest setting found
#       within 0.3 points of the seed recipe's 1-NN accuracy (see the README),
#   (f) ONNX Runtime alone on pre-decoded tensors (examples/inference_floor.rs), the floor.
# Rounds alternate p, s, d, f so that machine noise hits every one; prints photos/s (mean of
# the rounds) and the ratios. Python and its packages come from PyPI into a virtual
# environment this script makes (VENV, default .bench-venv).
#
#   PHOTOS=2000 ROUNDS=2 SIZE=224 bench/peers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
count=${PHOTOS:-2000}
rounds=${ROUNDS:-2}
size=${SIZE:-224}
threads=$(nproc)
venv=${VENV:-.bench-venv}
model=data/models/efficientnet_lite0_features.onnx
int8=data/models/efficientnet_lite0_features_int8.onnx
fast_size=${FAST_SIZE:-128}
source_photos=data/fruits360-sample
[ -d ../shared/data/fruits360-sample ] && source_photos=../shared/data/fruits360-sample

scripts/setup.sh >/dev/null
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet numpy pillow onnxruntime==1.31.1 scikit-learn
cargo build --release --locked --bin fruitpipe --example inference_floor 2>&1 | tail -1

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The first $count Training photos, sorted, copied so that every contender reads the same
# files (the sample replicated under new names when it has fewer).
python3 - "$source_photos/Training" "$work/photos" "$count" <<'PY'
import pathlib, shutil, sys
source, target, count = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3])
photos = sorted(source.rglob("*.jpg"))
copy = 0
while count > 0:
    for photo in photos[:count]:
        name = photo.name if copy == 0 else f"{photo.stem}-{copy}.jpg"
        destination = target / photo.parent.name / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(photo, destination)
    count -= min(count, len(photos))
    copy += 1
PY
photos=$(find "$work/photos" -name '*.jpg' | wc -l)
echo "photos: $photos Training photos from $source_photos, ${size}x${size}, $threads threads"
"$venv/bin/python" -c "import onnxruntime, sklearn, PIL, numpy; print('peer: onnxruntime', onnxruntime.__version__, 'scikit-learn', sklearn.__version__, 'Pillow', PIL.__version__, 'numpy', numpy.__version__)"

fruitpipe_rate() { # model size extra-flags... -> photos/s
  local started ended model=$1 size=$2
  shift 2
  started=$(date +%s.%N)
  target/release/fruitpipe run --input "$work/photos" --output "$work/out" --model "$model" \
    --size "$size" --threads "$threads" "$@" >/dev/null 2>&1
  ended=$(date +%s.%N)
  python3 -c "print(f'{$photos / ($ended - $started):.1f}')"
}

p=() s=() d=() q=() f=()
for round in $(seq "$rounds"); do
  p+=("$("$venv/bin/python" bench/peers_sklearn.py "$work/photos" "$model" "$work/peer.csv" "$size" "$threads" \
        | python3 -c "import json,sys; r=json.load(sys.stdin); print(f\"{r['photos']/r['seconds']:.1f}\")")")
  s+=("$(fruitpipe_rate "$model" "$size" --standardize --variance 0.99)")
  d+=("$(fruitpipe_rate "$model" "$size")")
  q+=("$(fruitpipe_rate "$int8" "$fast_size")")
  f+=("$(target/release/examples/inference_floor "$model" "$work/photos" "$photos" "$size" 32 "$threads")")
  echo "round $round: python+sklearn ${p[-1]}, fruitpipe (seed settings) ${s[-1]}, fruitpipe (defaults) ${d[-1]}, fruitpipe (int8, $fast_size px) ${q[-1]}, ONNX Runtime alone ${f[-1]} photos/s"
done

python3 - "$rounds" "${p[@]}" "${s[@]}" "${d[@]}" "${q[@]}" "${f[@]}" <<'PY'
import sys
n = int(sys.argv[1])
values = [float(x) for x in sys.argv[2:]]
p, s, d, q, f = (sum(values[i * n:(i + 1) * n]) / n for i in range(5))
print(f"python + scikit-learn (p):      {p:7.1f} photos/s")
print(f"fruitpipe, seed settings (s):   {s:7.1f} photos/s   s/p = {s / p:.2f}   s/f = {s / f:.2f}")
print(f"fruitpipe, defaults (d):        {d:7.1f} photos/s   d/p = {d / p:.2f}   d/f = {d / f:.2f}")
print(f"fruitpipe, int8 fast (q):       {q:7.1f} photos/s   q/p = {q / p:.2f}")
print(f"ONNX Runtime alone (f):         {f:7.1f} photos/s")
PY
