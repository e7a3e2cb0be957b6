#!/usr/bin/env bash
# End-to-end on a real cluster: build the image, start kind, run an S3 server in it, upload
# the sample photos and the model, install the chart, run a FruitPipeline to Succeeded,
# check the CSV, serve it with the chart's identify Deployment (a photo, a thumbnail, the
# metrics), delete the pipeline and check its Jobs are gone.
#
# Needs docker, kind, kubectl, helm, curl and python3 (scripts/setup.sh installs helm and
# kubectl in .tools/bin).
# Exit codes: 0 passed, 1 failed, 3 a required tool is missing (nothing was run).
#   KEEP_CLUSTER=1 tests/e2e/run.sh   leaves the cluster up for a look around
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.tools/bin:$PATH"
cluster=fruitpipe-e2e
namespace=fruitpipe-e2e

for tool in docker kind kubectl helm curl python3; do
  if ! command -v "$tool" >/dev/null; then
    echo "e2e: '$tool' is not installed; this test needs docker, kind, kubectl, helm, curl and python3" >&2
    exit 3
  fi
done
docker info >/dev/null 2>&1 || { echo "e2e: docker is installed but no Docker engine answers" >&2; exit 3; }

step() { echo; echo "== $*"; }
cleanup() { [ "${KEEP_CLUSTER:-}" = 1 ] || kind delete cluster --name "$cluster" >/dev/null 2>&1 || true; }
trap cleanup EXIT

step "build the images"
docker build -t fruitpipe:e2e .
docker build -t fruitpipe-s3:e2e -f tests/e2e/s3-server.Dockerfile tests/e2e

step "create the kind cluster and load the images"
kind create cluster --name "$cluster" --image kindest/node:v1.33.1 --wait 120s
kind load docker-image --name "$cluster" fruitpipe:e2e fruitpipe-s3:e2e

step "start the S3 server and upload the photos and the model"
kubectl create namespace "$namespace"
kubectl apply -f tests/e2e/s3-server.yaml
kubectl -n "$namespace" rollout status deployment/s3 --timeout=120s
s3_pod=$(kubectl -n "$namespace" get pod -l app=s3 -o jsonpath='{.items[0].metadata.name}')
staging=$(mktemp -d)
mkdir -p "$staging/fruits/models"
cp -r data/fruits360-sample "$staging/fruits/"
cp data/models/efficientnet_lite0_features.onnx "$staging/fruits/models/"
# s3s-fs serves files as objects: copying into /data/fruits is the upload.
kubectl cp "$staging/fruits" "$namespace/$s3_pod:/data/fruits"
photos=$(find data/fruits360-sample -name '*.jpg' | wc -l)

step "install the chart"
helm install fruitpipe charts/fruitpipe --namespace fruitpipe-system --create-namespace \
  --set image.repository=fruitpipe --set image.tag=e2e --set image.pullPolicy=Never \
  --set runner.serviceAccount.namespace="$namespace" --wait --timeout 120s

step "run a FruitPipeline"
kubectl apply -f tests/e2e/pipeline.yaml
# Waits for Succeeded, but stops at once on Failed and prints why.
phase=""
for _ in $(seq 600); do
  phase=$(kubectl -n "$namespace" get fruitpipeline fruits-360 -o jsonpath='{.status.phase}')
  [ "$phase" = Succeeded ] || [ "$phase" = Failed ] && break
  sleep 2
done
if [ "$phase" != Succeeded ]; then
  echo "e2e: the pipeline is ${phase:-without a phase}; its conditions:" >&2
  kubectl -n "$namespace" get fruitpipeline fruits-360 \
    -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}' >&2
  kubectl -n "$namespace" get fruitpipeline fruits-360 -o yaml
  kubectl -n "$namespace" get jobs,pods
  kubectl -n "$namespace" get events --sort-by=.lastTimestamp | tail -30
  kubectl -n fruitpipe-system logs deployment/fruitpipe-fruitpipe-operator --tail=100
  exit 1
fi
kubectl -n "$namespace" get fruitpipelines

step "check the CSV"
kubectl cp "$namespace/$s3_pod:/data/fruits/pca/fruits-360/features_pca.csv" "$staging/features_pca.csv"
rows=$(($(wc -l < "$staging/features_pca.csv") - 1))
columns=$(head -1 "$staging/features_pca.csv" | tr ',' '\n' | wc -l)
echo "features_pca.csv: $rows rows, $columns columns"
[ "$rows" -eq "$photos" ] || { echo "e2e: expected $photos rows" >&2; exit 1; }
[ "$columns" -eq 18 ] || { echo "e2e: expected path,label,pc_1..pc_16" >&2; exit 1; }
[ "$(head -1 "$staging/features_pca.csv" | cut -d, -f1-3)" = "path,label,pc_1" ] || exit 1

