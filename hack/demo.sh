#!/usr/bin/env bash
# The kube-jit story on a real local control plane: an AI agent with no
# standing privilege asks for access, is granted it for seconds, uses it, is
# refused out of scope, and loses it at expiry. Prints the timings it saw.
#
#   hack/demo.sh              run the story (the cluster keeps running after; the operator stops)
#   GRANT_SECONDS=30 hack/demo.sh
#   hack/demo.sh --node       the same story as users run it: a node, the image,
#                             helm install, the agent as a Pod (hack/demo-node.sh; root)
# Without --node, a cluster that already has a node also runs the Pod story.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
case "${1:-}" in
  --node) exec hack/demo-node.sh ;;
  '') ;;
  *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
if hack/local-cluster.sh netns >/dev/null 2>&1 && hack/local-cluster.sh status >/dev/null 2>&1; then
  exec hack/demo-node.sh
fi

GRANT_SECONDS=${GRANT_SECONDS:-20}
if [[ -t 1 && -z "${NO_COLOR:-}" ]]; then B=$'\033[1m' G=$'\033[32m' R=$'\033[31m' D=$'\033[2m' N=$'\033[0m'; else B='' G='' R='' D='' N=''; fi
say() { printf '\n%s==> %s%s\n' "$B" "$*" "$N"; }
run() { printf '%s$ %s%s\n' "$D" "$*" "$N"; "$@"; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[1]) - float(sys.argv[2]):+.3f}s')" "$1" "$2"; }
epoch_of() { python3 -c "import sys,datetime; print(datetime.datetime.fromisoformat(sys.argv[1].replace('Z','+00:00')).timestamp())" "$1"; }

say "1. A real control plane on loopback (etcd, kube-apiserver, kube-controller-manager)"
hack/local-cluster.sh up
eval "$(hack/local-cluster.sh env)"
STATE=$(dirname "$KUBECONFIG")
run kubectl version

say "2. Install the kube-jit CRDs, admission policies, the operator's RBAC and grants namespace; build the operator"
run kubectl apply --server-side -f crds/ >/dev/null
run kubectl apply --server-side -f deploy/operator-rbac.yaml >/dev/null
kubectl wait --for=condition=Established --timeout=60s -f crds/kube-jit.crds.yaml >/dev/null
echo "building kube-jit (the first build takes a few minutes)"
cargo build --quiet --bin kube-jit
kubectl get crd -o name | grep kubejit.io

say "3. Namespaces: the agent lives in 'agents'; it may debug 'payments', never 'billing'"
for ns in agents payments billing; do kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null; done
kubectl label namespace payments kubejit.io/debuggable=true --overwrite >/dev/null
kubectl create serviceaccount deploy-bot -n agents --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl apply -f examples/rbac/requester.yaml >/dev/null
kubectl create rolebinding deploy-bot-requester -n agents --clusterrole kube-jit-requester \
  --serviceaccount agents:deploy-bot --dry-run=client -o yaml | kubectl apply -f - >/dev/null
run kubectl apply -f examples/policies/read-only-debugging.yaml

# kubectl as someone holding only a bearer token (no admin certificate).
as_token() { local token=$1; shift; kubectl --kubeconfig "$STATE/token.kubeconfig" --token "$token" "$@"; }
# Shows the command with the token's name instead of the token.
run_as() { local label=$1 token=$2; shift 2; printf '%s$ kubectl --token=$%s %s%s\n' "$D" "$label" "$*" "$N"; as_token "$token" "$@"; }
# A kubeconfig for this cluster with the bearer token $1 (none if empty).
token_kubeconfig() {
  cat <<EOF
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')", certificate-authority: "$STATE/pki/ca.crt"}}]
users: [{name: token, user: {${1:+token: $1}}}]
contexts: [{name: local, context: {cluster: local, user: token}}]
current-context: local
EOF
}
token_kubeconfig >"$STATE/token.kubeconfig"

say "4. Start the operator as its own ServiceAccount, with its least-privilege RBAC (logs: $STATE/logs/kube-jit.log)"
token_kubeconfig "$(kubectl create token kube-jit -n kube-jit-system --duration 2h)" >"$STATE/operator.kubeconfig"
KUBECONFIG="$STATE/operator.kubeconfig" KUBE_JIT_LOG_LEVEL=info target/debug/kube-jit run --http-addr '' \
  >"$STATE/logs/kube-jit.log" 2>&1 &
OPERATOR=$!
trap 'kill $OPERATOR 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q 'start-up revocation done' "$STATE/logs/kube-jit.log" && break; sleep 0.1; done
echo "operator running (pid $OPERATOR)"

# The operator trusts a request's claims only if it was made at least 5 s after
# kube-jit's admission policies were last written (README: AdmissionNotProven).
LAST_WRITE=$(kubectl get validatingadmissionpolicies,validatingadmissionpolicybindings -o \
  jsonpath='{range .items[*]}{.metadata.creationTimestamp}{"\n"}{range .metadata.managedFields[*]}{.time}{"\n"}{end}{end}' \
  | sort | tail -1)
