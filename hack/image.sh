#!/usr/bin/env bash
# kube-jit's container images, built without a container engine or registry:
# static (glibc crt-static) binaries of kube-jit and the example agent, and
# Kubernetes' own pause.c for a sandbox image, each put in a single-layer image
# from scratch by the pinned Go tool under hack/image/ and written as an OCI
# image tarball for `ctr -n k8s.io images import`. The same inputs give the same
# digests. The compiled dependencies, the pause binary and the image tool are
# cached outside the work tree, so a fresh clone reuses them.
#
#   hack/image.sh build [--out DIR]   build the binaries and the three images into DIR
#                                     (default: target/images): kube-jit.tar, kube-jit-agent.tar,
#                                     kube-jit-pause.tar
#   hack/image.sh build-pause [--out DIR]
#                                     only kube-jit-pause.tar (no cargo build)
#   hack/image.sh names               print "<role> <reference>" for kube-jit, agent and pause
#
# Needs cargo (with the host's -unknown-linux-gnu target, no extra rustup target), gcc with a
# static libc (libc6-dev), Go, and the host's CA bundle at /etc/ssl/certs/ca-certificates.crt.
#
# Environment:
#   KUBE_JIT_CACHE   cache (default: ~/.cache/kube-jit): bin/ for the tools, image-target/ for cargo
set -euo pipefail
shopt -s inherit_errexit

HACK=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HACK")
LOG_NAME=image
# shellcheck source=hack/lib.sh
source "$HACK/lib.sh"

# role, reference, tarball
IMAGES=(
  "kube-jit docker.io/library/kube-jit:local kube-jit.tar"
  "agent docker.io/library/kube-jit-agent:local kube-jit-agent.tar"
  "pause docker.io/library/kube-jit-pause:local kube-jit-pause.tar"
)
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
TARGET="$(uname -m)-unknown-linux-gnu"
CARGO_TARGET="$CACHE/image-target"
RELEASE="$CARGO_TARGET/$TARGET/release"

GCR_VERSION=$(mod_version "$HACK/image/go.mod" github.com/google/go-containerregistry)
# The tool is our own code: its key also covers its sources, so an edit rebuilds it.
TOOL_KEY=$(cat "$HACK/image/go.mod" "$HACK/image/go.sum" "$HACK/image/main.go" | sha256sum | cut -c1-12)
TOOL_BIN="$CACHE/bin/image-$GCR_VERSION-$TOOL_KEY"
KUBERNETES_VERSION=$(mod_version "$HACK/kubernetes/go.mod" k8s.io/kubernetes)
PAUSE_BIN="$CACHE/bin/pause-$KUBERNETES_VERSION"
declare -A DIGESTS=() # role → manifest digest of the images written

cmd_names() {
  local image role ref _tar
  for image in "${IMAGES[@]}"; do
    read -r role ref _tar <<<"$image"
    echo "$role $ref"
  done
}

build_tool() {
  [[ -x "$TOOL_BIN/image" ]] && return 0
  log "building the image tool (go-containerregistry $GCR_VERSION) into $TOOL_BIN"
  go_build_into "$TOOL_BIN" image "$HACK/image" image .
}

# pause.c from the pinned k8s.io/kubernetes module (build/pause/linux/), compiled
# with the CFLAGS of build/pause/Makefile and stripped, as the release image's is.
build_pause() {
  [[ -x "$PAUSE_BIN/pause" ]] && return 0
  command -v gcc >/dev/null || die "gcc is needed to build pause"
  local dir src tag start=$SECONDS
  dir=$(env -C "$HACK/kubernetes" go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
  src="$dir/build/pause/linux/pause.c"
  [[ -f "$src" ]] || die "no $src in k8s.io/kubernetes@$KUBERNETES_VERSION"
  tag=$(awk '$1 == "TAG" && $2 == "?=" { print $3 }' "$dir/build/pause/Makefile")
  log "building pause $tag (kubernetes $KUBERNETES_VERSION) into $PAUSE_BIN"
  local tmp="$PAUSE_BIN.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  gcc -Os -Wall -Werror -static "-DVERSION=v$tag-kubernetes-$KUBERNETES_VERSION" -o "$tmp/pause" "$src"
  strip "$tmp/pause"
  rm -rf "$PAUSE_BIN"; mv "$tmp" "$PAUSE_BIN"
  log "  pause done in $((SECONDS - start))s"
}

# Static glibc binaries: crt-static on the host's gnu target needs no rustup
# target or musl-gcc. An explicit --target keeps RUSTFLAGS off build scripts
# and proc macros, which must stay dynamic.
build_binaries() {
  command -v cargo >/dev/null || die "cargo is needed (https://rustup.rs)"
  # Started from a test (or anything cargo runs), this script inherits that
  # package's CARGO_PKG_* and the like; build scripts that watch them would
  # make cargo rebuild the crate (about 100 s) instead of reusing the cache.
  local var
  for var in $(compgen -e); do
    case $var in
      CARGO | CARGO_MANIFEST_* | CARGO_PKG_* | CARGO_CRATE_NAME | CARGO_BIN_* | CARGO_PRIMARY_PACKAGE | \
        CARGO_TARGET_TMPDIR | CARGO_RUSTC_CURRENT_DIR | OUT_DIR) unset "$var" ;;
    esac
  done
  log "cargo build --release (static, $TARGET) into $CARGO_TARGET"
  with_progress "cargo build" env -C "$REPO" CARGO_TARGET_DIR="$CARGO_TARGET" \
    RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release --locked --target "$TARGET" --bin kube-jit --example agent
}

