#!/usr/bin/env bash
# A real Kubernetes control plane on loopback: etcd, kube-apiserver and
# kube-controller-manager, built from the pinned Go modules under hack/ and
# cached outside the work tree, keyed by version. With --node, also one node
# (containerd, runc, CNI, kubelet, kube-proxy; see hack/local-node.sh), the
# whole cluster inside a network namespace of its own.
#
#   hack/local-cluster.sh build [--node]  build whatever binaries are missing
#   hack/local-cluster.sh up [--node]     build, start (or reuse) the cluster, wait for /readyz
#                                         (and, with --node, for the node to be Ready)
#   hack/local-cluster.sh import <tar…>   import image archives into the node's containerd
#   hack/local-cluster.sh netns           print the node's network namespace (ip netns exec)
#   hack/local-cluster.sh env             print `export KUBECONFIG=… PATH=…` lines for eval
#   hack/local-cluster.sh status          say whether it runs, and where
#   hack/local-cluster.sh down            stop exactly the processes `up` started, remove state
#   hack/local-cluster.sh restart-apiserver | restart-etcd   (fault tests)
#   hack/local-cluster.sh versions | bin-dir | node-bin-dir
#
# Environment:
#   KUBE_JIT_CLUSTER_DIR   state directory (default: <repo>/.local-cluster)
#   KUBE_JIT_CACHE         binary cache (default: ~/.cache/kube-jit)
#   KUBE_JIT_CLUSTER_OWNER_PID  if set, the cluster stops itself when that process exits
#   KUBE_JIT_APISERVER_ARGS     extra kube-apiserver flags (space separated)
set -euo pipefail

HACK=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HACK")
STATE=${KUBE_JIT_CLUSTER_DIR:-$REPO/.local-cluster}

LOG_NAME=local-cluster
# shellcheck source=hack/lib.sh
source "$HACK/lib.sh"
K8S_VERSION=$(mod_version "$HACK/kubernetes/go.mod" k8s.io/kubernetes)
ETCD_VERSION=$(mod_version "$HACK/etcd/go.mod" go.etcd.io/etcd/server/v3)
K8S_BIN="$CACHE/bin/kubernetes-$K8S_VERSION"
ETCD_BIN="$CACHE/bin/etcd-$ETCD_VERSION"
# shellcheck source=hack/local-node.sh
source "$HACK/local-node.sh"

build_etcd() {
  [[ -x "$ETCD_BIN/etcd" ]] && return 0
  log "building etcd $ETCD_VERSION into $ETCD_BIN (first time only)"
  go_build_into "$ETCD_BIN" etcd "$HACK/etcd" etcd go.etcd.io/etcd/server/v3
}

build_kubernetes() {
  if [[ -x "$K8S_BIN/kube-apiserver" && -x "$K8S_BIN/kube-controller-manager" && -x "$K8S_BIN/kubectl" ]]; then
    return 0
  fi
  log "building kube-apiserver, kube-controller-manager, kubectl $K8S_VERSION into $K8S_BIN (first time only; several minutes)"
  go_build_into "$K8S_BIN" kubernetes "$HACK/kubernetes" "" -ldflags "$(k8s_ldflags)" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kubectl
}

