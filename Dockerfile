# One image for both binaries: `fruitpipe` (the runner, the default entrypoint) and
# `fruitpipe-operator`. ONNX Runtime sits in /usr/lib/fruitpipe, where the runner looks by
# itself; the shipped EfficientNet-Lite0 model is at /usr/share/fruitpipe/models.
#   docker build -t fruitpipe:dev .

# --- build: release binaries
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY job-runner job-runner
COPY operator operator
RUN cargo build --release --locked --bin fruitpipe --bin fruitpipe-operator \
 && strip target/release/fruitpipe target/release/fruitpipe-operator

# --- onnxruntime: the shared library from the PyPI wheel
FROM python:3.11-slim-bookworm AS onnxruntime
RUN pip download --no-deps --only-binary=:all: onnxruntime==1.31.1 -d /wheel \
 && python -c "import zipfile,glob; zipfile.ZipFile(glob.glob('/wheel/*.whl')[0]).extract('onnxruntime/capi/libonnxruntime.so.1.31.1', '/out')"

# --- runtime: glibc and libstdc++ only, no shell, no package manager, non-root
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=onnxruntime /out/onnxruntime/capi/libonnxruntime.so.1.31.1 /usr/lib/fruitpipe/
COPY --from=build /src/target/release/fruitpipe /src/target/release/fruitpipe-operator /usr/local/bin/
COPY data/models/efficientnet_lite0_features.onnx /usr/share/fruitpipe/models/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/fruitpipe"]
