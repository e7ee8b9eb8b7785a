#!/usr/bin/env bash
# The sidecar as a shared cache ([cache], in memory) beside nginx with
# proxy_cache, on one cacheable URL of the same upstream (an nginx answering
# a fixed 200 with Cache-Control: max-age=3600). After one warming request
# each answers every request from its cache; wrk measures requests/s.
#
#   benches/wrk_cache_vs_nginx.sh             # 3 rounds x 10 s per target
#   DURATION=5 ROUNDS=5 benches/wrk_cache_vs_nginx.sh
#
# Everything listens on 127.0.0.1 and every run is bounded in time.
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

UP=$(free_port); NP=$(free_port); SP=$(free_port)
WORK=$(mktemp -d /tmp/shield-wrk-cache.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for d in up proxy; do
    [ -f "$WORK/$d/nginx.pid" ] && kill "$(cat "$WORK/$d/nginx.pid")" 2>/dev/null || true
  done
  sleep 0.2; rm -rf "$WORK"
}
trap cleanup EXIT

nginx_conf "$WORK/up" 1 "" "server { listen 127.0.0.1:$UP; location / { default_type text/plain;
  add_header Cache-Control \"max-age=3600\"; return 200 \"hello\\n\"; } }"
"$NGINX" -p "$WORK/up" -c "$WORK/up/nginx.conf"
nginx_conf "$WORK/proxy" auto "" "proxy_cache_path $WORK/proxy/cache keys_zone=shield:10m;
  upstream up { server 127.0.0.1:$UP; keepalive 64; }
  server { listen 127.0.0.1:$NP; location / { proxy_pass http://up; proxy_http_version 1.1;
    proxy_set_header Connection \"\"; proxy_cache shield; } }"
# nginx's workers (not root) write the cache: let them reach it.
mkdir -p "$WORK/proxy/cache"; chmod 755 "$WORK"; chmod -R a+rwX "$WORK/proxy"
"$NGINX" -p "$WORK/proxy" -c "$WORK/proxy/nginx.conf"
printf '[sidecar]\nlisten = "127.0.0.1:%s"\nupstream = "http://127.0.0.1:%s"\n[cache]\nx_cache_header = true\n' \
  "$SP" "$UP" > "$WORK/sidecar.toml"
"$SIDECAR" --config "$WORK/sidecar.toml" > "$WORK/sidecar.log" 2>&1 &
pids+=($!)

for port in $UP $NP $SP; do
  for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$port/c" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fsS "http://127.0.0.1:$port/c" >/dev/null
done
# Both answer from their caches now.
curl -fsS -D - -o /dev/null "http://127.0.0.1:$SP/c" | grep -qi '^x-cache: HIT'

declare -A RPS
echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, $ROUNDS rounds; $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r"
  order=("nginx_cache $NP" "sidecar_cache $SP")
  [ $((r % 2)) -eq 0 ] && order=("sidecar_cache $SP" "nginx_cache $NP")
  for target in "${order[@]}"; do
    set -- $target
    rps=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" "http://127.0.0.1:$2/c" | awk '/^Requests\/sec:/ {print $2}')
    printf '  %-14s %10s req/s\n' "$1" "$rps"
    RPS[$1]+="$rps "
  done
done
python3 - "${RPS[nginx_cache]}" "${RPS[sidecar_cache]}" <<'PY'
import statistics, sys
nginx, sidecar = ([float(x) for x in a.split()] for a in sys.argv[1:3])
print(f"\nmedians: nginx proxy_cache {statistics.median(nginx):.0f} req/s, sidecar [cache] {statistics.median(sidecar):.0f} req/s")
print(f"sidecar / nginx  throughput {statistics.median(sidecar) / statistics.median(nginx):.2f}x"
      "   per round: " + " ".join(f"{s / n:.2f}" for s, n in zip(sidecar, nginx)))
PY