check_static() { # <binary>
  local desc
  desc=$(file -b "$1")
  [[ "$desc" == *"statically linked"* || "$desc" == *"static-pie linked"* ]] ||
    die "$1 is not static: $desc"
  if ldd "$1" >/dev/null 2>&1 && ! ldd "$1" 2>&1 | grep -q 'statically linked'; then
    die "$1 is not static: $(ldd "$1" 2>&1)"
  fi
  log "  $(basename "$1"): ${desc%%, BuildID*}"
}

image_row() { # <role>: prints "<reference> <tarball>"
  local image role ref tar
  for image in "${IMAGES[@]}"; do
    read -r role ref tar <<<"$image"
    [[ "$role" == "$1" ]] && { echo "$ref $tar"; return 0; }
  done
  die "no image $1"
}

write_image() { # <role> <tool args…>
  local role=$1 ref tar start=$SECONDS; shift
  read -r ref tar <<<"$(image_row "$role")"
  DIGESTS[$role]=$("$TOOL_BIN/image" --out "$OUT/$tar" --tag "$ref" "$@")
  log "  $ref: $((SECONDS - start))s"
}

write_pause() {
  write_image pause --file "/pause=$PAUSE_BIN/pause:755" \
    --user 65535:65535 --entrypoint /pause --workdir /
}

report() { # <role…>: reference, digest, tarball and size of each image written
  local role ref tar
  for role in "$@"; do
    read -r ref tar <<<"$(image_row "$role")"
    printf '%-8s %-40s %s  %s (%s)\n' "$role" "$ref" "${DIGESTS[$role]}" "$OUT/$tar" \
      "$(du -h "$OUT/$tar" | cut -f1)"
  done
}

parse_out() { # [--out DIR]: sets OUT (absolute) and creates it
  OUT="$REPO/target/images"
  while (($#)); do
    case "$1" in
      --out) [[ $# -ge 2 ]] || die "--out needs a directory"; OUT=$2; shift 2 ;;
      *) die "unknown argument: $1" ;;
    esac
  done
  mkdir -p "$OUT"
  OUT=$(cd "$OUT" && pwd)
}

cmd_build() {
  parse_out "$@"
  [[ -f "$CA_BUNDLE" ]] || die "no CA bundle at $CA_BUNDLE (install ca-certificates)"
  local start=$SECONDS
  # Clones share the cached target directory: one build at a time, from the
  # cargo build until its binaries are in the images (fd 8 stays open to exit).
  mkdir -p "$CACHE"
  exec 8>"$CACHE/image-target.lock"
  flock 8 || die "could not lock $CACHE/image-target.lock"
  build_binaries
  check_static "$RELEASE/kube-jit"
  check_static "$RELEASE/examples/agent"
  build_pause
  check_static "$PAUSE_BIN/pause"
  build_tool
  log "writing images into $OUT"
  local images_start=$SECONDS
  local ca=(--file "/etc/ssl/certs/ca-certificates.crt=$CA_BUNDLE:644")
  write_image kube-jit --file "/kube-jit=$RELEASE/kube-jit:755" "${ca[@]}" \
    --user 65532:65532 --entrypoint /kube-jit --cmd run --workdir /
  write_image agent --file "/agent=$RELEASE/examples/agent:755" "${ca[@]}" \
    --user 65532:65532 --entrypoint /agent --workdir /
  write_pause
  log "images written in $((SECONDS - images_start))s; all done in $((SECONDS - start))s"
  report kube-jit agent pause
}

# Only the sandbox image (what a local node needs before any kube-jit build).
cmd_build_pause() {
  parse_out "$@"
  build_pause
  check_static "$PAUSE_BIN/pause"
  build_tool
  write_pause
  report pause
}

main() {
  case "${1:-}" in
    build) shift; cmd_build "$@" ;;
    build-pause) shift; cmd_build_pause "$@" ;;
    names) cmd_names ;;
    *) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
}

main "$@"; exit $?
