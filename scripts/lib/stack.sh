# Shared by the scripts that run a throw-away stack (bench-*, load-test).
# Source it, then: stack_start DIR WORKERS [broker args...]; ... ; stack_stop
# Sets STACK_URL, STACK_DB, STACK_DIR. Binaries come from $IPFIXWEB_BIN_DIR, else
# $IPFIXWEB_BUILD_DIR/bin (the build directory scripts/bootstrap uses), else build/bin.
# Extra per-component arguments: STACK_WORKER_ARGS, STACK_API_ARGS (arrays).

stack_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
stack_bin=${IPFIXWEB_BIN_DIR:-${IPFIXWEB_BUILD_DIR:-$stack_root/build}/bin}
stack_pids=()
STACK_WORKER_ARGS=(${STACK_WORKER_ARGS[@]+"${STACK_WORKER_ARGS[@]}"})
STACK_API_ARGS=(${STACK_API_ARGS[@]+"${STACK_API_ARGS[@]}"})

# A port on 127.0.0.1 where nothing listens now (pure bash: no python needed).
# Taken below the kernel's ephemeral range, where outgoing connections would
# otherwise hold ports that a probe cannot see and bind() then refuses.
stack_free_port() {
  local p lo
  lo=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  while :; do
    p=$((10000 + RANDOM % (lo - 10000)))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}

# stack_start DIR WORKERS [extra broker args...]
stack_start() {
  local dir=$1 n=$2; shift 2
  mkdir -p "$dir/input" "$dir/output"
  [[ -e $dir/input/sample.pcap ]] || cp "$stack_root/tests/data/sample.pcap" "$dir/input/"
  local hp fp bp
  hp=$(stack_free_port); fp=$(stack_free_port); bp=$(stack_free_port)
  STACK_DIR=$dir; STACK_URL=http://127.0.0.1:$hp; STACK_DB=$dir/ipfixweb.db
  STACK_BACKEND=tcp://127.0.0.1:$bp
  "$stack_bin/ipfixweb-broker" --data-dir "$dir" --frontend tcp://127.0.0.1:$fp \
      --backend "$STACK_BACKEND" --log-level warn "$@" 2>>"$dir/broker.log" & stack_pids+=($!)
  local i
  for ((i = 1; i <= n; i++)); do
    "$stack_bin/ipfixweb-worker" --data-dir "$dir" --broker "$STACK_BACKEND" --id "w$i" --log-level warn \
        ${STACK_WORKER_ARGS[@]+"${STACK_WORKER_ARGS[@]}"} 2>>"$dir/worker$i.log" & stack_pids+=($!)
  done
  "$stack_bin/ipfixweb-api" --data-dir "$dir" --listen 127.0.0.1:$hp --broker tcp://127.0.0.1:$fp \
      --log-level warn ${STACK_API_ARGS[@]+"${STACK_API_ARGS[@]}"} 2>>"$dir/api.log" & stack_pids+=($!)
  for _ in $(seq 200); do
    curl -sf "$STACK_URL/readyz" 2>/dev/null | grep -q "\"workers\":$n" && return 0
    sleep 0.05
  done
  echo "stack did not become ready; last log lines:" >&2
  tail -n 20 "$dir"/*.log >&2 || true
  return 1
}

stack_stop() {
  ((${#stack_pids[@]})) && kill "${stack_pids[@]}" 2>/dev/null
  wait "${stack_pids[@]}" 2>/dev/null || true
  stack_pids=()
}

# Waits until no task is queued or running (at most $1 seconds, default 120).
stack_drain() {
  local limit=${1:-120} left
  for _ in $(seq $((limit * 10))); do
    left=$(sqlite3 "$STACK_DB" "SELECT count(*) FROM tasks WHERE state IN ('queued','running')")
    [[ $left == 0 ]] && return 0
    sleep 0.1
  done
  return 1
}
