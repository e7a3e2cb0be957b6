#!/usr/bin/env bash
# Latency and throughput of `fruitpipe serve` against the model's inference alone.
#
# In one run: a pipeline output over the shipped sample (default settings), its index
# replicated to at least 50,000 rows (ROWS), then POST /v1/identify with the shipped photos
# at concurrency 1 and 4 (bench/serve_load.py: p50, p99, requests/s), next to ONNX Runtime
# alone on one preprocessed photo per call (examples/inference_floor.rs, batch 1), with its
# threads spinning between calls (its default) and not (as serve runs it), measured before
# and after the load. Target: p50 at concurrency 1 within 1.5x of inference alone.
#
#   ROWS=51000 REQUESTS=300 THREADS=<cores> bench/serve.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${ROWS:-51000}
requests=${REQUESTS:-300}
threads=${THREADS:-$(nproc)}
model=data/models/efficientnet_lite0_features.onnx

scripts/setup.sh >/dev/null
cargo build --release --locked --bin fruitpipe --example inference_floor 2>&1 | tail -1
fruitpipe=$PWD/target/release/fruitpipe
floor=$PWD/target/release/examples/inference_floor

work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT

"$fruitpipe" run --input data/fruits360-sample --output "$work/out" --model "$model" \
  --threads "$threads" >/dev/null 2>&1
size=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['feature_model']['preprocessing']['size'])" "$work/out/pca_model.json")

# The index, replicated: copy c of a row gets its path with "#c" appended (paths stay unique).
mkdir -p "$work/big"
cp "$work/out/pca_model.json" "$work/big/"
python3 - "$work/out/features_pca.csv" "$work/big/features_pca.csv" "$rows" <<'PY'
import sys
source, target, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
header, *lines = open(source).read().splitlines()
with open(target, "w") as out:
    out.write(header + "\n")
    written, copy = 0, 0
    while written < rows:
        for line in lines:
            path, rest = line.split(",", 1)
            out.write(f"{path}#{copy},{rest}\n" if copy else line + "\n")
            written += 1
        copy += 1
PY
index_rows=$(( $(wc -l < "$work/big/features_pca.csv") - 1 ))
k=$(head -1 "$work/big/features_pca.csv" | tr ',' '\n' | grep -c '^pc_')

"$fruitpipe" --log-format json serve --from "$work/big" --listen 127.0.0.1:0 \
  --threads "$threads" 2>"$work/serve.log" &
server=$!
for _ in $(seq 600); do
  address=$(sed -n 's#^fruitpipe serve: listening on http://##p' "$work/serve.log")
  if [ -n "$address" ] && curl -sf "http://$address/readyz" >/dev/null; then break; fi
  sleep 0.1
done
loaded=$(python3 - "$work/serve.log" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("{") and json.loads(line)["fields"].get("message") == "loaded the index":
        print(f"{json.loads(line)['fields']['seconds']:.2f}")
PY
)

# ms per photo, one photo per call: $1 = 1 with ONNX Runtime's threads spinning between
# calls (its default), 0 with them stopping after each call (as `fruitpipe serve` runs it).
floor_ms() { python3 -c "print(f'{1000 / float(\"$("$floor" "$model" data/fruits360-sample 300 "$size" 1 "$threads" "$1")\"):.2f}')"; }
echo "index: $index_rows rows, k = $k, ${size}x${size} input, $threads threads; loaded in ${loaded:-?} s"
spin_before=$(floor_ms 1); sleep_before=$(floor_ms 0)
python3 bench/serve_load.py "$address" data/fruits360-sample 1 20 >/dev/null # warm up
one=$(python3 bench/serve_load.py "$address" data/fruits360-sample 1 "$requests")
four=$(python3 bench/serve_load.py "$address" data/fruits360-sample 4 "$requests")
spin_after=$(floor_ms 1); sleep_after=$(floor_ms 0)
python3 - "$spin_before" "$spin_after" "$sleep_before" "$sleep_after" "$one" "$four" <<'PY'
import json, sys
spin = (float(sys.argv[1]) + float(sys.argv[2])) / 2
sleep = (float(sys.argv[3]) + float(sys.argv[4])) / 2
print(f"inference alone, one photo per call: {spin:.2f} ms with threads spinning between calls, "
      f"{sleep:.2f} ms without (as serve runs it); before/after: "
      f"{sys.argv[1]}/{sys.argv[2]} and {sys.argv[3]}/{sys.argv[4]} ms")
print(f"{'concurrency':>11} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>7} {'failed':>6} {'p50/spinning':>13} {'p50/stopping':>13}")
for line in sys.argv[5:]:
    r = json.loads(line)
    print(f"{r['concurrency']:>11} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['requests_per_s']:>7.1f} "
          f"{r['failed']:>6} {r['p50_ms'] / spin:>12.2f}x {r['p50_ms'] / sleep:>12.2f}x")
PY
