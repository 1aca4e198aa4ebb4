#!/usr/bin/env bash
# The kube-jit story as users run it (hack/demo.sh --node): a local cluster
# with a real node, kube-jit's image built here, the chart installed by helm,
# and the example agent running as a Pod. The agent authenticates with the
# token the kubelet projected into it, asks for read access for a few seconds,
# uses it, and loses it at expiry. Prints the timings it saw. Needs root.
#
#   hack/demo.sh --node
#   GRANT_SECONDS=30 hack/demo.sh --node
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

GRANT_SECONDS=${GRANT_SECONDS:-20}
if [[ -t 1 && -z "${NO_COLOR:-}" ]]; then B=$'\033[1m' G=$'\033[32m' R=$'\033[31m' D=$'\033[2m' N=$'\033[0m'; else B='' G='' R='' D='' N=''; fi
say() { printf '\n%s==> %s%s\n' "$B" "$*" "$N"; }
run() { printf '%s$ %s%s\n' "$D" "$*" "$N"; "$@"; }
took() { printf '%s%s: %ss%s\n' "$G" "$1" "$((SECONDS - $2))" "$N"; }
[[ $# == 0 ]] || { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
(( EUID == 0 )) || { echo "${R}a node needs root (network namespaces, mounts, cgroups)${N}" >&2; exit 1; }

say "1. A local cluster with a node: control plane, containerd, runc, CNI, kubelet, kube-proxy"
t=$SECONDS
hack/local-cluster.sh up --node
took "cluster and node up" "$t"
eval "$(hack/local-cluster.sh env)"
run kubectl get nodes -o wide

say "2. Build kube-jit's images here (static binaries in images from scratch) and import them into the node"
t=$SECONDS
hack/image.sh build
hack/local-cluster.sh import target/images/kube-jit.tar target/images/kube-jit-agent.tar
took "images built and imported" "$t"

say "3. helm install charts/kube-jit, default values plus the local image"
t=$SECONDS
run hack/helm.sh exec upgrade --install kube-jit charts/kube-jit --namespace kube-jit-system --create-namespace \
  --set image.repository=docker.io/library/kube-jit,image.tag=local,image.pullPolicy=Never --wait --timeout 5m >/dev/null
took "helm install until Ready" "$t"
run kubectl get pods -n kube-jit-system -o wide
printf 'leader (the Lease holder): '
kubectl get lease kube-jit -n kube-jit-system -o jsonpath='{.spec.holderIdentity}{"\n"}'

say "4. The agent 'agents/planner' may only ask; policy: view in 'payments', on its own token or a grant identity"
for ns in agents payments; do kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null; done
kubectl create serviceaccount planner -n agents --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl apply -f examples/rbac/requester.yaml >/dev/null
kubectl create rolebinding planner-requester -n agents --clusterrole kube-jit-requester \
  --serviceaccount agents:planner --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl apply -f - <<'EOF'
apiVersion: kubejit.io/v1alpha1
kind: AccessPolicy
metadata: {name: planner-reads-payments}
spec:
  subjects:
    serviceAccounts: [{namespace: agents, name: planner}]
    agents: [{namespace: agents, name: planner}]
  grants: {clusterRoles: [view], namespaces: {names: [payments]}}
  duration: {default: 5m, max: 30m}
  purpose: {required: true}
  delivery: {requesterServiceAccount: true}
EOF
# The operator trusts a request's claims only once kube-jit's admission
# policies have been in force a few seconds (README: AdmissionNotProven).
sleep 6

# agent_pod NAME LABELS ARGS: the example agent as Pod NAME of agents/planner,
# labelled LABELS (a YAML map), with ARGS (YAML flow items) after the common ones.
agent_pod() {
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: agents, labels: $2}
spec:
  serviceAccountName: planner
  restartPolicy: Never
  terminationGracePeriodSeconds: 5
  containers:
  - name: agent
    image: docker.io/library/kube-jit-agent:local
    imagePullPolicy: Never
    args: [--namespace, agents, --target-namespace, payments, $3]
    securityContext:
      runAsNonRoot: true
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities: {drop: [ALL]}
      seccompProfile: {type: RuntimeDefault}
EOF
}

for delivery in ephemeral-service-account requester-service-account; do
  pod=agent-$(date +%H%M%S)
  say "5. The agent runs as Pod agents/$pod ($delivery): asks for ${GRANT_SECONDS}s, uses it, waits for expiry"
  agent_pod "$pod" "{}" "--duration, ${GRANT_SECONDS}s, --purpose, \"read pods to find why the payments rollout fails\", --until-expiry, --delivery, $delivery"
  phase=
  for _ in $(seq $((GRANT_SECONDS * 10 + 1200))); do
    phase=$(kubectl get pod "$pod" -n agents -o jsonpath='{.status.phase}')
    [[ $phase == Succeeded || $phase == Failed ]] && break
    sleep 0.1
  done
  run kubectl logs -n agents "$pod"
  [[ $phase == Succeeded ]] || { echo "${R}the agent pod ended '$phase'${N}" >&2; exit 1; }
done

say "6. Pin the agent to its Pods (docs/workload-binding.md): only a Pod labelled app=planner, running this image digest"
digest=$(kubectl get pod "$pod" -n agents -o jsonpath='{.status.containerStatuses[0].imageID}')
digest=sha256:${digest##*sha256:}
kubectl apply -f - <<EOF
apiVersion: kubejit.io/v1alpha1
kind: AgentIdentity
metadata: {name: planner, namespace: agents}
spec:
  owner: platform-team
  serviceAccountName: planner
  workload: {required: true, podSelector: {matchLabels: {app: planner}}, images: [$digest]}
EOF
# The operator has seen it once it answers in status.
for _ in $(seq 300); do
  [[ -n $(kubectl get agentidentity planner -n agents -o jsonpath='{.status.spiffeId}') ]] && break
  sleep 0.1
done
pinned=planner-$(date +%H%M%S)
agent_pod "$pinned" "{app: planner}" "--duration, 10m, --for-agent, planner, --hold, --purpose, \"watch the payments rollout\""
request=
for _ in $(seq 1200); do
  request=$(kubectl get accessrequests -n agents -o jsonpath="{range .items[?(@.status.workload.pod=='$pinned')]}{.metadata.name}{end}")
  [[ -n $request && $(kubectl get accessrequest "$request" -n agents -o jsonpath='{.status.phase}') == Granted ]] && break
  sleep 0.1
done
[[ -n $request ]] || { echo "${R}no grant bound to Pod $pinned${N}" >&2; kubectl logs -n agents "$pinned" >&2; exit 1; }
echo "Granted, bound to the Pod it was asked from (status.workload):"
kubectl get accessrequest "$request" -n agents -o jsonpath='{.status.workload}' | python3 -m json.tool
say "7. The Pod goes, and the grant with it (WorkloadGone): its bindings, identity and the Secret its tokens are bound to"
run kubectl delete pod "$pinned" -n agents --wait=false
for _ in $(seq 300); do
  [[ $(kubectl get accessrequest "$request" -n agents -o jsonpath='{.status.phase}') == Revoked ]] && break
  sleep 0.1
done
kubectl get accessrequest "$request" -n agents \
  -o jsonpath='{.status.phase}{": "}{.status.conditions[?(@.type=="Revoked")].reason}{": "}{.status.conditions[?(@.type=="Revoked")].message}{"\n"}'
[[ $(kubectl get accessrequest "$request" -n agents -o jsonpath='{.status.phase}') == Revoked ]] \
  || { echo "${R}the grant outlived its Pod${N}" >&2; exit 1; }

say "8. Every request, and what kube-jit made for it (nothing is left)"
run kubectl get accessrequests -n agents
printf 'objects kube-jit still manages: '
kubectl get serviceaccounts,roles,rolebindings -A -l app.kubernetes.io/managed-by=kube-jit -o name | wc -l

say "Done. The cluster keeps running:"
dir=${KUBE_JIT_CLUSTER_DIR:+KUBE_JIT_CLUSTER_DIR=$KUBE_JIT_CLUSTER_DIR }
echo "    eval \"\$(${dir}hack/local-cluster.sh env)\"; kubectl get jit -A"
echo '    kubectl logs -n kube-jit-system "$(kubectl get lease kube-jit -n kube-jit-system -o jsonpath={.spec.holderIdentity})"   # the leader'
echo '    hack/helm.sh exec uninstall kube-jit -n kube-jit-system   # runs the pre-delete Job'
echo "    ${dir}hack/local-cluster.sh down    # stop it all"
