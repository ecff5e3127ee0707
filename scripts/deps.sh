#!/usr/bin/env bash
# Installs what this project needs and is missing: Debian packages, then s2-lite (built once
# into a cache outside the checkout, see install-s2-lite.sh). Safe to run again: it does nothing
# when everything is there.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

packages=(
  build-essential pkg-config
  lua5.4 liblua5.4-dev lua-busted lua-cjson
  libcurl4-openssl-dev libnghttp2-dev libssl-dev libzstd-dev zlib1g-dev
  curl ca-certificates openssl
  luajit2 libluajit2-5.1-dev nginx-light libnginx-mod-http-lua
  lua-cqueues lua-luv lua-copas
  liblua5.3-dev liblua5.1-0-dev luarocks
  clang libclang-rt-dev valgrind
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing Debian packages: ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
"$here/install-s2-lite.sh" >/dev/null
