# syntax=docker/dockerfile:1
# The kube-jit operator image: a static (musl) binary on distroless, running as
# 65532 (nonroot) — what charts/kube-jit runs, with readOnlyRootFilesystem.
#
#   docker build -t <registry>/kube-jit:<version> .
#
# Builds for the architecture of the build host (amd64 or arm64).

FROM rust:1-bookworm AS build
# musl-gcc for ring's C and assembly parts (TLS through rustls).
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
RUN rustup target add "$(uname -m)-unknown-linux-musl"
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# src/admission.rs compiles the admission policies in (include_str!).
COPY crds ./crds
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(uname -m)-unknown-linux-musl" \
 && cargo build --release --locked --bin kube-jit --target "$target" \
 && cp "target/$target/release/kube-jit" /kube-jit

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /kube-jit /kube-jit
USER 65532:65532
ENTRYPOINT ["/kube-jit"]
CMD ["run"]
