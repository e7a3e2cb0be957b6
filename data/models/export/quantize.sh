#!/bin/bash
# Makes ../efficientnet_lite0_features_int8.onnx from the float model (run from this folder).
# Needs the Fruits-360 Training photos: PHOTOS (default ../../fruits360-sample/Training).
set -euo pipefail
cd "$(dirname "$0")"
photos=${PHOTOS:-../../fruits360-sample/Training}
python3 -m venv qvenv && . qvenv/bin/activate
pip install --quiet onnxruntime==1.31.1 onnx==1.23.2 sympy==1.14.0 numpy==2.4.6 pillow==13.0.0
python quantize.py ../efficientnet_lite0_features.onnx ../efficientnet_lite0_features_int8.onnx "$photos" 224 200
sha256sum ../efficientnet_lite0_features_int8.onnx
