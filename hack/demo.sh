#!/usr/bin/env bash
# The kube-jit story on a real local control plane: starts (or reuses) the
# cluster from hack/local-cluster.sh, installs the CRDs, and shows them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "Starting the local control plane (etcd, kube-apiserver, kube-controller-manager)"
hack/local-cluster.sh up
eval "$(hack/local-cluster.sh env)"
kubectl version

say "Installing the kube-jit CRDs"
kubectl apply --server-side -f crds/
kubectl wait --for=condition=Established --timeout=60s -f crds/
kubectl get crd -l '!kubejit.io/none' -o custom-columns=CRD:.metadata.name,ESTABLISHED:.status.conditions[?\(@.type==\"Established\"\)].status

say "Done. The cluster keeps running; use it with:"
echo '    eval "$(hack/local-cluster.sh env)"; kubectl get jit -A'
echo '    hack/local-cluster.sh down    # stop it'
