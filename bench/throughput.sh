#!/usr/bin/env bash
# Throughput and memory of `fruitpipe run` against the floor set by ONNX Runtime alone.
#
# In one run, on the same photos (the shipped sample replicated to about 5,000) and the same
# model at the same size, batch and threads:
#   (a) inference only, on photos decoded beforehand (examples/inference_floor.rs), and
#   (b) `fruitpipe run` end to end (listing, reading, decoding, resizing, inference, PCA, CSV),
# alternating a, b, a, b so that machine noise hits both. Prints images/s and b/a, then
# compares the peak RSS of `fruitpipe run` on 500 and on 5,000 photos.
#
#   SIZE=224 BATCH=32 THREADS=<cores> COPIES=10 SHARD_SIZE=2000 bench/throughput.sh
# Memory is bounded by one shard, so with the default shard size (2000) the 500-photo run
# never fills a shard; SHARD_SIZE=250 compares full shards against full shards.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${SIZE:-224}
batch=${BATCH:-32}
threads=${THREADS:-$(nproc)}
copies=${COPIES:-10}
shard_size=${SHARD_SIZE:-2000}
model=${MODEL:-data/models/efficientnet_lite0_features.onnx}

scripts/setup.sh >/dev/null
cargo build --release --locked --bin fruitpipe --example inference_floor 2>&1 | tail -1
fruitpipe=target/release/fruitpipe
floor=target/release/examples/inference_floor

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Replicate the sample under new names (copy c of photo.jpg is photo-c.jpg), and take the
# first 500 of them as the small set.
python3 - data/fruits360-sample "$work" "$copies" <<'PY'
import pathlib, shutil, sys
source, work, copies = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3])
photos = sorted(source.rglob("*.jpg"))
for c in range(1, copies + 1):
    for photo in photos:
        target = work / "big" / photo.relative_to(source).with_name(f"{photo.stem}-{c}.jpg")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(photo, target)
for photo in sorted((work / "big").rglob("*.jpg"))[:500]:
    target = work / "small" / photo.relative_to(work / "big")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(photo, target)
PY
images=$(find "$work/big" -name '*.jpg' | wc -l)

run_once() { # input output -> prints "seconds peak_rss_kib"
  /usr/bin/time -f '%e %M' -o "$work/time" "$fruitpipe" run --input "$1" --output "$2" \
    --model "$model" --size "$size" --batch "$batch" --threads "$threads" \
    --shard-size "$shard_size" >/dev/null 2>&1
  cat "$work/time"
}

echo "photos: $images, size ${size}x${size}, batch $batch, threads $threads, shard size $shard_size"
floors=() runs=() rss_big=0
for round in 1 2; do
  floors+=("$("$floor" "$model" "$work/big" "$images" "$size" "$batch" "$threads")")
  read -r seconds rss < <(run_once "$work/big" "$work/out-$round")
  runs+=("$(python3 -c "print(f'{$images / $seconds:.1f}')")")
  rss_big=$rss
  echo "round $round: inference only ${floors[-1]} images/s; fruitpipe run ${runs[-1]} images/s (${seconds}s, peak RSS ${rss} KiB)"
done
read -r _ rss_small < <(run_once "$work/small" "$work/out-small")

python3 - "${floors[@]}" "${runs[@]}" "$rss_small" "$rss_big" <<'PY'
import sys
a = [float(x) for x in sys.argv[1:3]]
b = [float(x) for x in sys.argv[3:5]]
rss_small, rss_big = int(sys.argv[5]), int(sys.argv[6])
fa, fb = sum(a) / 2, sum(b) / 2
print(f"inference only (a): {fa:.1f} images/s")
print(f"fruitpipe run  (b): {fb:.1f} images/s")
print(f"ratio b/a: {fb / fa:.3f} (target >= 0.85)")
print(f"peak RSS: {rss_small / 1024:.0f} MiB at 500 photos, {rss_big / 1024:.0f} MiB at 5,000+: "
      f"ratio {rss_big / rss_small:.3f} (target <= 1.10)")
PY
