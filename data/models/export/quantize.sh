#!/bin/bash
# Makes ../efficientnet_lite0_features_int8.onnx from the float model (run from this folder).
# Calibrates on Fruits-360 Training photos: PHOTOS, default the team's 4,250-photo sample
# (../../../../shared/data/fruits360-sample/Training, what the shipped file was made from),
# else the 340 Training photos shipped in data/ (a slightly different file).
set -euo pipefail
cd "$(dirname "$0")"
photos=${PHOTOS:-../../../../shared/data/fruits360-sample/Training}
[ -d "$photos" ] || photos=../../fruits360-sample/Training
python3 -m venv qvenv && . qvenv/bin/activate
pip install --quiet onnxruntime==1.31.1 onnx==1.23.2 sympy==1.14.0 numpy==2.4.6 pillow==13.0.0
python quantize.py ../efficientnet_lite0_features.onnx ../efficientnet_lite0_features_int8.onnx "$photos" 224 200
sha256sum ../efficientnet_lite0_features_int8.onnx
