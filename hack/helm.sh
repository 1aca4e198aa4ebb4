#!/usr/bin/env bash
# Helm, built from the pinned Go module under hack/helm/ and cached outside
# the work tree, keyed by version, like the local control plane.
#
#   hack/helm.sh build              build helm if it is missing (a no-op when cached)
#   hack/helm.sh path               print the helm binary's path (building it first)
#   hack/helm.sh lint               helm lint --strict the chart, with its default values and each ci/*.yaml
#   hack/helm.sh template [ARGS…]   render the chart as release kube-jit in kube-jit-system
#   hack/helm.sh operator-rbac      print deploy/operator-rbac.yaml as the chart renders it
#   hack/helm.sh generate           rewrite the generated files: deploy/operator-rbac.yaml (RBAC and FlowSchemas),
#                                   the chart's copies of crds/
#   hack/helm.sh exec ARGS…         run helm with ARGS
#
# Environment:
#   KUBE_JIT_CACHE   binary cache (default: ~/.cache/kube-jit)
set -euo pipefail
# A failing `helm template` inside $(...) must fail the script, not write half a file.
shopt -s inherit_errexit

HACK=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HACK")
LOG_NAME=helm
# shellcheck source=hack/lib.sh
source "$HACK/lib.sh"
HELM_VERSION=$(mod_version "$HACK/helm/go.mod" helm.sh/helm/v3)
HELM_BIN="$CACHE/bin/helm-$HELM_VERSION"
HELM="$HELM_BIN/helm"
CHART="$REPO/charts/kube-jit"

cmd_build() {
  [[ -x "$HELM" ]] && return 0
  log "building helm $HELM_VERSION into $HELM_BIN (first time only)"
  # The ldflags helm's own Makefile sets: its version, and the Kubernetes
  # version its client libraries speak (`.Capabilities.KubeVersion` in templates).
  local client_go major minor
  client_go=$(mod_version "$HACK/helm/go.mod" k8s.io/client-go)
  IFS=. read -r major minor _ <<<"${client_go#v}"
  local ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $pkg.k8sVersionMajor=$((major + 1)) -X $pkg.k8sVersionMinor=$minor"
  done
  go_build_into "$HELM_BIN" helm "$HACK/helm" helm -ldflags "$ldflags" helm.sh/helm/v3/cmd/helm
}

helm() { cmd_build; "$HELM" "$@"; }

cmd_lint() {
  helm lint --strict "$CHART"
  local values
  for values in "$CHART"/ci/*.yaml; do
    helm lint --strict "$CHART" --namespace kube-jit-system --values "$values"
  done
}

cmd_template() {
  helm template kube-jit "$CHART" --namespace kube-jit-system "$@"
}

# The chart's RBAC and API priority (FlowSchemas) with its default values, for
# `kubectl apply` without Helm.
# Helm's bookkeeping labels are left out: Helm does not manage these objects.
cmd_operator_rbac() {
  local rendered
  rendered=$(cmd_template --show-only templates/grants-namespace.yaml --show-only templates/serviceaccount.yaml \
    --show-only templates/rbac.yaml --show-only templates/flowcontrol.yaml)
  cat <<'HEAD'
# Generated from charts/kube-jit by `hack/helm.sh generate`; do not edit (a test
# fails when it drifts). The grants namespace, the operator's ServiceAccount,
# least-privilege RBAC and API priority (FlowSchemas and PriorityLevelConfigurations that keep its
# revocations from queueing behind other clients) as plain manifests, with the
# chart's default values: the grantable ClusterRoles
# are `view` and `edit` (the `bind` resourceNames). For your cluster, render the
# chart with `rbac.grantableClusterRoles` listing the roles your AccessPolicies
# can grant, and nothing else.
apiVersion: v1
kind: Namespace
metadata:
  name: kube-jit-system
HEAD
  grep -v -e '^    helm.sh/chart: ' -e '^    app.kubernetes.io/managed-by: Helm$' <<<"$rendered"
}

cmd_generate() {
  mkdir -p "$CHART/files"
  cp "$REPO/crds/kube-jit.crds.yaml" "$REPO/crds/kube-jit.admission.yaml" "$CHART/files/"
  local out="$REPO/deploy/operator-rbac.yaml" rbac
  rbac=$(cmd_operator_rbac)
  printf '%s\n' "$rbac" >"$out"
  log "wrote $CHART/files/ and $out"
}

main() {
  case "${1:-}" in
    build) cmd_build ;;
    path) cmd_build; echo "$HELM" ;;
    lint) cmd_lint ;;
    template) shift; cmd_template "$@" ;;
    operator-rbac) cmd_operator_rbac ;;
    generate) cmd_generate ;;
    exec) shift; helm "$@" ;;
    version) echo "helm $HELM_VERSION" ;;
    *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
}

main "$@"; exit $?
