# Shared by benches/wrk_vs_nginx.sh and benches/callgrind_vs_nginx.sh
# (sourced, not run): installs what they need and writes nginx configs.

need() { command -v "$1" >/dev/null 2>&1 || command -v "/usr/sbin/$1" >/dev/null 2>&1; }

# Installs the given Debian packages when any of the given commands is
# missing: `install_missing "wrk nginx" wrk nginx-light`.
install_missing() {
  local commands=$1; shift
  local c
  for c in $commands; do
    if ! need "$c"; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
      return
    fi
  done
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Writes DIR/nginx.conf: WORKERS worker processes, MAIN extra main-context
# directives, and HTTP (the servers) in an http block without access logs
# and with every temporary path inside DIR.
nginx_conf() { # dir, workers, main, http
  mkdir -p "$1/tmp"
  cat > "$1/nginx.conf" <<CONF
worker_processes $2;
$3
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $1/tmp; proxy_temp_path $1/tmp; fastcgi_temp_path $1/tmp;
  uwsgi_temp_path $1/tmp; scgi_temp_path $1/tmp;
  keepalive_requests 1000000;
  $4
}
CONF
}

# The upstream both benches proxy to: a fixed `200 hello`.
upstream_server() { # port
  echo "server { listen 127.0.0.1:$1; location / { default_type text/plain; return 200 \"hello\\n\"; } }"
}

# nginx as a plain reverse proxy of 127.0.0.1:UPSTREAM, with an upstream
# keepalive pool and HTTP/1.1 to the upstream (the standard setup).
proxy_server() { # listen port, upstream port
  echo "upstream up { server 127.0.0.1:$2; keepalive 64; }
  server { listen 127.0.0.1:$1; location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
}

# Builds benches/hyper_floor.rs (the least a reverse proxy on hyper can run)
# with the release settings the sidecar is built with, and prints its path.
build_hyper_floor() {
  cargo bench --bench hyper_floor --no-run 2>&1 \
    | sed -n 's/.*Executable benches\/hyper_floor.rs (\(.*\))/\1/p'
}
