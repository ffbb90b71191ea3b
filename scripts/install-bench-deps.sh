#!/usr/bin/env bash
# Installs what `make bench` compares against, drives the load with and puts behind the proxies, when
# missing, and any extra Debian packages named as arguments (`make symbol-order` adds valgrind):
# h2load (nghttp2-client), nghttpx (nghttp2-proxy), nghttpd as the h2c upstream (nghttp2-server),
# HAProxy, and nginx as the HTTP/1.1 upstream (nginx-light).
set -euo pipefail
missing=()
for package in nghttp2-client nghttp2-proxy nghttp2-server haproxy nginx-light "$@"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# nghttpd, nghttpx, HAProxy and nginx are started by the benchmark itself, as the user running it, with
# their configuration, pid and log files in its temporary directory; never as services.
