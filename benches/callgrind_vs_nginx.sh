#!/usr/bin/env bash
# User-space instructions per proxied request, sidecar against nginx, under
# valgrind's callgrind: a count that, unlike requests per second, does not
# move with what else a shared machine is doing (it leaves out the kernel,
# which benches/wrk_vs_nginx.sh's CPU time includes).
#
#   benches/callgrind_vs_nginx.sh            # 8 s of wrk -t1 -c16 per proxy
#   DURATION=4 benches/callgrind_vs_nginx.sh
#
# Each proxy runs alone under callgrind in front of the same upstream (an
# nginx answering a fixed 200, outside callgrind); its whole run, start-up
# included, is divided by the requests wrk completed. The sidecar runs with
# its defaults; nginx as one worker process, in the configuration of
# benches/wrk_vs_nginx.sh. Everything listens on 127.0.0.1, every run is
# bounded in time, and the callgrind outputs are left in $OUT (default
# target/callgrind) for callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-8}
OUT=${OUT:-target/callgrind}
. benches/nginx.sh
install_missing "wrk nginx valgrind" wrk nginx-light valgrind
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
cargo build --release --features sidecar --bin tower-shield-sidecar -q
SIDECAR=target/release/tower-shield-sidecar
FLOOR=$(build_hyper_floor)
mkdir -p "$OUT"

UP=$(free_port); PORT=$(free_port)
WORK=$(mktemp -d /tmp/shield-cg.XXXXXX)
cleanup() {
  [ -f "$WORK/up/nginx.pid" ] && kill "$(cat "$WORK/up/nginx.pid")" 2>/dev/null || true
  sleep 0.2; rm -rf "$WORK"
}
trap cleanup EXIT

nginx_conf "$WORK/up" 1 "" "$(upstream_server "$UP")"
"$NGINX" -p "$WORK/up" -c "$WORK/up/nginx.conf"
nginx_conf "$WORK/proxy" 1 "daemon off; master_process off;" "$(proxy_server "$PORT" "$UP")"

declare -A PER
measure() { # name, stop signal, command...
  local name=$1 signal=$2; shift 2
  valgrind --tool=callgrind --callgrind-out-file="$OUT/$name.out" "$@" > "$WORK/$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 300); do curl -fsS "http://127.0.0.1:$PORT/" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fsS "http://127.0.0.1:$PORT/" >/dev/null
  local requests
  requests=$(wrk -t1 -c16 -d"${DURATION}s" "http://127.0.0.1:$PORT/" | awk '/requests in/ {print $1}')
  kill -"$signal" "$pid"; wait "$pid" || true
  local total
  total=$(awk '/^summary:/ {print $2}' "$OUT/$name.out")
  PER[$name]=$((total / requests))
  printf '  %-9s %8d requests  %12d instructions  %7d per request\n' "$name" "$requests" "$total" "${PER[$name]}"
}

echo "callgrind, wrk -t1 -c16 -d${DURATION}s per proxy"
measure nginx QUIT "$NGINX" -p "$WORK/proxy" -c "$WORK/proxy/nginx.conf"
measure floor TERM "$FLOOR" --listen "127.0.0.1:$PORT" --upstream "127.0.0.1:$UP"
measure compliant TERM "$FLOOR" --listen "127.0.0.1:$PORT" --upstream "127.0.0.1:$UP" --compliant
measure sidecar TERM "$SIDECAR" --listen "127.0.0.1:$PORT" --upstream "http://127.0.0.1:$UP"
python3 -c "
n, f, c, s = ${PER[nginx]}, ${PER[floor]}, ${PER[compliant]}, ${PER[sidecar]}
print(f'floor / nginx         instructions per request {f / n:.2f}x')
print(f'compliant / nginx     instructions per request {c / n:.2f}x')
print(f'sidecar / nginx       instructions per request {s / n:.2f}x')
print(f'sidecar / compliant   instructions per request {s / c:.2f}x')"