step "check the report, the figures and the Parquet parts (output.formats: [csv, parquet])"
report=$(kubectl -n "$namespace" get fruitpipeline fruits-360 -o jsonpath='{.status.outputs.report}')
parquet=$(kubectl -n "$namespace" get fruitpipeline fruits-360 -o jsonpath='{.status.outputs.parquet}')
[ "$report" = s3://fruits/pca/fruits-360/report.html ] || { echo "e2e: status.outputs.report is '$report'" >&2; exit 1; }
[ "$parquet" = s3://fruits/pca/fruits-360/features_pca.parquet ] || { echo "e2e: status.outputs.parquet is '$parquet'" >&2; exit 1; }
kubectl cp "$namespace/$s3_pod:/data/fruits/pca/fruits-360/report.html" "$staging/report.html"
[ "$(grep -c 'data:image/png;base64,' "$staging/report.html")" -eq 2 ] || { echo "e2e: report.html lacks its two figures" >&2; exit 1; }
for figure in scree.png pc_scatter.png features_pca.parquet/part-00000.parquet; do
  kubectl -n "$namespace" exec "$s3_pod" -- test -s "/data/fruits/pca/fruits-360/$figure" \
    || { echo "e2e: $figure is missing" >&2; exit 1; }
done

step "serve the pipeline's output: the identify Deployment of the chart"
helm upgrade fruitpipe charts/fruitpipe --namespace fruitpipe-system --reuse-values \
  --set identify.enabled=true --set identify.from=s3://fruits/pca/fruits-360 \
  --set runner.s3.endpoint="http://s3.$namespace.svc:8014" --set runner.s3.region=us-east-1 \
  --set runner.s3.pathStyle=true --set runner.s3.credentialsSecret=fruitpipe-s3 \
  --wait --timeout 180s
kubectl -n "$namespace" rollout status deployment/fruitpipe-fruitpipe-identify --timeout=120s
kubectl -n "$namespace" port-forward svc/fruitpipe-fruitpipe-identify 18080:80 >/dev/null 2>&1 &
forward=$!
for _ in $(seq 30); do curl -sf http://127.0.0.1:18080/readyz >/dev/null && break; sleep 1; done
photo=$(find data/fruits360-sample/Test/Kiwi -name '*.jpg' | sort | head -1)
curl -sf -F "photo=@$photo" http://127.0.0.1:18080/v1/identify > "$staging/answer.json"
python3 - "$staging/answer.json" <<'PY'
import json, sys
answer = json.load(open(sys.argv[1]))
print(f"identify: {answer['label']} ({answer['score']:.3f}), {len(answer['neighbours'])} nearest photos")
assert answer["label"] == "Kiwi", answer
assert len(answer["neighbours"]) == 5, answer
PY
nearest=$(python3 -c "import json,sys,urllib.parse; print(urllib.parse.quote(json.load(open(sys.argv[1]))['neighbours'][0]['path'], safe=''))" "$staging/answer.json")
[ "$(curl -sf -o /dev/null -w '%{content_type}' "http://127.0.0.1:18080/v1/photo?path=$nearest")" = image/jpeg ] ||
  { echo "e2e: no thumbnail of the nearest photo" >&2; exit 1; }
curl -sf http://127.0.0.1:18080/metrics | grep -q 'fruitpipe_http_requests_total{route="/v1/identify",code="200"} 1' ||
  { echo "e2e: /metrics does not count the identification" >&2; exit 1; }
kill "$forward"

step "delete the pipeline: its Jobs must go with it"
run=$(kubectl -n "$namespace" get fruitpipeline fruits-360 -o jsonpath='{.status.runId}')
kubectl -n "$namespace" delete fruitpipeline fruits-360 --wait
for _ in $(seq 60); do
  left=$(kubectl -n "$namespace" get jobs -l "fruitpipe.dev/run=$run" -o name | wc -l)
  [ "$left" -eq 0 ] && break
  sleep 2
done
[ "$left" -eq 0 ] || { echo "e2e: $left Jobs survived their FruitPipeline" >&2; exit 1; }
echo; echo "e2e: passed"
