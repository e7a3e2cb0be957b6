# The S3 server of the end-to-end test: s3s-fs (the same server the Rust tests start
# in-process) serving /data as S3; each folder of /data is a bucket.
FROM rust:1.95-bookworm AS build
RUN cargo install s3s-fs@0.14.1 --locked --features binary --root /out

# Debian slim rather than distroless: `kubectl cp` (the upload) needs tar in the container.
FROM debian:bookworm-slim
COPY --from=build /out/bin/s3s-fs /usr/local/bin/s3s-fs
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/s3s-fs"]
