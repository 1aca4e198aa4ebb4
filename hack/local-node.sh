# One node for the local control plane (hack/local-cluster.sh up --node):
# containerd and runc, the CNI plugins, the kubelet and kube-proxy, and the
# kube-scheduler that places Pods on it, built from
# the Go modules pinned under hack/ and cached like the control plane's.
# Sourced by hack/local-cluster.sh; not a command of its own.
#
# Network rule: every non-loopback address of the cluster lives in one network
# namespace that `up --node` creates, together with etcd, the API server, the
# controller-manager, containerd, the kubelet and kube-proxy:
#   node0 (a veth inside it)  10.200.0.1/24, the node's and the API server's
#                             advertised address
#   cni0 (bridge)             10.244.0.1/24, gateway of the Pods' own namespaces
#   Services                  10.96.0.0/16, 10.96.0.1 is `kubernetes`
# Nothing in the machine's own network namespace listens on or sends to a
# non-loopback address: kubectl and tests reach the API server through a
# forward from a loopback port into the namespace (socat, through a Unix
# socket in the state directory).

CONTAINERD_VERSION=$(mod_version "$HACK/containerd/go.mod" github.com/containerd/containerd/v2)
RUNC_VERSION=$(mod_version "$HACK/runc/go.mod" github.com/opencontainers/runc)
CNI_VERSION=$(mod_version "$HACK/cni/go.mod" github.com/containernetworking/plugins)
CONTAINERD_BIN="$CACHE/bin/containerd-$CONTAINERD_VERSION"
RUNC_BIN="$CACHE/bin/runc-$RUNC_VERSION"
CNI_BIN="$CACHE/bin/cni-plugins-$CNI_VERSION"
NODE_BIN="$CACHE/bin/kubernetes-node-$K8S_VERSION"

NODE_NAME=kube-jit-node
NODE_IP=10.200.0.1
POD_SUBNET=10.244.0.0/24
KUBERNETES_SERVICE_IP=10.96.0.1
# The API server's port inside the namespace; the loopback forward's port is
# $STATE/ports/apiserver, as without a node.
INNER_APISERVER_PORT=6443
# Where the sandbox image's archive is built (kept with the cache: it is
# the same for every cluster).
NODE_IMAGES="$CACHE/images"

