#!/usr/bin/env bash
# The whole server stack on axum under wrk: the same router answering a small
# JSON body, (a) bare, (b) under tower-http's nearest equivalents of what
# ServerStack does (timeout, x-request-id set and propagated, TraceLayer),
# (c) under ServerStack with context, error responses and timeout, (d) (b)
# with tower-http's bearer check, (e) (c) with auth (static tokens) and a
# per-caller rate limit (benches/server_stack.rs). wrk sends a bearer token
# to every target. Each runs in a process of its own with one
# worker thread; targets alternate in a rotating order each round; medians
# of requests/s, p99 latency and CPU per request are printed with ratios.
#
#   benches/wrk_server_stack.sh              # 3 rounds x 10 s per target
#   DURATION=5 ROUNDS=5 benches/wrk_server_stack.sh
#
# Everything listens on 127.0.0.1; every run and every server is bounded in
# time.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}

. benches/nginx.sh
install_missing "wrk" wrk

BIN=$(cargo bench --bench server_stack --no-run 2>&1 \
  | sed -n 's/.*Executable benches\/server_stack.rs (\(.*\))/\1/p')
[ -x "$BIN" ] || { echo "could not build benches/server_stack.rs" >&2; exit 1; }

names=(bare tower_http shield tower_http_auth shield_auth)
declare -A PORT PIDS
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
limit=$(( (DURATION + 2) * ROUNDS * ${#names[@]} + 60 ))
for n in "${names[@]}"; do
  PORT[$n]=$(free_port)
  "$BIN" --variant "$n" --listen "127.0.0.1:${PORT[$n]}" --seconds "$limit" >/dev/null 2>&1 &
  pids+=($!); PIDS[$n]=$!
done
for n in "${names[@]}"; do
  for _ in $(seq 1 100); do curl -fsS -H "Authorization: Bearer bench-token" "http://127.0.0.1:${PORT[$n]}/" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fsS -H "Authorization: Bearer bench-token" "http://127.0.0.1:${PORT[$n]}/" >/dev/null
done

ticks() {
  local sum=0 t
  for t in /proc/"$1"/task/*/stat; do
    sum=$((sum + $(awk '{print $14 + $15}' "$t" 2>/dev/null || echo 0)))
  done
  echo "$sum"
}
HZ=$(getconf CLK_TCK)

declare -A RPS P99 CPU
run() { # name
  local before after out rps p99 total cpu errors
  before=$(ticks "${PIDS[$1]}")
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency \
    -H "Authorization: Bearer bench-token" "http://127.0.0.1:${PORT[$1]}/")
  after=$(ticks "${PIDS[$1]}")
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  total=$(awk '/requests in/ {print $1}' <<<"$out")
  cpu=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$total" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}')
  errors=$(grep -E "Non-2xx|Socket errors" <<<"$out" || true)
  printf '  %-16s %10s req/s  p99 %8s  %6s us CPU/req %s\n' "$1" "$rps" "$p99" "$cpu" "$errors"
  RPS[$1]+="$rps "; P99[$1]+="$p99 "; CPU[$1]+="$cpu "
}

echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, $ROUNDS rounds; $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
k=${#names[@]}
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r"
  for i in $(seq 0 $((k - 1))); do run "${names[$(( (i + r) % k ))]}"; done
done

args=()
for table in RPS P99 CPU; do
  declare -n t=$table
  for n in "${names[@]}"; do args+=("${t[$n]}"); done
  unset -n t
done
python3 - "${args[@]}" <<'PY'
import statistics, sys
def ms(v):
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if v.endswith(unit): return float(v[:-len(unit)]) * f
    return float(v)
names = ["bare", "tower_http", "shield", "tower_http_auth", "shield_auth"]
k = len(names)
runs = [a.split() for a in sys.argv[1:1 + k]]
rps = {n: statistics.median(map(float, a)) for n, a in zip(names, runs)}
p99 = {n: statistics.median(map(ms, a.split())) for n, a in zip(names, sys.argv[1 + k:1 + 2 * k])}
cpu = {n: statistics.median(map(float, a.split())) for n, a in zip(names, sys.argv[1 + 2 * k:1 + 3 * k])}
print("\nmedians")
for n in names:
    print(f"  {n:16} {rps[n]:10.0f} req/s  p99 {p99[n]:7.3f} ms  {cpu[n]:6.1f} us CPU/req")
print()
for a, b in (("shield", "bare"), ("shield", "tower_http"), ("tower_http", "bare"),
             ("shield_auth", "bare"), ("shield_auth", "tower_http_auth"), ("shield_auth", "shield")):
    paired = [float(x) / float(y) for x, y in zip(runs[names.index(a)], runs[names.index(b)])]
    print(f"{a + ' / ' + b:32} throughput {rps[a]/rps[b]:.2f}x   p99 {p99[a]/p99[b]:.2f}x"
          f"   CPU per request {cpu[a]/cpu[b]:.2f}x   per round: " + " ".join(f"{r:.2f}" for r in paired))
PY
