# Sourced by scripts: makes sure the local services Sightline's tests and dev runs use are up.
# PostgreSQL at 127.0.0.1:5432 (trust, user postgres), RabbitMQ at 127.0.0.1:5672 (guest) and an
# S3-compatible server (s3s-fs) at 127.0.0.1:9000 (path style, access key `sightline`, secret
# `sightline-dev-secret`, region us-east-1).

log() { printf '==> %s\n' "$*" >&2; }

apt_install() {
  if [ -z "${SIGHTLINE_APT_UPDATED:-}" ]; then
    apt-get update -qq >/dev/null
    SIGHTLINE_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return 0; fi
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    log "installing PostgreSQL"
    apt_install postgresql
  fi
  log "starting PostgreSQL"
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 60); do
    pg_isready -q -h 127.0.0.1 -p 5432 && return 0
    sleep 1
  done
  log "PostgreSQL did not start"; return 1
}

ensure_rabbitmq() {
  if (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then return 0; fi
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    log "installing RabbitMQ"
    apt_install rabbitmq-server
  fi
  log "starting RabbitMQ"
  rabbitmq-server -detached || true
  rabbitmqctl -q await_startup --timeout 120 >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do
    (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && return 0
    sleep 1
  done
  log "RabbitMQ did not start"; return 1
}

# s3s-fs: a real S3 server over a folder (`cargo install`, about 100 s on 2 cores, once).
# Binary in $SIGHTLINE_CACHE/s3s-fs/bin, objects in $SIGHTLINE_CACHE/s3/data, log next to them.
S3_PORT=9000
S3_ACCESS_KEY=sightline
S3_SECRET_KEY=sightline-dev-secret
ensure_s3() {
  local cache="${SIGHTLINE_CACHE:-$HOME/.cache/sightline}"
  # s3s-fs resolves every object path against its working directory: one started from a
  # checkout that was deleted since (an earlier CI clone) answers every request with a 500.
  local pid
  for pid in $(pgrep -x s3s-fs || true); do
    if readlink "/proc/$pid/cwd" 2>/dev/null | grep -q ' (deleted)$'; then
      log "restarting s3s-fs (its working directory was deleted)"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    fi
  done
  if (exec 3<>/dev/tcp/127.0.0.1/$S3_PORT) 2>/dev/null; then return 0; fi
  local bin="$cache/s3s-fs/bin/s3s-fs"
  if [ ! -x "$bin" ]; then
    log "installing s3s-fs (cargo install, about 2 minutes)"
    cargo install s3s-fs@0.14.1 --locked --features binary --root "$cache/s3s-fs" --quiet
  fi
  log "starting s3s-fs on 127.0.0.1:$S3_PORT"
  mkdir -p "$cache/s3/data"
  # setsid + nohup: the server outlives this script, like the PostgreSQL and RabbitMQ daemons.
  # Started from its own folder, which outlives any checkout.
  (cd "$cache/s3" && setsid nohup "$bin" --host 127.0.0.1 --port "$S3_PORT" \
    --access-key "$S3_ACCESS_KEY" --secret-key "$S3_SECRET_KEY" \
    "$cache/s3/data" >>"$cache/s3/s3s-fs.log" 2>&1 </dev/null &)
  for _ in $(seq 1 60); do
    (exec 3<>/dev/tcp/127.0.0.1/$S3_PORT) 2>/dev/null && return 0
    sleep 0.5
  done
  log "s3s-fs did not start (see $cache/s3/s3s-fs.log)"; return 1
}

# Python 3 with venv and pip: the SDK tests, the Helm check and the DuckDB checks of the lake
# tests (crates/sightline-testkit creates its virtualenv with DuckDB on first use) need it.
ensure_python_venv() {
  if command -v python3 >/dev/null 2>&1 && python3 -c 'import venv, ensurepip' 2>/dev/null; then
    return 0
  fi
  log "installing Python 3 with venv and pip"
  apt_install python3 python3-venv python3-pip
}

# Cargo's build folder lives outside the clone so fresh clones build incrementally.
use_shared_target() {
  export SIGHTLINE_CACHE="${SIGHTLINE_CACHE:-$HOME/.cache/sightline}"
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SIGHTLINE_CACHE/target}"
  mkdir -p "$CARGO_TARGET_DIR"
}
