#!/usr/bin/env bash
# The kube-jit benchmark: builds the operator, starts a control plane of its
# own, runs the operator as a separate process under deploy/operator-rbac.yaml,
# and runs benches/grants (grant latency, revocation lag, burst economy, scale),
# each figure beside a floor measured in the same run. See BENCHMARKS.md.
#
#   hack/bench.sh [--reduced] [--out DIR] [--scale N]
#
#   --reduced   small counts, seconds not minutes, debug build (what CI runs so
#               the harness cannot rot); fails on leaks, asserts no target
#   --out DIR   where bench-results.json, summary.txt and the SVG plots go
#               (default: target/bench/<full|reduced>)
#   --scale N   live grants of the scale section (full: 10000, reduced: 100)
#   --revocation N[,N]  grants due together, per revocation round (full: 100,1000)
#   --only S[,S]  run only these sections: latency, revocation, burst, scale, workload
#               (without latency, a short calibration round aims the others)
#
# KUBE_JIT_BENCH_KEEP_AUDIT=1 keeps the control plane's logs (the audit log among them) in DIR too.
# Environment: KUBE_JIT_BENCH_APISERVER_ARGS replaces the kube-apiserver flags
# below; KUBE_JIT_BENCH_PROFILE (release|dev) overrides the build profile;
# KUBE_JIT_BENCH_OPERATOR runs this program instead of the built kube-jit,
# with the same arguments (a wrapper that profiles it, for example
# `exec heaptrack -o /tmp/heap target/release/kube-jit "$@"`; memory figures
# then read the wrapper's process).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

main() {

  reduced=false
  out=
  scale=
  revocation=
  only=
  while (( $# )); do
    case "$1" in
      --reduced) reduced=true ;;
      --out) out=${2:?--out needs a directory}; shift ;;
      --scale) scale=${2:?--scale needs a number}; shift ;;
      --revocation) revocation=${2:?--revocation needs numbers}; shift ;;
      --only) only=${2:?--only needs sections}; shift ;;
      -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
      *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
  done
  mode=full; $reduced && mode=reduced
  out=${out:-target/bench/$mode}
  mkdir -p "$out"
  out=$(cd "$out" && pwd)

  # The reduced run checks the harness, not speed: a debug build reuses what
  # hack/test.sh already compiled. Figures worth reading need the release build.
  profile=${KUBE_JIT_BENCH_PROFILE:-$($reduced && echo dev || echo release)}
  # Priority-and-fairness off and the in-flight limits raised, so neither
  # kube-jit nor the floor client (100 requests in flight, plus probes) is
  # queued by the API server's own throttling: the figures are about the work.
  # A larger audit log so a full run is never rotated away mid-measurement.
  apiserver_args=${KUBE_JIT_BENCH_APISERVER_ARGS:---enable-priority-and-fairness=false --max-requests-inflight=2000 --max-mutating-requests-inflight=1000 --audit-log-maxsize=4000}

  start=$SECONDS
  echo "== building kube-jit and the benchmark ($profile)"
  target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  if [[ $profile == release ]]; then
    cargo build --release --bin kube-jit
    operator="$target_dir/release/kube-jit"
  else
    cargo build --bin kube-jit
    operator="$target_dir/debug/kube-jit"
  fi
  cargo bench --profile "$profile" --bench grants --no-run
  operator=${KUBE_JIT_BENCH_OPERATOR:-$operator}

  hack/local-cluster.sh build
  state=$(mktemp -d -t kube-jit-bench.XXXXXX)
  export KUBE_JIT_CLUSTER_DIR="$state/cluster"
  cleanup() {
    # The operator is the benchmark's child; should the benchmark be killed, it must not outlive the run.
    if [[ -f $KUBE_JIT_CLUSTER_DIR/operator.pid ]]; then kill "$(cat "$KUBE_JIT_CLUSTER_DIR/operator.pid")" 2>/dev/null || true; fi
    hack/local-cluster.sh down >/dev/null 2>&1 || true
    rm -rf "$state"
  }
  trap cleanup EXIT
  # The cluster also stops itself if this script dies without running its trap.
  KUBE_JIT_APISERVER_ARGS="$apiserver_args" KUBE_JIT_CLUSTER_OWNER_PID=$$ hack/local-cluster.sh up

  echo "== running the $mode benchmark"
  args=(--out "$out" --cluster-dir "$KUBE_JIT_CLUSTER_DIR" --operator "$operator"
        --apiserver-args "$apiserver_args" --profile "$profile")
  $reduced && args+=(--reduced)
  [[ -n $scale ]] && args+=(--scale "$scale")
  [[ -n $revocation ]] && args+=(--revocation "$revocation")
  [[ -n $only ]] && args+=(--only "$only")
  status=0
  cargo bench --profile "$profile" --bench grants -- "${args[@]}" || status=$?
  # Keep the operator's logs of the run beside the figures (the cluster goes).
  cp "$KUBE_JIT_CLUSTER_DIR"/operator-*.log "$out/" 2>/dev/null || true
  if [[ ${KUBE_JIT_BENCH_KEEP_AUDIT:-} == 1 ]]; then cp "$KUBE_JIT_CLUSTER_DIR"/logs/*.log "$out/" 2>/dev/null || true; fi
  echo "== hack/bench.sh ($mode) finished in $((SECONDS - start))s with status $status"
  return $status
}

# Called on one line with exit, so editing this file while it runs is harmless.
main "$@"; exit $?
