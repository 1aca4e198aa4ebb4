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
