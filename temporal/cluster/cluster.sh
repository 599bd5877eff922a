#!/usr/bin/env bash
# A real multi-process Temporal cluster on 127.0.0.1 with PostgreSQL persistence and visibility:
# two frontends, two history nodes, one matching, one worker service, each its own process.
#
#   cluster.sh up [--reset]   build/cache the binaries, (--reset: drop the databases first),
#                             set up the schemas, start what is not
#                             running, wait until both frontends serve, register `default`
#   cluster.sh down [--reset] SIGTERM all six, SIGKILL after ACCESSLOOP_CLUSTER_STOP_TIMEOUT s
#                             (default 20); --reset also drops both databases
#   cluster.sh status         one line per process; exit 3 when any is down
#   cluster.sh kill NAME      SIGKILL one process (failover drills), e.g. history-1
#   cluster.sh start NAME     start one process again and wait until it listens
#   cluster.sh build          only build/cache the `server` and `sql` binaries (provisioning)
#   cluster.sh addresses      the two frontend addresses, comma-separated
#
# Settings (environment; `up` writes them to $ACCESSLOOP_CLUSTER_DIR/cluster.env and later
# commands on that dir read them back, so `start history-1` gets the ports `up` used):
#   ACCESSLOOP_CLUSTER_DIR        .data/cluster   config, pid files, logs
#   ACCESSLOOP_CLUSTER_PORT_BASE  17233           frontend-1 gRPC; the others at fixed offsets
#   ACCESSLOOP_CLUSTER_PG_HOST / _PG_PORT / _PG_USER / _PG_PASSWORD   127.0.0.1 / 5432 / postgres / ''
#   ACCESSLOOP_CLUSTER_DB / _VISIBILITY_DB   accessloop_temporal / accessloop_temporal_visibility
#   ACCESSLOOP_CLUSTER_SHARDS     4               history shards (fixed once the database exists)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
say() { printf '[cluster] %s\n' "$*"; }
die() { printf '[cluster] %s\n' "$*" >&2; exit 1; }

TEMPORAL_SERVER_VERSION=v1.32.2
# v1.32.2 declares `go 1.26.10`; the machine's Go may be older, and GOTOOLCHAIN makes the go
# command fetch a new enough toolchain from the module proxy instead of refusing the build.
TEMPORAL_SERVER_GOTOOLCHAIN=go1.27.3
# Versioned directory: a cached binary of another version is never mistaken for this one.
bin_dir="$root/.cache/temporal-server/$TEMPORAL_SERVER_VERSION"
server_bin="$bin_dir/server"
sql_bin="$bin_dir/sql"
schema_dir="$bin_dir/schema/postgresql/v12"