# Host packages the node needs, from Debian's registry: iptables (kube-proxy,
# portmap), conntrack (kube-proxy), socat (the loopback forward), iproute2
# (the namespace), libseccomp-dev and pkg-config (runc's seccomp support).
ensure_node_packages() {
  local missing=()
  command -v iptables-restore >/dev/null || missing+=(iptables)
  command -v conntrack >/dev/null || missing+=(conntrack)
  command -v socat >/dev/null || missing+=(socat)
  command -v ip >/dev/null || missing+=(iproute2)
  command -v nsenter >/dev/null || missing+=(util-linux)
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  pkg-config --exists libseccomp 2>/dev/null || missing+=(libseccomp-dev)
  ((${#missing[@]} == 0)) && return 0
  (( EUID == 0 )) || die "the node needs these Debian packages: ${missing[*]} (and root to run)"
  log "installing ${missing[*]} from Debian's packages (first time only)"
  with_progress "apt-get update" apt-get update -q
  with_progress "apt-get install" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}"
}

build_node() {
  ensure_node_packages
  if [[ ! -x "$CONTAINERD_BIN/containerd" ]]; then
    log "building containerd $CONTAINERD_VERSION into $CONTAINERD_BIN (first time only)"
    go_build_into "$CONTAINERD_BIN" containerd "$HACK/containerd" "" \
      -ldflags "-X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" \
      github.com/containerd/containerd/v2/cmd/containerd \
      github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
      github.com/containerd/containerd/v2/cmd/ctr
  fi
  if [[ ! -x "$RUNC_BIN/runc" ]]; then
    # runc's nsenter is C, so cgo; the seccomp tag makes RuntimeDefault work.
    log "building runc $RUNC_VERSION into $RUNC_BIN (first time only)"
    GO_BUILD_CGO=1 go_build_into "$RUNC_BIN" runc "$HACK/runc" runc -tags seccomp \
      -ldflags "-X main.version=${RUNC_VERSION#v}" github.com/opencontainers/runc
  fi
  if [[ ! -x "$CNI_BIN/bridge" ]]; then
    log "building the CNI plugins $CNI_VERSION into $CNI_BIN (first time only)"
    go_build_into "$CNI_BIN" cni-plugins "$HACK/cni" "" \
      github.com/containernetworking/plugins/plugins/main/bridge \
      github.com/containernetworking/plugins/plugins/ipam/host-local \
      github.com/containernetworking/plugins/plugins/main/loopback \
      github.com/containernetworking/plugins/plugins/meta/portmap
  fi
  if [[ ! -x "$NODE_BIN/kubelet" || ! -x "$NODE_BIN/kube-proxy" || ! -x "$NODE_BIN/kube-scheduler" ]]; then
    log "building kubelet, kube-proxy and kube-scheduler $K8S_VERSION into $NODE_BIN (first time only; minutes)"
    go_build_into "$NODE_BIN" kubernetes-node "$HACK/kubernetes" "" -ldflags "$(k8s_ldflags)" \
      k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kube-scheduler
  fi
  # The sandbox (pause) image: no registry is reachable, so it is built here.
  "$HACK/image.sh" build-pause --out "$NODE_IMAGES" >/dev/null
}

netns_name() { echo "kube-jit-$(printf %s "$STATE" | sha256sum | cut -c1-10)"; }
# A command prefix that runs its command in the node's namespace (nsenter
# execs it, so a recorded pid is the command's own).
in_netns() { echo nsenter "--net=/run/netns/$(cat "$STATE/netns")"; }
cgroup_root() { echo "/$(cat "$STATE/netns")"; }

create_netns() {
  local ns; ns=$(netns_name)
  echo "$ns" >"$STATE/netns"
  ip netns del "$ns" 2>/dev/null || true
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  # A veth pair inside the namespace, so the node address sits on an ordinary
  # interface with a default route (this kernel has no dummy interfaces).
  ip -n "$ns" link add node0 type veth peer name node1
  ip -n "$ns" addr add "$NODE_IP/24" dev node0
  ip -n "$ns" link set node0 up
  ip -n "$ns" link set node1 up
  ip -n "$ns" route add default dev node0
  $(in_netns) sysctl -qw net.ipv4.ip_forward=1
  # Pod cgroups: one root per cluster, so two clusters never share one.
  local c
  for c in /sys/fs/cgroup/*/; do
    [[ -e "$c/cgroup.procs" ]] && mkdir -p "$c$(cgroup_root)"
  done
}

# kubectl and tests reach the API server at 127.0.0.1:<port> in the machine's
# namespace; socat carries each connection over a Unix socket to a second
# socat inside the node's namespace, which connects to the API server there.
start_forward() {
  local sock="$STATE/apiserver.sock"
  spawn forward-inner $(in_netns) socat "UNIX-LISTEN:$sock,fork,unlink-early,mode=600,backlog=128" \
    "TCP:127.0.0.1:$INNER_APISERVER_PORT"
  spawn forward socat "TCP-LISTEN:$(cat "$STATE/ports/apiserver"),bind=127.0.0.1,reuseaddr,fork,backlog=128" \
    "UNIX-CONNECT:$sock"
}

write_node_config() {
  local n="$STATE/node"
  mkdir -p "$n/containerd" "$n/cni/net.d" "$n/cni/ipam" "$n/kubelet" "$n/pod-logs"
  cat >"$n/containerd/config.toml" <<EOF
version = 3
root = "$n/containerd/root"
state = "$n/containerd/state"
[grpc]
  address = "$n/containerd/containerd.sock"
[ttrpc]
  address = "$n/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "$(image_ref pause)"
[plugins."io.containerd.cri.v1.runtime"]
  # This machine withholds CAP_SYS_RESOURCE: lowering a process's OOM score
  # adjustment fails, and runc with it ("can't get final child's PID from pipe").
  restrict_oom_score_adj = true
  # Pod network namespaces under the state directory, so \`down\` finds them all.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["$CNI_BIN"]
    conf_dir = "$n/cni/net.d"
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "$RUNC_BIN/runc"
        SystemdCgroup = false
EOF
  cat >"$n/cni/net.d/10-kube-jit.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "kube-jit",
  "plugins": [
    {
      "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$n/cni/ipam",
        "ranges": [[{"subnet": "$POD_SUBNET"}]], "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  cat >"$n/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine mounts cgroup v1 controllers; v1 is deprecated, not gone.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: $(cgroup_root)
containerRuntimeEndpoint: unix://$n/containerd/containerd.sock
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $STATE/pki/ca.crt}
authorization: {mode: Webhook}
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
failSwapOn: false
podLogsDir: $n/pod-logs
# No cluster DNS: Pods reach the API server by the kubernetes Service's address.
resolvConf: ""
# The machine's disk is shared with everything else: never evict or collect
# images because of it (imported images cannot be pulled again).
evictionHard: {memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOF
  cat >"$n/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $STATE/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
clusterCIDR: 10.244.0.0/16
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
# Conntrack limits are the machine's, not this namespace's: leave them alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
}

start_node() {
  local n="$STATE/node"
  write_node_config
  spawn containerd $(in_netns) env PATH="$CONTAINERD_BIN:$RUNC_BIN:$PATH" \
    "$CONTAINERD_BIN/containerd" --config "$n/containerd/config.toml"
  wait_until containerd 60 ctr_node version
  import_images "$NODE_IMAGES/kube-jit-pause.tar"
  spawn kubelet $(in_netns) "$NODE_BIN/kubelet" --config "$n/kubelet/config.yaml" \
    --kubeconfig "$STATE/kubelet.kubeconfig" --root-dir "$n/kubelet" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v 1
  spawn kube-proxy $(in_netns) "$NODE_BIN/kube-proxy" --config "$n/kube-proxy.yaml" --v 1
  spawn kube-scheduler $(in_netns) "$NODE_BIN/kube-scheduler" --kubeconfig "$STATE/scheduler.kubeconfig" \
    --leader-elect=false --bind-address 127.0.0.1 --secure-port 0 --v 1
  wait_until "node $NODE_NAME Ready" 180 node_ready
}

node_ready() {
  [[ $(kubectl_admin get node "$NODE_NAME" --request-timeout 2s \
    -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}

ctr_node() { "$CONTAINERD_BIN/ctr" --address "$STATE/node/containerd/containerd.sock" -n k8s.io "$@" >/dev/null 2>&1; }

image_ref() { "$HACK/image.sh" names | awk -v r="$1" '$1 == r { print $2 }'; }

# Imports image archives into the node's containerd (the CRI's k8s.io namespace).
import_images() { # <tar…>
  local tar
  for tar in "$@"; do
    [[ -f "$tar" ]] || die "no image archive at $tar"
    local out
    out=$("$CONTAINERD_BIN/ctr" --address "$STATE/node/containerd/containerd.sock" -n k8s.io \
      images import "$tar" 2>&1) || die "importing $tar failed: $out"
  done
}

# Kills everything the node started, wherever it went: processes in the
# node's network namespace (containerd, its shims, the kubelet, kube-proxy)
# and in its Pod cgroups (the containers, in namespaces of their own); then
# unmounts what the kubelet and containerd mounted under the state directory,
# and removes the cgroups and the namespace.
stop_node() {
  [[ -f "$STATE/netns" ]] || return 0
  local ns inode pid c m
  ns=$(cat "$STATE/netns")
  if [[ -e "/run/netns/$ns" ]]; then
    inode=$(stat -L -c %i "/run/netns/$ns")
    for _ in 1 2 3; do
      for pid in $(ls /proc | grep -E '^[0-9]+$'); do
        [[ $(stat -L -c %i "/proc/$pid/ns/net" 2>/dev/null) == "$inode" ]] && { kill -KILL "$pid" 2>/dev/null || true; }
      done
      for c in /sys/fs/cgroup/*/"$ns"; do
        [[ -d "$c" ]] || continue
        find "$c" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
      done
      sleep 0.2
    done
  fi
  # Deepest first; lazily, as a dead container's mounts can still be busy.
  awk -v s="$STATE/" 'index($2, s) == 1 { print $2 }' /proc/self/mounts | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  for c in /sys/fs/cgroup/*/"$ns"; do
    [[ -d "$c" ]] && { find "$c" -depth -type d -exec rmdir {} + 2>/dev/null || true; }
  done
  ip netns del "$ns" 2>/dev/null || true
  rm -f "$STATE/netns"
}
