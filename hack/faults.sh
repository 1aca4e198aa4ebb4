#!/usr/bin/env bash
# The fault-injection suite (tests/faults.rs) on its own control plane:
# grants while the operator is SIGKILLed and restarted, the API server and
# etcd restarted, and the API server throttling (low max-requests-inflight).
#
#   hack/faults.sh            the full run: 500 grants, 20 kills, 2 API server and 1 etcd restarts,
#                             with one operator, then with two under leader election (leader killed)
#   hack/faults.sh reduced    30 grants, 4 kills, 1 + 1 restarts, both ways (what CI runs, in hack/test.sh)
#
# The summary (kills, restarts, 429s, revocation lag, leaks, duplicates,
# violations) and the operators' logs land in target/faults/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
hack/local-cluster.sh build
export KUBE_JIT_FAULTS=${1:-full}
cargo test --release --test faults -- --nocapture
