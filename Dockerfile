# syntax=docker/dockerfile:1
# The kube-jit operator image, for building with a container engine: a static
# glibc (crt-static) binary at /kube-jit on scratch, with the build stage's CA
# bundle at /etc/ssl/certs/ca-certificates.crt, running as 65532:65532 —
# what charts/kube-jit runs, with readOnlyRootFilesystem. The same layout as
# `hack/image.sh build`, which builds it without an engine and is the one
# verified here (imported into containerd and run); this file is not.
#
#   docker build -t <registry>/kube-jit:<version> .
#
# Builds for the architecture of the build host (amd64 or arm64).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# src/admission.rs compiles the admission policies in (include_str!).
COPY crds ./crds
# An explicit --target keeps crt-static off build scripts and proc macros.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(uname -m)-unknown-linux-gnu" \
 && RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release --locked --bin kube-jit --target "$target" \
 && cp "target/$target/release/kube-jit" /kube-jit

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /kube-jit /kube-jit
USER 65532:65532
ENTRYPOINT ["/kube-jit"]
CMD ["run"]
