#!/usr/bin/env bash
# Runs every test: unit tests, and integration tests against a real local
# control plane that this script starts for the run and stops afterwards,
# after building the example agents' prerequisites (see below); then the
# node's tests on a second cluster with a node (root only).
# Extra arguments go to `cargo test` (for example a test name filter).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v cargo >/dev/null || { echo "cargo is needed: https://rustup.rs" >&2; exit 1; }
command -v go >/dev/null || { echo "Go is needed to build the test control plane: https://go.dev/doc/install" >&2; exit 1; }

hack/local-cluster.sh build
# tests/chart.rs renders charts/kube-jit with helm, and tests/krew_plugin.rs
# installs kubectl-jit with krew, as users do; both are built from Go modules.
hack/helm.sh build
hack/krew.sh build >/dev/null

# tests/example_agents.rs runs the example agents as a user would: the built
# Rust example (target/debug/examples/agent; `cargo test` compiles examples
# only as test harnesses) and the Python one, its requirements in a venv
# cached outside the work tree, keyed by requirements and Python version.
cargo build --examples
requirements=examples/agents/python/requirements.txt
key=$( { cat "$requirements"; python3 --version; } | sha256sum | cut -c1-16)
venv="${KUBE_JIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-jit}/venv-$key"
if [[ ! -e "$venv/.complete" ]]; then
  echo "creating $venv for the Python example agent"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  touch "$venv/.complete"   # only a finished install counts; an interrupted one is redone
fi
export KUBE_JIT_PYTHON="$venv/bin/python"

state=$(mktemp -d -t kube-jit-test.XXXXXX)
export KUBE_JIT_TEST_CLUSTER_DIR="$state/cluster"
cleanup() {
  KUBE_JIT_CLUSTER_DIR="$KUBE_JIT_TEST_CLUSTER_DIR" hack/local-cluster.sh down >/dev/null 2>&1 || true
  KUBE_JIT_CLUSTER_DIR="$state/node-cluster" hack/local-cluster.sh down >/dev/null 2>&1 || true
  rm -rf "$state"
}
trap cleanup EXIT
# The cluster also stops itself if this script dies without running its trap.
KUBE_JIT_CLUSTER_DIR="$KUBE_JIT_TEST_CLUSTER_DIR" KUBE_JIT_CLUSTER_OWNER_PID=$$ hack/local-cluster.sh up

cargo test --all-targets "$@"
cargo test --doc

# tests/node.rs: kube-jit as users run it (the image, the chart installed by
# helm, agents as Pods) on a cluster with a node, started after the first one
# stops. A node needs root (network namespaces, mounts, cgroups).
KUBE_JIT_CLUSTER_DIR="$KUBE_JIT_TEST_CLUSTER_DIR" hack/local-cluster.sh down >/dev/null
if [[ $EUID != 0 && -z "${KUBE_JIT_SKIP_NODE:-}" ]]; then
  echo "the node tests (tests/node.rs) need root; run as root, or set KUBE_JIT_SKIP_NODE=1 to leave them out" >&2
  exit 1
fi
if [[ -z "${KUBE_JIT_SKIP_NODE:-}" ]]; then
  export KUBE_JIT_NODE_CLUSTER_DIR="$state/node-cluster"
  KUBE_JIT_CLUSTER_DIR="$KUBE_JIT_NODE_CLUSTER_DIR" KUBE_JIT_CLUSTER_OWNER_PID=$$ hack/local-cluster.sh up --node
  cargo test --test node "$@" -- --ignored --test-threads 1
fi
