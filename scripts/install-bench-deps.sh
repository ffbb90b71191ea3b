#!/usr/bin/env bash
# Installs what `make bench` compares against and drives the load with, when missing, and any extra
# Debian packages named as arguments (`make symbol-order` adds valgrind).
set -euo pipefail
missing=()
for package in nghttp2-client nghttp2-proxy haproxy "$@"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# nghttpx and HAProxy are started by the benchmark itself, never as services.
