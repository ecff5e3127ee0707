#!/usr/bin/env bash
# Installs what this project needs and is missing: Debian packages, then s2-lite (built once
# into a cache outside the checkout, see install-s2-lite.sh). Safe to run again: it does nothing
# when everything is there.
#
#   scripts/deps.sh demo    what building and running the module and s2-lite need (make demo)
#   scripts/deps.sh test    that, plus what the whole suite needs (make deps / test-deps / test)
#
# Neither changes which interpreter `lua` (and `luac`) runs: Debian's luarocks pulls in lua5.1,
# whose alternative has a higher priority than lua5.4's and would take over /usr/bin/lua. The
# alternatives are recorded before installing and set back afterwards (which leaves them in
# manual mode, pointing where they pointed before).
#
# s2-lite is not built when S2_LITE names a server binary (install-s2-lite.sh uses it), nor for
# the demo when S2_ACCOUNT_ENDPOINT names a running server.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
what="${1:-test}"

# Build the module (C core, Lua 5.4), run it, and start s2-lite (curl polls its /health).
demo_packages=(
  build-essential pkg-config
  lua5.4 liblua5.4-dev lua-cjson
  libcurl4-openssl-dev libnghttp2-dev libssl-dev libzstd-dev zlib1g-dev
  curl ca-certificates
)
# The suite: busted, OpenResty (nginx + LuaJIT build), the schedulers it runs under, the
# Lua 5.3 / 5.1 compile checks, luarocks (rockspec checks), sanitizers, valgrind, openssl
# (TLS test certificates).
test_packages=(
  lua-busted openssl
  luajit2 libluajit2-5.1-dev nginx-light libnginx-mod-http-lua
  lua-cqueues lua-luv lua-copas
  liblua5.3-dev liblua5.1-0-dev luarocks
  clang libclang-rt-dev valgrind
)

case "$what" in
  demo) packages=("${demo_packages[@]}") ;;
  test) packages=("${demo_packages[@]}" "${test_packages[@]}") ;;
  *) echo "usage: scripts/deps.sh [demo|test]" >&2; exit 2 ;;
esac

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# The current choice of a Debian alternative ("" when it does not exist).
alternative_value() {
  # --query fails when the alternative does not exist yet (no Lua installed): not an error here.
  { update-alternatives --query "$1" 2>/dev/null || true; } | sed -n 's/^Value: //p'
}

# Installs the missing packages of "$@", keeping lua-interpreter and lua-compiler where they were.
install_missing() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  local alts=(lua-interpreter lua-compiler) before=() i
  for i in "${!alts[@]}"; do before[i]="$(alternative_value "${alts[i]}")"; done
  echo "deps: installing Debian packages: ${missing[*]}" >&2
  $sudo apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
  restore_alternatives alts before
}

# restore_alternatives NAMES_ARRAY VALUES_ARRAY: sets each alternative back to its recorded
# value when an install moved it (an alternative that did not exist before is left as it is).
restore_alternatives() {
  local -n names="$1" values="$2"
  local i now
  for i in "${!names[@]}"; do
    [ -n "${values[i]}" ] || continue
    now="$(alternative_value "${names[i]}")"
    if [ "$now" != "${values[i]}" ]; then
      $sudo update-alternatives --set "${names[i]}" "${values[i]}" >&2
      echo "deps: kept ${names[i]} on ${values[i]} (the install had switched it to $now)" >&2
    fi
  done
}

# The demo's packages first, on their own: on a machine without any Lua, lua5.4 becomes `lua`,
# and the test packages (lua5.1 through luarocks) installed next do not take it over.
install_missing "${demo_packages[@]}"
[ "$what" = demo ] || install_missing "${packages[@]}"

if [ "$what" = demo ] && [ -n "${S2_ACCOUNT_ENDPOINT:-}" ]; then
  exit 0 # the demo runs against that server: no s2-lite needed
fi
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
"$here/install-s2-lite.sh" >/dev/null