while python3 -c "import sys,time; sys.exit(0 if time.time() < float(sys.argv[1]) + 6 else 1)" "$(epoch_of "$LAST_WRITE")"; do
  sleep 0.2
done

say "5. The agent authenticates as its own ServiceAccount, which holds nothing"
AGENT=$(kubectl create token deploy-bot -n agents --duration 1h)
run_as AGENT "$AGENT" auth whoami
printf 'can it list pods in payments? '; as_token "$AGENT" auth can-i list pods -n payments || true

say "6. It asks for read access to 'payments' for ${GRANT_SECONDS}s, saying why"
REQ=debug-$(date +%H%M%S)
T_REQUEST=$(now)
as_token "$AGENT" create -f - <<EOF
apiVersion: kubejit.io/v1alpha1
kind: AccessRequest
metadata: {name: $REQ, namespace: agents}
spec:
  requester: {user: "system:serviceaccount:agents:deploy-bot"}
  role: {kind: ClusterRole, name: view}
  namespaces: [payments]
  duration: ${GRANT_SECONDS}s
  purpose: "read pods to find why the payments rollout is failing"
EOF
# Wait for Granted; any other end is a failure worth its reason.
PHASE=
for _ in $(seq 300); do
  PHASE=$(kubectl get accessrequest "$REQ" -n agents -o jsonpath='{.status.phase}')
  case "$PHASE" in
    Granted) break ;;
    Denied|Failed|Revoked|Expired)
      echo "${R}the request ended $PHASE:${N}" >&2
      kubectl get accessrequest "$REQ" -n agents \
        -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}' >&2
      exit 1 ;;
  esac
  sleep 0.1
done
[[ "$PHASE" == Granted ]] || { echo "${R}not Granted after 30s (phase '$PHASE'); see $STATE/logs/kube-jit.log${N}" >&2; exit 1; }
run kubectl get accessrequest "$REQ" -n agents
GRANT_SA=$(kubectl get accessrequest "$REQ" -n agents -o jsonpath='{.status.grant.serviceAccount.name}')
GRANT_NS=$(kubectl get accessrequest "$REQ" -n agents -o jsonpath='{.status.grant.serviceAccount.namespace}')
EXPIRES=$(kubectl get accessrequest "$REQ" -n agents -o jsonpath='{.status.grant.expiresAt}')

say "7. Only the agent may mint a token for its grant identity ($GRANT_NS/$GRANT_SA); it uses it"
# The right to mint reaches the API server's authorizer a moment after Granted: retry for 10 s.
for attempt in $(seq 100); do
  GRANT=$(as_token "$AGENT" create token "$GRANT_SA" -n "$GRANT_NS" --duration 10m 2>/dev/null) && break
  if [[ $attempt == 100 ]]; then as_token "$AGENT" create token "$GRANT_SA" -n "$GRANT_NS" --duration 10m; exit 1; fi
  sleep 0.1
done
until as_token "$GRANT" get pods -n payments >/dev/null 2>&1; do sleep 0.05; done
T_FIRST=$(now)
run_as GRANT "$GRANT" get pods -n payments
echo "${G}granted: request → first successful call in $(since "$T_FIRST" "$T_REQUEST")${N}"

say "8. Out of scope is refused"
printf 'list pods in billing?   '; as_token "$GRANT" auth can-i list pods -n billing || true
printf 'delete pods in payments? '; as_token "$GRANT" auth can-i delete pods -n payments || true
as_token "$GRANT" get secrets -n billing 2>&1 | sed "s/^/${R}/; s/\$/${N}/" || true

say "9. Expiry at $EXPIRES: the operator revokes on the second"
E=$(epoch_of "$EXPIRES")
while as_token "$GRANT" get pods -n payments >/dev/null 2>&1; do sleep 0.05; done
T_403=$(now)
echo "${G}forbidden (403) at expiresAt $(since "$T_403" "$E")${N}"
until [[ "$(as_token "$GRANT" get pods -n payments 2>&1 || true)" == *Unauthorized* ]]; do sleep 0.1; done
T_401=$(now)
echo "${G}token rejected (401) at expiresAt $(since "$T_401" "$E")${N} ${D}(the API server caches successful token checks ~10 s)${N}"
run kubectl get accessrequest "$REQ" -n agents
printf 'objects kube-jit still manages: '
kubectl get serviceaccounts,roles,rolebindings -A -l app.kubernetes.io/managed-by=kube-jit -o name | wc -l

say "10. The audit trail (target kube_jit::audit in the operator's JSON log)"
python3 - "$STATE/logs/kube-jit.log" "agents/$REQ" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    try: e = json.loads(line)
    except ValueError: continue
    if e.get("target") == "kube_jit::audit" and e.get("request") == sys.argv[2]:
        print(f'{e["timestamp"]}  {e["event"]:<9} grant={e["grant_id"] or "-":<12} {e["requester"]} {e["what"]} in {e["namespaces"]} "{e["purpose"]}"')
EOF

say "Done. The cluster keeps running (the operator stopped with the demo):"
echo '    eval "$(hack/local-cluster.sh env)"; kubectl get jit -A'
echo '    hack/local-cluster.sh down    # stop it'
