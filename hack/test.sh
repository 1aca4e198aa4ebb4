#!/usr/bin/env bash
# Runs every test: unit tests, and integration tests against a real local
# control plane that this script starts for the run and stops afterwards.
# Extra arguments go to `cargo test` (for example a test name filter).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v cargo >/dev/null || { echo "cargo is needed: https://rustup.rs" >&2; exit 1; }
command -v go >/dev/null || { echo "Go is needed to build the test control plane: https://go.dev/doc/install" >&2; exit 1; }

hack/local-cluster.sh build
state=$(mktemp -d -t kube-jit-test.XXXXXX)
export KUBE_JIT_TEST_CLUSTER_DIR="$state/cluster"
cleanup() {
  KUBE_JIT_CLUSTER_DIR="$KUBE_JIT_TEST_CLUSTER_DIR" hack/local-cluster.sh down >/dev/null 2>&1 || true
  rm -rf "$state"
}
trap cleanup EXIT
# The cluster also stops itself if this script dies without running its trap.
KUBE_JIT_CLUSTER_DIR="$KUBE_JIT_TEST_CLUSTER_DIR" KUBE_JIT_CLUSTER_OWNER_PID=$$ hack/local-cluster.sh up

cargo test --all-targets "$@"
cargo test --doc
