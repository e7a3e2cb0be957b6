#!/usr/bin/env bash
# Peak memory of `fruitpipe run` with maximum-size photos among ordinary ones.
#
# The shipped sample replicated to about 2,000 photos, then the same with 16 copies of a
# valid 12,000 x 12,000 JPEG added (a) at the default --max-pixels (50 megapixels: they are
# skipped from their header, before any decoding) and (b) with --max-pixels 200000000 (they
# are decoded, each one alone, since one takes every core's decoding share). Prints seconds,
# peak RSS and skipped photos of each run.
#
#   SIZE=100 COPIES=4 HUGE=16 bench/huge_photos.sh
set -euo pipefail
cd "$(dirname "$0")/.."
size=${SIZE:-100}
copies=${COPIES:-4}
huge=${HUGE:-16}
model=data/models/efficientnet_lite0_features.onnx

scripts/setup.sh >/dev/null
cargo build --release --locked --bin fruitpipe 2>&1 | tail -1
fruitpipe=target/release/fruitpipe
venv=target/bench-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet pillow

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$venv/bin/python" - data/fruits360-sample "$work" "$copies" "$huge" <<'PY'
import pathlib, shutil, sys
from PIL import Image
source, work, copies, huge = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
photos = sorted(source.rglob("*.jpg"))
for c in range(1, copies + 1):
    for photo in photos:
        for tree in ("plain", "huge"):
            target = work / tree / photo.relative_to(source).with_name(f"{photo.stem}-{c}.jpg")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(photo, target)
# A smooth 12,000 x 12,000 photo: valid, a few MB as JPEG, 432 MB as RGB pixels.
big = Image.merge("RGB", [Image.radial_gradient("L").resize((12000, 12000))] * 3)
folder = work / "huge" / "Training" / "Huge"
folder.mkdir(parents=True)
big.save(folder / "big-0.jpg", quality=85)
for i in range(1, huge):
    shutil.copyfile(folder / "big-0.jpg", folder / f"big-{i}.jpg")
print(f"{len(photos) * copies} photos; {huge} of 12000x12000 "
      f"({(folder / 'big-0.jpg').stat().st_size / 1e6:.1f} MB each as JPEG)")
PY

measure() { # label input extra-flags...
  local label=$1 input=$2
  shift 2
  /usr/bin/time -f '%e %M' -o "$work/time" "$fruitpipe" run --input "$input" \
    --output "$work/out-$label" --model "$model" --size "$size" --components 16 "$@" \
    >/dev/null 2>"$work/log-$label"
  read -r seconds rss <"$work/time"
  skipped=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['images_skipped'])" \
    "$work/out-$label/summary.json")
  printf '%-40s %7.1f s  peak RSS %6d MiB  skipped %s\n' "$label" "$seconds" $((rss / 1024)) "$skipped"
}
measure "no huge photos" "$work/plain"
measure "16 huge, default --max-pixels" "$work/huge"
measure "16 huge, --max-pixels 200000000" "$work/huge" --max-pixels 200000000
