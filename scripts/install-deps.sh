#!/usr/bin/env bash
# Installs the Debian packages the build, `make run` and the tests need, when they are missing.
# Runs as root (as on a fresh Debian machine) or through sudo. Swift itself must already be installed.
set -euo pipefail

packages=(
  libssl-dev libnghttp2-dev libjansson-dev libcrypt-dev pkg-config   # system libraries the build links
  zlib1g-dev libzstd-dev                                             # ... and the decompressors (ProxyCompression)
  openssl curl nghttp2-client ca-certificates testssl.sh             # dev certificates and real test clients
  gzip zstd                                                          # compressed test fixtures, made at test time
  python3 python3-venv                                               # end-to-end tests (OpenTelemetry SDK)
)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v swift >/dev/null 2>&1; then
  echo "swift is not on PATH: install the Swift 6 toolchain (https://www.swift.org/install/linux/) and retry." >&2
  exit 1
fi
