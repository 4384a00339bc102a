# Sourced by scripts/bench/*: a run's database, tenant, site and write key, and services started
# from the `sightline` binary and waited for. Expects services.sh sourced, and $SIGHTLINE (the
# binary) and $OUT (the report folder) set.

# bench_site: migrates the run's database ($SIGHTLINE__DATABASE__URL) and creates a tenant, a
# site and a write key without a practical rate limit; sets TENANT, SITE and KEY.
bench_site() {
  "$SIGHTLINE" admin migrate >/dev/null
  "$SIGHTLINE" admin tenant create --slug bench --name Bench >/dev/null
  SITE=$("$SIGHTLINE" admin --json site create --tenant bench --domain bench.example | jq -r '.[0].id')
  TENANT=$("$SIGHTLINE" admin --json tenant list | jq -r '.[0].id')
  KEY=$("$SIGHTLINE" admin --json write-key issue --tenant bench --site "$SITE" \
    --rate-limit 2000000000 | jq -r '.[0].key')
}

# bench_start NAME ADMIN_PORT ARGS...: starts `$SIGHTLINE ARGS...` (log in $OUT/NAME.log) and
# waits until its /readyz on ADMIN_PORT answers; sets STARTED_PID.
bench_start() {
  local name=$1 port=$2
  shift 2
  "$SIGHTLINE" "$@" >"$OUT/$name.log" 2>&1 &
  STARTED_PID=$!
  for _ in $(seq 1 150); do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$STARTED_PID" 2>/dev/null || { cat "$OUT/$name.log" >&2; log "$name exited"; return 1; }
    sleep 0.2
  done
  log "$name is not ready (see $OUT/$name.log)"; return 1
}

# bench_stop PID...: SIGTERM, then waits for each.
bench_stop() {
  local pid
  for pid in "$@"; do
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && kill -TERM "$pid"
  done
  for pid in "$@"; do
    [ -n "$pid" ] && wait "$pid" 2>/dev/null
  done
  return 0
}

# bench_metric PORT NAME LABEL: the value of the first series NAME{...LABEL...} on /metrics.
bench_metric() {
  curl -fs "http://127.0.0.1:$1/metrics" | awk -v n="$2" -v l="$3" '
    $1 ~ ("^" n "({|$)") && index($1, l) {print $2; found=1; exit}
    END {if (!found) print 0}'
}

# bench_machine: one line naming the machine.
bench_machine() {
  printf '%s cores (%s), %s, RabbitMQ %s, PostgreSQL %s' "$(nproc)" \
    "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)" \
    "$(free -g | awk '/^Mem:/ {print $2 " GiB"}')" \
    "$(rabbitmqctl -q version 2>/dev/null || echo unknown)" \
    "$(psql -tA -h 127.0.0.1 -U postgres -c 'SHOW server_version' 2>/dev/null || echo unknown)"
}