run_dir="$(mkdir -p "${ACCESSLOOP_CLUSTER_DIR:-$root/.data/cluster}" && cd "${ACCESSLOOP_CLUSTER_DIR:-$root/.data/cluster}" && pwd)"
settings="$run_dir/cluster.env"
# Later commands act on the cluster `up` started, whatever the environment says now; `up` itself
# takes the environment, unless processes of this dir still run with the settings they got.
live=0
for f in "$run_dir"/*.pid; do [ -e "$f" ] && [ -d "/proc/$(cat "$f")" ] && live=1; done
if [ -f "$settings" ] && { [ "${1:-}" != up ] || [ "$live" = 1 ]; }; then
  # shellcheck source=/dev/null
  . "$settings"
fi
port_base="${ACCESSLOOP_CLUSTER_PORT_BASE:-17233}"
pg_host="${ACCESSLOOP_CLUSTER_PG_HOST:-127.0.0.1}"
pg_port="${ACCESSLOOP_CLUSTER_PG_PORT:-5432}"
pg_user="${ACCESSLOOP_CLUSTER_PG_USER:-postgres}"
pg_password="${ACCESSLOOP_CLUSTER_PG_PASSWORD:-}"
db="${ACCESSLOOP_CLUSTER_DB:-accessloop_temporal}"
visibility_db="${ACCESSLOOP_CLUSTER_VISIBILITY_DB:-accessloop_temporal_visibility}"
shards="${ACCESSLOOP_CLUSTER_SHARDS:-4}"
stop_timeout="${ACCESSLOOP_CLUSTER_STOP_TIMEOUT:-20}"

# cluster_membership.rpc_port is a smallint: a membership port above 32767 makes the process
# die at start ("out of range for type smallint"), so the whole block must stay below it.
[[ "$port_base" =~ ^[0-9]+$ ]] && [ "$port_base" -ge 1024 ] && [ "$port_base" -le $((32767 - 52)) ] ||
  die "ACCESSLOOP_CLUSTER_PORT_BASE=$port_base: must be 1024..$((32767 - 52)) (the membership table stores ports as smallint)"

processes=(frontend-1 frontend-2 history-1 history-2 matching-1 worker-1)
# Offsets from the base: gRPC +0, HTTP +1 (frontends), membership +2; instances 10 apart.
offset() { case "$1" in frontend-1) echo 0 ;; frontend-2) echo 10 ;; history-1) echo 20 ;; history-2) echo 30 ;; matching-1) echo 40 ;; worker-1) echo 50 ;; *) die "unknown process '$1' (one of: ${processes[*]})" ;; esac; }
grpc_port() { echo $((port_base + $(offset "$1"))); }
frontends() { echo "127.0.0.1:$(grpc_port frontend-1),127.0.0.1:$(grpc_port frontend-2)"; }

build() {
  if [ -x "$server_bin" ] && [ -x "$sql_bin" ] && [ -d "$schema_dir/temporal/versioned" ] && "$server_bin" --version 2>/dev/null | grep -qx "temporal version ${TEMPORAL_SERVER_VERSION#v}"; then
    return 0
  fi
  command -v go >/dev/null || die "Go is needed to build the Temporal server $TEMPORAL_SERVER_VERSION (or place server and sql in $bin_dir)"
  say "building Temporal server and SQL tool $TEMPORAL_SERVER_VERSION into $bin_dir (first run only; 3-6 minutes)…"
  local started=$SECONDS
  mkdir -p "$bin_dir"
  GOTOOLCHAIN="$TEMPORAL_SERVER_GOTOOLCHAIN" GOBIN="$bin_dir" go install \
    "go.temporal.io/server/cmd/server@$TEMPORAL_SERVER_VERSION" \
    "go.temporal.io/server/cmd/tools/sql@$TEMPORAL_SERVER_VERSION"
  # The schema files of the same version go beside the binaries, so `up` needs no Go.
  local src
  src="$(cd / && GOTOOLCHAIN="$TEMPORAL_SERVER_GOTOOLCHAIN" GOFLAGS=-mod=mod go mod download -json "go.temporal.io/server@$TEMPORAL_SERVER_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
  [ -d "$src/schema/postgresql/v12" ] || die "schema files not found in $src"
  rm -rf "$schema_dir" && mkdir -p "$schema_dir" && cp -R "$src/schema/postgresql/v12/." "$schema_dir/"
  say "built in $((SECONDS - started)) s"
}

temporal_cli() {
  local c
  for c in "${TEMPORAL_CLI_PATH:-}" "$(command -v temporal || true)" "$root/.cache/bin/temporal" "$(go env GOPATH 2>/dev/null)/bin/temporal"; do
    [ -n "$c" ] && [ -x "$c" ] && { echo "$c"; return; }
  done
  # The same lookup-or-build the dev server uses (temporal/dev-server.ts), progress on stderr.
  (cd "$root" && npx --no-install tsx temporal/ensure-cli.ts >&2)
  for c in "$root/.cache/bin/temporal" "$(go env GOPATH 2>/dev/null)/bin/temporal"; do
    [ -x "$c" ] && { echo "$c"; return; }
  done
  die "no temporal CLI found (TEMPORAL_CLI_PATH, PATH, .cache/bin)"
}

psql_admin() { PGPASSWORD="$pg_password" psql -h "$pg_host" -p "$pg_port" -U "$pg_user" -d postgres -v ON_ERROR_STOP=1 -Atqc "$1"; }
# Output to schema.log: update-schema prints every statement it runs.
sql_tool() {
  "$sql_bin" --plugin postgres12 --ep "$pg_host" -p "$pg_port" -u "$pg_user" --pw "$pg_password" "$@" >>"$run_dir/schema.log" 2>&1 ||
    { tail -n 20 "$run_dir/schema.log" >&2; die "temporal-sql-tool $* failed; see $run_dir/schema.log"; }
}

# Idempotent: creates a missing database, versions an empty one, then applies only the schema
# versions it does not have yet, so a second `up` (or a newer server) finds nothing to redo.
setup_schema() {
  local name="$1" dir="$2"
  if [ "$(psql_admin "select 1 from pg_database where datname = '$name'")" != 1 ]; then
    sql_tool --db "$name" create-database
  fi
  local versioned
  versioned="$(PGPASSWORD="$pg_password" psql -h "$pg_host" -p "$pg_port" -U "$pg_user" -d "$name" -Atqc "select 1 from information_schema.tables where table_name = 'schema_version'")"
  # setup-schema -v 0.0 on a versioned database would set its version back to 0.0.
  [ "$versioned" = 1 ] || sql_tool --db "$name" setup-schema -v 0.0
  sql_tool --db "$name" update-schema -d "$dir"
}

drop_databases() {
  say "dropping databases $db and $visibility_db"
  psql_admin "drop database if exists \"$db\" with (force)"
  psql_admin "drop database if exists \"$visibility_db\" with (force)"
}

write_settings() {
  printf '%s=%q\n' ACCESSLOOP_CLUSTER_PORT_BASE "$port_base" ACCESSLOOP_CLUSTER_PG_HOST "$pg_host" \
    ACCESSLOOP_CLUSTER_PG_PORT "$pg_port" ACCESSLOOP_CLUSTER_PG_USER "$pg_user" ACCESSLOOP_CLUSTER_PG_PASSWORD "$pg_password" \
    ACCESSLOOP_CLUSTER_DB "$db" ACCESSLOOP_CLUSTER_VISIBILITY_DB "$visibility_db" ACCESSLOOP_CLUSTER_SHARDS "$shards" >"$settings"
  mkdir -p "$run_dir/config"
  # A copy per run dir: the path in each server's command line then names its cluster, so
  # status/down never act on a process of another cluster (or a recycled pid).
  cp "$here/cluster.yaml" "$run_dir/config/cluster.yaml"
  cp "$here/dynamicconfig.yaml" "$run_dir/config/dynamicconfig.yaml"
}

pid_of() {
  local f="$run_dir/$1.pid" pid
  [ -f "$f" ] || return 1
  pid="$(cat "$f")"
  if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "--config-file $run_dir/config/cluster.yaml"; then
    echo "$pid"
  else
    rm -f "$f"
    return 1
  fi
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_one() {
  local name="$1" service="${1%-*}"
  pid_of "$name" >/dev/null && return 0
  # Every process renders the same template; only its own service's ports come from its instance.
  local f1 h1 m1 w1 own
  f1=$(grpc_port frontend-1) h1=$(grpc_port history-1) m1=$(grpc_port matching-1) w1=$(grpc_port worker-1) own=$(grpc_port "$name")
  local -A g=([frontend]=$f1 [history]=$h1 [matching]=$m1 [worker]=$w1)
  g[$service]=$own
  listening "$own" && die "port $own ($name) on 127.0.0.1 is taken by another process: set ACCESSLOOP_CLUSTER_PORT_BASE"
  # setsid: the servers outlive the shell (and npm) that started them, and a Ctrl-C there.
  env CLUSTER_LOG_LEVEL="${ACCESSLOOP_CLUSTER_LOG_LEVEL:-warn}" CLUSTER_NUM_HISTORY_SHARDS="$shards" \
    CLUSTER_DB="$db" CLUSTER_VISIBILITY_DB="$visibility_db" CLUSTER_PG_HOST="$pg_host" CLUSTER_PG_PORT="$pg_port" \
    CLUSTER_PG_USER="$pg_user" CLUSTER_PG_PASSWORD="$pg_password" \
    CLUSTER_FRONTEND_GRPC_PORT="${g[frontend]}" CLUSTER_FRONTEND_HTTP_PORT="$((g[frontend] + 1))" CLUSTER_FRONTEND_MEMBERSHIP_PORT="$((g[frontend] + 2))" \
    CLUSTER_HISTORY_GRPC_PORT="${g[history]}" CLUSTER_HISTORY_MEMBERSHIP_PORT="$((g[history] + 2))" \
    CLUSTER_MATCHING_GRPC_PORT="${g[matching]}" CLUSTER_MATCHING_MEMBERSHIP_PORT="$((g[matching] + 2))" \
    CLUSTER_WORKER_GRPC_PORT="${g[worker]}" CLUSTER_WORKER_MEMBERSHIP_PORT="$((g[worker] + 2))" \
    CLUSTER_PUBLIC_FRONTEND="127.0.0.1:$f1" CLUSTER_DYNAMIC_CONFIG="$run_dir/config/dynamicconfig.yaml" \
    setsid "$server_bin" --config-file "$run_dir/config/cluster.yaml" --allow-no-auth start --service "$service" \
    </dev/null >>"$run_dir/$name.log" 2>&1 &
  echo $! >"$run_dir/$name.pid"
}

# Returns 1 (log tail and exit status on stderr) when the process exits before it listens.
wait_listening() {
  local name="$1" port until=$((SECONDS + ${2:-90})) pid
  port=$(grpc_port "$name")
  pid="$(cat "$run_dir/$name.pid" 2>/dev/null || true)"
  until listening "$port"; do
    if ! pid_of "$name" >/dev/null; then
      # Started by this shell, so its exit status is ours to read (127: not our child).
      local rc=0
      [ -n "$pid" ] && { wait "$pid" 2>/dev/null || rc=$?; }
      # The reason is near the end; Go stack traces make lines long, so each is cut.
      tail -n 20 "$run_dir/$name.log" | cut -c1-400 >&2
      say "$name exited (status $rc) before listening on 127.0.0.1:$port; see $run_dir/$name.log" >&2
      return 1
    fi
    [ $SECONDS -lt $until ] || die "$name does not listen on 127.0.0.1:$port; see $run_dir/$name.log"
    sleep 0.2
  done
}

wait_serving() {
  local cli="$1" address="$2" until=$((SECONDS + 90))
  until "$cli" operator cluster health --address "$address" 2>/dev/null | grep -q SERVING; do
    [ $SECONDS -lt $until ] || die "frontend $address is not SERVING after 90 s; see $run_dir/frontend-*.log"
    sleep 0.5
  done
}

stop_all() {
  local name pid pids=()
  for name in "${processes[@]}"; do
    if pid="$(pid_of "$name")"; then kill -TERM "$pid" 2>/dev/null || true; pids+=("$name:$pid"); fi
  done
  local until=$((SECONDS + stop_timeout)) entry
  for entry in "${pids[@]}"; do
    name="${entry%%:*}" pid="${entry#*:}"
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $until ]; do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then say "$name did not stop within ${stop_timeout} s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
    rm -f "$run_dir/$name.pid"
  done
  say "stopped ${#pids[@]} process(es)"
}

cmd="${1:-}"
case "$cmd" in
  build) build ;;
  up)
    reset=0
    [ "${2:-}" = --reset ] && reset=1
    build
    cli="$(temporal_cli)"
    started=$SECONDS
    # A failed `up` stops what it started: half a cluster only confuses the next attempt.
    trap 'rc=$?; if [ "$rc" != 0 ]; then say "up failed: stopping this cluster"; stop_all; fi' EXIT
    if [ "$reset" = 1 ]; then
      stop_all
      drop_databases
    fi
    write_settings
    setup_schema "$db" "$schema_dir/temporal/versioned"
    setup_schema "$visibility_db" "$schema_dir/visibility/versioned"
    # frontend-1 first: on a fresh database every process would insert the cluster metadata at
    # start, and all but one would die on the duplicate key.
    start_one frontend-1
    wait_listening frontend-1 || die "frontend-1 did not start"
    for name in "${processes[@]}"; do start_one "$name"; done
    for name in "${processes[@]}"; do wait_listening "$name" || die "$name did not start"; done
    for address in $(frontends | tr , " "); do wait_serving "$cli" "$address"; done
    f1="127.0.0.1:$(grpc_port frontend-1)"
    "$cli" operator namespace describe --address "$f1" -n default >/dev/null 2>&1 ||
      "$cli" operator namespace create --address "$f1" -n default --retention 72h >/dev/null
    # Describing the namespace reads the database, but starting a workflow goes through each
    # frontend's namespace cache, which learns a new namespace on a later refresh. A workflow
    # describe takes that path: "workflow not found" means the namespace is usable there.
    until=$((SECONDS + 30))
    for address in $(frontends | tr , " "); do
      while :; do
        # The describe fails either way (pipefail would hide the answer from grep): keep its text.
        answer="$("$cli" workflow describe --address "$address" -n default -w accessloop-cluster-readiness 2>&1 || true)"
        grep -q 'workflow not found' <<<"$answer" && break
        [ $SECONDS -lt $until ] || die "namespace default not usable through $address after 30 s: $answer"
        sleep 0.5
      done
    done
    trap - EXIT
    say "up in $((SECONDS - started)) s; logs and pid files in $run_dir"
    say "frontends: $(frontends)"
    echo "$(frontends)"
    ;;
  down)
    stop_all
    if [ "${2:-}" = --reset ]; then drop_databases; fi
    ;;
  status)
    down=0
    for name in "${processes[@]}"; do
      if pid="$(pid_of "$name")"; then printf '%-11s running  pid %-7s 127.0.0.1:%s\n' "$name" "$pid" "$(grpc_port "$name")"
      else printf '%-11s stopped\n' "$name"; down=1; fi
    done
    [ "$down" = 0 ] || exit 3
    ;;
  kill)
    name="${2:?usage: cluster.sh kill NAME}"
    offset "$name" >/dev/null
    pid="$(pid_of "$name")" || die "$name is not running"
    kill -KILL "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    rm -f "$run_dir/$name.pid"
    say "SIGKILLed $name (pid $pid)"
    ;;
  start)
    name="${2:?usage: cluster.sh start NAME}"
    offset "$name" >/dev/null
    [ -f "$run_dir/config/cluster.yaml" ] || die "no cluster in $run_dir: run cluster.sh up first"
    # Like a supervisor's restart-on-failure: a process that exits before it listens is started
    # once more; the first exit and its log tail go to stderr, so it is reported, not hidden.
    for attempt in 1 2; do
      start_one "$name"
      if wait_listening "$name"; then break; fi
      [ "$attempt" = 2 ] && die "$name did not start in 2 attempts; see $run_dir/$name.log"
      say "$name exited on start (attempt 1 of 2, log tail above): starting it again in 3 s" >&2
      sleep 3
    done
    say "started $name (pid $(pid_of "$name"))"
    ;;
  addresses) frontends ;;
  *) die "usage: cluster.sh up [--reset] | down | status | kill NAME | start NAME | build | addresses" ;;
esac
