#!/usr/bin/env bash
# kubectl-jit as a krew plugin: builds krew from its pinned Go module (cached
# outside the work tree, keyed by version), packages kubectl-jit the way a
# release does, renders .krew.yaml for that archive, and installs it with krew.
#
#   hack/krew.sh build            build krew if missing; print its path
#   hack/krew.sh package [OUT]    archive kubectl-jit for this platform and render
#                                 OUT/jit.yaml (default OUT: target/krew)
#   hack/krew.sh install [OUT]    package, then `krew install --manifest --archive`
#                                 into OUT/root (a private KREW_ROOT); prints the PATH entry
#
# Environment:
#   KUBECTL_JIT_BIN   the binary to package (default: a release build of kubectl-jit)
#   KUBE_JIT_CACHE    binary cache (default: ~/.cache/kube-jit)
set -euo pipefail

HACK=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HACK")
LOG_NAME=krew
# shellcheck source=lib.sh
source "$HACK/lib.sh"
KREW_VERSION=$(mod_version "$HACK/krew/go.mod" sigs.k8s.io/krew)
KREW_BIN="$CACHE/bin/krew-$KREW_VERSION"

build_krew() {
  if [[ ! -x "$KREW_BIN/krew" ]]; then
    log "building krew $KREW_VERSION into $KREW_BIN (first time only)"
    go_build_into "$KREW_BIN" krew "$HACK/krew" krew \
      -ldflags "-X sigs.k8s.io/krew/internal/version.gitTag=$KREW_VERSION" sigs.k8s.io/krew/cmd/krew
  fi
  echo "$KREW_BIN/krew"
}

platform() {
  local os arch
  os=$(uname -s | tr '[:upper:]' '[:lower:]')
  case "$(uname -m)" in
    x86_64|amd64) arch=amd64 ;;
    aarch64|arm64) arch=arm64 ;;
    *) die "unsupported machine $(uname -m)" ;;
  esac
  echo "${os}_${arch}"
}

cmd_package() {
  local out=${1:-$REPO/target/krew}
  local tag bin archive
  tag=v$(awk -F'"' '/^version = / { print $2; exit }' "$REPO/Cargo.toml")
  bin=${KUBECTL_JIT_BIN:-}
  if [[ -z "$bin" ]]; then
    (cd "$REPO" && cargo build --release --locked --bin kubectl-jit)
    bin=$REPO/target/release/kubectl-jit
  fi
  mkdir -p "$out/stage"
  archive="$out/kubectl-jit_${tag}_$(platform).tar.gz"
  install -m 0755 "$bin" "$out/stage/kubectl-jit"
  install -m 0644 "$REPO/LICENSE" "$out/stage/LICENSE"
  tar -C "$out/stage" -czf "$archive" kubectl-jit LICENSE
  # Render the release template for the archives present: each
  # addURIAndSha becomes its uri and the sha256 of the archive it names;
  # platforms without an archive here are left out.
  python3 - "$REPO/.krew.yaml" "$tag" "$out" >"$out/jit.yaml" <<'PY'
import hashlib, os, re, sys
template, tag, out = sys.argv[1], sys.argv[2], sys.argv[3]
text = open(template).read()
head, _, platforms = text.partition("  platforms:\n")
head = "\n".join(l for l in head.splitlines() if not l.startswith("#")) + "\n"
blocks = re.split(r"(?m)^  - selector:\n", platforms)[1:]
rendered = []
for block in blocks:
    url = re.search(r'addURIAndSha "([^"]+)"', block).group(1).replace("{{ .TagName }}", tag)
    path = os.path.join(out, url.rsplit("/", 1)[1])
    if not os.path.exists(path):
        continue
    sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
    block = re.sub(r'\{\{addURIAndSha "[^"]+" \.TagName \}\}', f"uri: {url}\n    sha256: {sha}", block)
    rendered.append("  - selector:\n" + block)
if not rendered:
    sys.exit("no archive for any platform of .krew.yaml in " + out)
print((head.replace("{{ .TagName }}", tag) + "  platforms:\n" + "".join(rendered)).rstrip())
PY
  log "packaged $archive and rendered $out/jit.yaml"
}

cmd_install() {
  local out=${1:-$REPO/target/krew} krew
  krew=$(build_krew)
  cmd_package "$out"
  rm -rf "$out/root"
  KREW_ROOT="$out/root" "$krew" install --manifest="$out/jit.yaml" \
    --archive="$out/kubectl-jit_$(awk '/^  version:/ { print $2 }' "$out/jit.yaml")_$(platform).tar.gz" >&2
  echo "$out/root/bin"
}

main() {
  case "${1:-}" in
    build) build_krew ;;
    package) shift; cmd_package "$@" ;;
    install) shift; cmd_install "$@" ;;
    *) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
  esac
}
main "$@"