# The version stamps `kubectl version` and the API server report.
k8s_ldflags() {
  local major minor ldflags=() key val
  IFS=. read -r major minor _ <<<"${K8S_VERSION#v}"
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    for kv in "gitVersion=$K8S_VERSION" "gitMajor=$major" "gitMinor=$minor" \
              "gitTreeState=clean" "buildDate=1970-01-01T00:00:00Z"; do
      key=${kv%%=*}; val=${kv#*=}
      ldflags+=("-X" "$pkg.$key=$val")
    done
  done
  echo "${ldflags[*]}"
}

cmd_build() {
  build_etcd
  build_kubernetes
  log "binaries: $ETCD_BIN/etcd, $K8S_BIN/{kube-apiserver,kube-controller-manager,kubectl}"
  if [[ ${NODE:-0} == 1 ]]; then
    build_node
    log "node binaries: $CONTAINERD_BIN, $RUNC_BIN, $CNI_BIN, $NODE_BIN"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

pid_alive() { recorded_pid "$1" >/dev/null; }

apiserver_ready() {
  [[ -f "$STATE/ports/apiserver" ]] || return 1
  curl -sf --max-time 2 --cacert "$STATE/pki/ca.crt" --cert "$STATE/pki/admin.crt" --key "$STATE/pki/admin.key" \
    "https://127.0.0.1:$(cat "$STATE/ports/apiserver")/readyz" >/dev/null 2>&1
}

# Certificates: one CA signs the apiserver's serving certificate and the
# client certificates of the admin and the controller-manager.
gen_pki() {
  local pki="$STATE/pki"
  mkdir -p "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=kube-jit-local-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  issue_cert() { # <name> <subject> <extensions>
    openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$pki/$1.key" -out "$pki/$1.csr" 2>/dev/null
    openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
      -days 3650 -extfile <(printf '%s\n' "$3") -out "$pki/$1.crt" 2>/dev/null
    rm -f "$pki/$1.csr"
  }
  issue_cert apiserver "/CN=kube-apiserver" \
    "subjectAltName=IP:127.0.0.1,IP:$NODE_IP,IP:$KUBERNETES_SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth"
  issue_cert admin "/O=system:masters/CN=kube-jit-admin" "extendedKeyUsage=clientAuth"
  issue_cert controller-manager "/CN=system:kube-controller-manager" "extendedKeyUsage=clientAuth"
  if [[ -f "$STATE/netns" ]]; then
    # The node's identities (Node authorizer and NodeRestriction know kubelets
    # by this name and group), and the API server's, for calls to the kubelet.
    issue_cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "extendedKeyUsage=clientAuth"
    issue_cert kube-proxy "/CN=system:kube-proxy" "extendedKeyUsage=clientAuth"
    issue_cert scheduler "/CN=system:kube-scheduler" "extendedKeyUsage=clientAuth"
    issue_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "extendedKeyUsage=clientAuth"
  fi
  # Service-account issuer: TokenRequest signs with the private key, the
  # apiserver verifies with the public one.
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
}

write_kubeconfig() { # <file> <user cert name> <user name> [<port>]
  local port=${4:-$(cat "$STATE/ports/apiserver")}
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kube-jit-local
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority: $STATE/pki/ca.crt
users:
- name: $3
  user:
    client-certificate: $STATE/pki/$2.crt
    client-key: $STATE/pki/$2.key
contexts:
- name: kube-jit-local
  context: {cluster: kube-jit-local, user: $3}
current-context: kube-jit-local
EOF
}

# Starts one process in its own session, recording its pid.
spawn() { # <name> <command...>
  local name=$1; shift
  # fd 9 is the lock `up` holds; children must not inherit it.
  setsid "$@" >"$STATE/logs/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$STATE/pids/$name"
}

wait_until() { # <what> <seconds> <command...>
  local what=$1 limit=$2; shift 2
  local start=$SECONDS
  until "$@"; do
    if (( SECONDS - start >= limit )); then
      die "$what not ready after ${limit}s; logs in $STATE/logs"
    fi
    sleep 0.2
  done
}

# The command prefix of the control plane's processes: none, or the node's
# network namespace.
cluster_ns() { [[ -f "$STATE/netns" ]] && in_netns; return 0; }

# The API server's port where the control plane runs.
apiserver_port() {
  if [[ -f "$STATE/netns" ]]; then echo "$INNER_APISERVER_PORT"; else cat "$STATE/ports/apiserver"; fi
}

start_etcd() {
  # shellcheck disable=SC2046
  spawn etcd $(cluster_ns) "$ETCD_BIN/etcd" --name local --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$(cat "$STATE/ports/etcd")" \
    --advertise-client-urls "http://127.0.0.1:$(cat "$STATE/ports/etcd")" \
    --listen-peer-urls "http://127.0.0.1:$(cat "$STATE/ports/etcd-peer")" \
    --initial-advertise-peer-urls "http://127.0.0.1:$(cat "$STATE/ports/etcd-peer")" \
    --initial-cluster "local=http://127.0.0.1:$(cat "$STATE/ports/etcd-peer")" \
    --listen-metrics-urls "" --log-level warn --unsafe-no-fsync
  # shellcheck disable=SC2046
  wait_until etcd 60 $(cluster_ns) curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$(cat "$STATE/ports/etcd")/health"
}

start_apiserver() {
  local extra=()
  [[ -f "$STATE/apiserver-args" ]] && read -r -a extra <"$STATE/apiserver-args"
  if [[ -f "$STATE/netns" ]]; then
    # Inside the node's namespace: reachable from Pods through the kubernetes
    # Service, and able to call the kubelet (logs, exec).
    extra+=(--bind-address 0.0.0.0 --advertise-address "$NODE_IP"
      --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction
      --admission-control-config-file "$STATE/admission.yaml"
      --kubelet-client-certificate "$STATE/pki/apiserver-kubelet-client.crt"
      --kubelet-client-key "$STATE/pki/apiserver-kubelet-client.key"
      --kubelet-preferred-address-types InternalIP)
  else
    extra+=(--bind-address 127.0.0.1 --advertise-address 127.0.0.1 --authorization-mode RBAC)
  fi
  # shellcheck disable=SC2046
  spawn kube-apiserver $(cluster_ns) "$K8S_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$(cat "$STATE/ports/etcd")" \
    --secure-port "$(apiserver_port)" \
    --cert-dir "$STATE/pki" \
    --tls-cert-file "$STATE/pki/apiserver.crt" --tls-private-key-file "$STATE/pki/apiserver.key" \
    --client-ca-file "$STATE/pki/ca.crt" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$STATE/pki/sa.pub" \
    --service-account-signing-key-file "$STATE/pki/sa.key" \
    --service-cluster-ip-range 10.96.0.0/16 \
    --audit-log-path "$STATE/logs/audit.log" --audit-policy-file "$STATE/audit-policy.yaml" \
    --audit-log-format json --audit-log-maxsize 200 \
    --profiling=false --v 0 \
    "${extra[@]}"
  wait_until kube-apiserver 120 apiserver_ready
}

start_controller_manager() {
  local controllers=serviceaccount,serviceaccount-token,garbagecollector,namespace,root-ca-cert-publisher,clusterrole-aggregation,deployment,replicaset
  # With a node, what Pods need too: Jobs (helm hooks), EndpointSlices
  # (Services), the node's lifecycle, and collection of finished Pods.
  [[ -f "$STATE/netns" ]] && controllers+=,job,endpointslice,nodelifecycle,podgc,ttl-after-finished,disruption
  # shellcheck disable=SC2046
  spawn kube-controller-manager $(cluster_ns) "$K8S_BIN/kube-controller-manager" \
    --kubeconfig "$STATE/controller-manager.kubeconfig" \
    --controllers "$controllers" \
    --use-service-account-credentials \
    --service-account-private-key-file "$STATE/pki/sa.key" \
    --root-ca-file "$STATE/pki/ca.crt" \
    --bind-address 127.0.0.1 --secure-port 0 --leader-elect=false --v 0
}

kubectl_admin() { "$K8S_BIN/kubectl" --kubeconfig "$STATE/admin.kubeconfig" "$@"; }

cmd_up() {
  mkdir -p "$(dirname "$STATE")"
  exec 9>"$STATE.lock"
  flock 9
  if apiserver_ready && pid_alive etcd && pid_alive kube-apiserver && pid_alive kube-controller-manager; then
    if [[ ${NODE:-0} == 1 && ! -f "$STATE/netns" ]]; then
      die "a cluster without a node runs at $STATE; stop it first: hack/local-cluster.sh down"
    fi
    if [[ ! -f "$STATE/netns" ]] || { pid_alive kubelet && node_ready; }; then
      log "already running at https://127.0.0.1:$(cat "$STATE/ports/apiserver") (state in $STATE)"
      return 0
    fi
  fi
  [[ ${NODE:-0} == 1 && $EUID != 0 ]] && die "a node needs root (network namespaces, mounts, cgroups)"
  cmd_build
  stop_all
  local start=$SECONDS
  mkdir -p "$STATE/pids" "$STATE/logs" "$STATE/ports"
  free_port >"$STATE/ports/apiserver"
  if [[ ${NODE:-0} == 1 ]]; then
    # Pods can reach the node: Pod Security's baseline level, enforced in every
    # namespace unless it says otherwise, keeps hostPath, host namespaces and
    # privileged containers (and with them the node's files and every token on
    # it) from anyone who may merely create Pods.
    cat >"$STATE/admission.yaml" <<'EOF'
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: PodSecurity
  configuration:
    apiVersion: pod-security.admission.config.k8s.io/v1
    kind: PodSecurityConfiguration
    defaults: {enforce: baseline, enforce-version: latest}
    exemptions: {namespaces: [kube-system]}
EOF
    create_netns
    # etcd's ports are the namespace's own.
    echo 2379 >"$STATE/ports/etcd"; echo 2380 >"$STATE/ports/etcd-peer"
  else
    for p in etcd etcd-peer; do free_port >"$STATE/ports/$p"; done
  fi
  echo "${KUBE_JIT_APISERVER_ARGS:-}" >"$STATE/apiserver-args"
  # Metadata-level audit of everything but reads of events and leases: enough to
  # join a grant ServiceAccount's calls to kube-jit's own audit lines.
  cat >"$STATE/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  resources: [{group: "coordination.k8s.io", resources: [leases]}]
- level: Metadata
EOF
  log "starting etcd $ETCD_VERSION, kube-apiserver and kube-controller-manager $K8S_VERSION (state in $STATE)"
  gen_pki
  [[ -f "$STATE/netns" ]] && start_forward
  start_etcd
  start_apiserver
  write_kubeconfig "$STATE/admin.kubeconfig" admin kube-jit-admin
  write_kubeconfig "$STATE/controller-manager.kubeconfig" controller-manager system:kube-controller-manager "$(apiserver_port)"
  start_controller_manager
  # The serviceaccount controller creating `default` proves the controller-manager works.
  wait_until "serviceaccount controller" 60 kubectl_admin get serviceaccount default -n default -o name --request-timeout 2s >/dev/null 2>&1
  if [[ -f "$STATE/netns" ]]; then
    log "starting the node: containerd $CONTAINERD_VERSION, runc $RUNC_VERSION, CNI plugins $CNI_VERSION, kubelet and kube-proxy $K8S_VERSION"
    write_kubeconfig "$STATE/kubelet.kubeconfig" kubelet "system:node:$NODE_NAME" "$INNER_APISERVER_PORT"
    write_kubeconfig "$STATE/kube-proxy.kubeconfig" kube-proxy system:kube-proxy "$INNER_APISERVER_PORT"
    write_kubeconfig "$STATE/scheduler.kubeconfig" scheduler system:kube-scheduler "$INNER_APISERVER_PORT"
    start_node
    log "node $NODE_NAME Ready (network namespace $(cat "$STATE/netns"))"
  fi
  if [[ -n "${KUBE_JIT_CLUSTER_OWNER_PID:-}" ]]; then
    KUBE_JIT_CLUSTER_DIR="$STATE" setsid bash -c \
      'while kill -0 "$1" 2>/dev/null && [[ -d "$KUBE_JIT_CLUSTER_DIR/pids" ]]; do sleep 1; done; exec "$2" down' \
      _ "$KUBE_JIT_CLUSTER_OWNER_PID" "$HACK/local-cluster.sh" >/dev/null 2>&1 </dev/null 9>&- &
  fi
  log "ready in $((SECONDS - start))s at https://127.0.0.1:$(cat "$STATE/ports/apiserver")"
  log "use it with: eval \"\$(hack/local-cluster.sh env)\""
}

# The recorded pid of <name>, if that process still runs and is ours: every
# command `up` starts names the state directory, so a pid the system has
# since given to another process is never signalled.
recorded_pid() { # <name>
  local pid
  [[ -f "$STATE/pids/$1" ]] || return 1
  pid=$(cat "$STATE/pids/$1")
  { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF -- "$STATE" || return 1
  echo "$pid"
}

# Stops the processes whose pids `up` recorded: the node's at once (and
# everything in its namespace and cgroups), the control plane's with TERM,
# then KILL after 10 s.
stop_all() {
  [[ -d "$STATE/pids" ]] || return 0
  local name pid
  stop_node
  for name in kube-scheduler kube-proxy kubelet containerd forward forward-inner; do
    if pid=$(recorded_pid "$name"); then kill -KILL "$pid" 2>/dev/null || true; fi
    rm -f "$STATE/pids/$name"
  done
  for name in kube-controller-manager kube-apiserver etcd; do
    if pid=$(recorded_pid "$name"); then kill -TERM "$pid" 2>/dev/null || true; fi
  done
  for name in kube-controller-manager kube-apiserver etcd; do
    if pid=$(recorded_pid "$name"); then
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$STATE/pids/$name"
  done
}

cmd_down() {
  [[ -d "$STATE" ]] || { log "nothing running at $STATE"; return 0; }
  exec 9>"$STATE.lock"
  flock 9
  stop_all
  rm -rf "$STATE"
  rm -f "$STATE.lock"
  log "stopped and removed $STATE"
}

cmd_env() {
  [[ -f "$STATE/admin.kubeconfig" ]] || die "no cluster at $STATE; run: hack/local-cluster.sh up"
  printf 'export KUBECONFIG=%q\n' "$STATE/admin.kubeconfig"
  printf 'export PATH=%q:"$PATH"\n' "$K8S_BIN"
}

cmd_status() {
  if apiserver_ready; then
    echo "running: https://127.0.0.1:$(cat "$STATE/ports/apiserver") (state in $STATE)"
    local names=(etcd kube-apiserver kube-controller-manager)
    [[ -f "$STATE/netns" ]] && names+=(forward forward-inner containerd kubelet kube-proxy kube-scheduler)
    [[ -f "$STATE/netns" ]] && echo "  node $NODE_NAME in network namespace $(cat "$STATE/netns")"
    for name in "${names[@]}"; do
      if pid_alive "$name"; then echo "  $name pid $(cat "$STATE/pids/$name")"; else echo "  $name not running"; fi
    done
  else
    echo "not running (state dir $STATE)"; return 1
  fi
}

# Restarts for fault-injection tests: same ports, same state.
cmd_restart_apiserver() {
  pid_alive kube-apiserver && kill -KILL "$(cat "$STATE/pids/kube-apiserver")"
  sleep 0.5
  start_apiserver
}
cmd_restart_etcd() {
  pid_alive etcd && kill -KILL "$(cat "$STATE/pids/etcd")"
  sleep 0.5
  start_etcd
}

main() {
  [[ ${2:-} == --node ]] && NODE=1
  case "${1:-}" in
    build) cmd_build ;;
    up) cmd_up ;;
    import) shift; [[ -f "$STATE/netns" ]] || die "no node at $STATE (up --node)"; import_images "$@" ;;
    netns) [[ -f "$STATE/netns" ]] || die "no node at $STATE (up --node)"; cat "$STATE/netns" ;;
    node-bin-dir) echo "$NODE_BIN" ;;
    down) cmd_down ;;
    env) cmd_env ;;
    status) cmd_status ;;
    restart-apiserver) cmd_restart_apiserver ;;
    restart-etcd) cmd_restart_etcd ;;
    bin-dir) echo "$K8S_BIN" ;;
    versions) echo "kubernetes $K8S_VERSION"; echo "etcd $ETCD_VERSION"
      echo "containerd $CONTAINERD_VERSION"; echo "runc $RUNC_VERSION"; echo "cni-plugins $CNI_VERSION" ;;
    *) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
}

# Called on one line with exit, so editing this file while it runs is harmless.
main "$@"; exit $?
