#!/usr/bin/env bash
# Installs what fruitpipe needs beyond Rust: the ONNX Runtime shared library, taken from the
# PyPI wheel (no Python is needed at run time). Idempotent; safe to run again.
#   ORT_DIR   where to put the library (default: .ort/ in this checkout)
set -euo pipefail

ORT_VERSION=1.31.1
root=$(cd "$(dirname "$0")/.." && pwd)
ort_dir=${ORT_DIR:-$root/.ort}
library=$ort_dir/libonnxruntime.so.$ORT_VERSION

command -v cargo >/dev/null || { echo "setup: cargo is missing; install Rust (https://rustup.rs)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "setup: python3 (with pip) is needed to download ONNX Runtime" >&2; exit 1; }

if [ ! -f "$library" ]; then
  echo "setup: downloading ONNX Runtime $ORT_VERSION from PyPI"
  download=$(mktemp -d)
  trap 'rm -rf "$download"' EXIT
  python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version 3.11 --platform manylinux_2_28_x86_64 \
    "onnxruntime==$ORT_VERSION" -d "$download"
  mkdir -p "$ort_dir"
  python3 - "$download"/onnxruntime-*.whl "$ort_dir" "$ORT_VERSION" <<'PY'
import sys, zipfile
wheel, target, version = sys.argv[1:]
name = f"onnxruntime/capi/libonnxruntime.so.{version}"
with zipfile.ZipFile(wheel) as archive, open(f"{target}/libonnxruntime.so.{version}", "wb") as out:
    out.write(archive.read(name))
PY
fi
echo "setup: ONNX Runtime at $library"
