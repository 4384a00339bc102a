# Sourced by scripts: installs the official Segment and RudderStack SDKs that
# crates/ingest/tests/sdks.rs runs against a real ingest, outside the clone:
#   Python: a virtualenv at $SIGHTLINE_CACHE/sdk-venv from crates/ingest/tests/sdk/requirements.txt
#   Node:   `npm ci` in $SIGHTLINE_CACHE/sdk-node from that folder's package.json and lock
# and exports where they are (SIGHTLINE_SDK_PYTHON, SIGHTLINE_SDK_NODE_MODULES). Each is
# reinstalled only when its pins (or the interpreter's version) change, so a warm run never
# touches the network. Uses log() from services.sh when it was sourced first.

# Installs what changed and exports the paths the tests read. Run from the repository root.
ensure_sdks() {
  local cache="${SIGHTLINE_CACHE:-$HOME/.cache/sightline}"
  local pins="$PWD/crates/ingest/tests/sdk"
  local tool
  for tool in python3 node npm flock; do
    command -v "$tool" >/dev/null 2>&1 || { _sdks_log "the SDK tests need $tool (Python 3 with venv, Node 20 or later)"; return 1; }
  done
  mkdir -p "$cache"
  # Engineers share the cache: one install at a time.
  local lock
  exec {lock}>"$cache/.sdks.lock"
  flock "$lock"
  local status=0
  _sdks_python "$cache/sdk-venv" "$pins/requirements.txt" &&
    _sdks_node "$cache/sdk-node" "$pins" || status=$?
  flock -u "$lock"
  exec {lock}>&-
  [ "$status" -eq 0 ] || return "$status"
  export SIGHTLINE_SDK_PYTHON="$cache/sdk-venv/bin/python"
  export SIGHTLINE_SDK_NODE_MODULES="$cache/sdk-node/node_modules"
}

_sdks_log() {
  if declare -F log >/dev/null; then log "$@"; else printf '==> %s\n' "$*" >&2; fi
}

_sdks_python() {
  local venv=$1 requirements=$2 stamp
  stamp="$(python3 --version 2>&1) $(sha256sum "$requirements" | cut -d' ' -f1)"
  if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.sightline-stamp" 2>/dev/null)" = "$stamp" ]; then
    return 0
  fi
  _sdks_log "installing the Python SDKs into $venv"
  python3 -m venv --clear "$venv" &&
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$requirements" &&
    printf '%s\n' "$stamp" >"$venv/.sightline-stamp"
}

_sdks_node() {
  local dir=$1 pins=$2 stamp
  stamp="node $(node --version) $(cat "$pins/package.json" "$pins/package-lock.json" | sha256sum | cut -d' ' -f1)"
  if [ -d "$dir/node_modules" ] && [ "$(cat "$dir/.sightline-stamp" 2>/dev/null)" = "$stamp" ]; then
    return 0
  fi
  _sdks_log "installing the Node SDKs into $dir"
  rm -rf "$dir" && mkdir -p "$dir" &&
    cp "$pins/package.json" "$pins/package-lock.json" "$dir/" &&
    # No install scripts, no optional packages: the SDKs need neither (bull, rudder-sdk-node's
    # optional Redis queue, is not used).
    (cd "$dir" && npm ci --omit=optional --ignore-scripts --no-audit --no-fund --loglevel=error) &&
    printf '%s\n' "$stamp" >"$dir/.sightline-stamp"
}
