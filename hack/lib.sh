# Shared by the hack/ scripts that build pinned Go tools into the cache:
# where the cache is, how to read a pinned version, logging and long builds.
# Source it after setting LOG_NAME (the prefix of every log line).

CACHE=${KUBE_JIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-jit}

mod_version() { # <go.mod> <module path>
  awk -v m="$2" '$1 == m { print $2 } $1 == "require" && $2 == m { print $3 }' "$1" | head -n1
}

log() { printf '[%s] %s\n' "$LOG_NAME" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Runs a long build in the background and reports progress every 15 s.
with_progress() { # <label> <command...>
  local label=$1; shift
  local start=$SECONDS logf
  logf=$(mktemp)
  "$@" >"$logf" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if (( (SECONDS - start) % 15 == 0 )); then
      log "  … $label: $((SECONDS - start))s"
    fi
  done
  if ! wait "$pid"; then
    cat "$logf" >&2; rm -f "$logf"
    die "$label failed"
  fi
  rm -f "$logf"
  log "  $label done in $((SECONDS - start))s"
}

# Builds Go packages of the module in <module dir> into <bin dir>, which
# appears only once the build is complete: an interrupted build leaves nothing
# a later run would mistake for a cached binary. <output> names the binary of
# a single package; "" names each after its package. Static (cgo off) unless
# GO_BUILD_CGO=1.
go_build_into() { # <bin dir> <label> <module dir> <output> <go build args…>
  local bin=$1 label=$2 module=$3 output=$4; shift 4
  command -v go >/dev/null || die "Go is needed to build $label (https://go.dev/doc/install)"
  local tmp="$bin.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  with_progress "go build $label" env -C "$module" CGO_ENABLED="${GO_BUILD_CGO:-0}" go build -trimpath -o "$tmp/$output" "$@"
  rm -rf "$bin"; mv "$tmp" "$bin"
}
