#!/usr/bin/env bash
# Side-by-side load test of the sidecar's pass-through against nginx as a
# plain reverse proxy of the same upstream, against the upstream alone, and
# against benches/hyper_floor.rs (the least a reverse proxy on hyper can
# run: what the sidecar would cost with nothing but hyper in it), alone
# ("floor") and with what the issue requires of every request written
# inline ("compliant": hop-by-hop headers, Via, timeout, 502/504).
#
#   benches/wrk_vs_nginx.sh            # 3 rounds x 10 s per target
#   DURATION=5 ROUNDS=5 CONNECTIONS=32 benches/wrk_vs_nginx.sh
#
# The upstream is an nginx answering a fixed 200 (one worker). nginx-the-proxy
# uses `worker_processes auto`, an upstream keepalive pool and HTTP/1.1 to the
# upstream (the standard setup, so the comparison is fair); the sidecar is
# built with --release and uses its defaults. Targets are run in alternation
# in each round, in a rotating order; medians of requests/s and p99 latency are printed with their
# ratios. Everything listens on 127.0.0.1 and every run is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}

. benches/nginx.sh
install_missing "wrk nginx" wrk nginx-light
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release --features sidecar --bin tower-shield-sidecar -q
SIDECAR=target/release/tower-shield-sidecar
FLOOR=$(build_hyper_floor)

UP=$(free_port); NP=$(free_port); SP=$(free_port); FP=$(free_port); CP=$(free_port)
WORK=$(mktemp -d /tmp/shield-wrk.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/up/nginx.pid" ] && kill "$(cat "$WORK/up/nginx.pid")" 2>/dev/null || true
  [ -f "$WORK/proxy/nginx.pid" ] && kill "$(cat "$WORK/proxy/nginx.pid")" 2>/dev/null || true
  sleep 0.2; rm -rf "$WORK"
}
trap cleanup EXIT

nginx_conf "$WORK/up" 1 "" "$(upstream_server "$UP")"
"$NGINX" -p "$WORK/up" -c "$WORK/up/nginx.conf"
nginx_conf "$WORK/proxy" auto "" "$(proxy_server "$NP" "$UP")"
"$NGINX" -p "$WORK/proxy" -c "$WORK/proxy/nginx.conf"
"$SIDECAR" --listen "127.0.0.1:$SP" --upstream "http://127.0.0.1:$UP" ${SIDECAR_ARGS:-} > "$WORK/sidecar.log" 2>&1 &
pids+=($!)
"$FLOOR" --listen "127.0.0.1:$FP" --upstream "127.0.0.1:$UP" > "$WORK/floor.log" 2>&1 &
pids+=($!)
"$FLOOR" --listen "127.0.0.1:$CP" --upstream "127.0.0.1:$UP" --compliant > "$WORK/compliant.log" 2>&1 &
pids+=($!)

for port in $UP $NP $SP $FP $CP; do
  for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fsS "http://127.0.0.1:$port/" >/dev/null
done

# CPU time (user + system, in clock ticks) of every thread of the given
# processes: the proxy's cost per request, which, unlike requests per second,
# does not move with what the rest of a shared machine is doing.
ticks() {
  local sum=0 t
  for p in "$@"; do
    for t in /proc/"$p"/task/*/stat; do
      sum=$((sum + $(awk '{print $14 + $15}' "$t" 2>/dev/null || echo 0)))
    done
  done
  echo "$sum"
}
HZ=$(getconf CLK_TCK)

declare -A RPS P99 CPU PIDS
run() { # name port
  local before after
  before=$(ticks ${PIDS[$1]})
  local out; out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:$2/")
  after=$(ticks ${PIDS[$1]})
  local rps p99 total cpu
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  total=$(awk '/requests in/ {print $1}' <<<"$out")
  cpu=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$total" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}')
  local errors; errors=$(grep -E "Non-2xx|Socket errors" <<<"$out" || true)
  printf '  %-9s %10s req/s  p99 %8s  %6s us CPU/req %s\n' "$1" "$rps" "$p99" "$cpu" "$errors"
  RPS[$1]+="$rps "; P99[$1]+="$p99 "; CPU[$1]+="$cpu "
}

PIDS[direct]=$(cat "$WORK/up/nginx.pid"; pgrep -P "$(cat "$WORK/up/nginx.pid")")
PIDS[nginx]=$(cat "$WORK/proxy/nginx.pid"; pgrep -P "$(cat "$WORK/proxy/nginx.pid")")
PIDS[sidecar]=${pids[0]}
PIDS[floor]=${pids[1]}
PIDS[compliant]=${pids[2]}

echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, $ROUNDS rounds; $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
# Rotate the order every round so that neither proxy always runs first.
order=("direct $UP" "nginx $NP" "sidecar $SP" "floor $FP" "compliant $CP")
n=${#order[@]}
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r"
  for i in $(seq 0 $((n - 1))); do
    # shellcheck disable=SC2086
    run ${order[$(( (i + r) % n ))]}
  done
done

names="direct nginx sidecar floor compliant"
args=()
for table in RPS P99 CPU; do
  for name in $names; do
    declare -n t=$table
    args+=("${t[$name]}")
    unset -n t
  done
done
python3 - "${args[@]}" <<'PY'
import statistics, sys
def ms(v):
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if v.endswith(unit): return float(v[:-len(unit)]) * f
    return float(v)
names = ["direct", "nginx", "sidecar", "floor", "compliant"]
k = len(names)
rounds = [a.split() for a in sys.argv[1:1 + k]]
rps = {n: statistics.median(map(float, a)) for n, a in zip(names, rounds)}
p99 = {n: statistics.median(map(ms, a.split())) for n, a in zip(names, sys.argv[1 + k:1 + 2 * k])}
cpu = {n: statistics.median(map(float, a.split())) for n, a in zip(names, sys.argv[1 + 2 * k:1 + 3 * k])}
print("\nmedians (direct's CPU is the upstream's own; floor and compliant are benches/hyper_floor.rs)")
for n in names:
    print(f"  {n:9} {rps[n]:10.0f} req/s  p99 {p99[n]:7.2f} ms  {cpu[n]:6.1f} us CPU/req")
print()
for a, b in (("sidecar", "nginx"), ("floor", "nginx"), ("compliant", "nginx"), ("sidecar", "compliant")):
    paired = [float(x) / float(y) for x, y in zip(rounds[names.index(a)], rounds[names.index(b)])]
    print(f"{a + ' / ' + b:19} throughput {rps[a]/rps[b]:.2f}x   p99 {p99[a]/p99[b]:.2f}x"
          f"   CPU per request {cpu[a]/cpu[b]:.2f}x")
    print(f"{a + ' / ' + b:19} per round: " + " ".join(f"{r:.2f}" for r in paired))
print(f"sidecar / direct  throughput {rps['sidecar']/rps['direct']:.2f}x")
print(f"nginx / direct    throughput {rps['nginx']/rps['direct']:.2f}x")
PY
