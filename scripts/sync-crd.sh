#!/usr/bin/env bash
# Regenerates the FruitPipeline CRD from the code into crds/ and the Helm chart.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet --locked -p fruitpipe-operator --bin crdgen > crds/fruitpipeline.yaml
cp crds/fruitpipeline.yaml charts/fruitpipe/crds/fruitpipeline.yaml
echo "crds/fruitpipeline.yaml and charts/fruitpipe/crds/fruitpipeline.yaml regenerated"
