#!/usr/bin/env bash
# Installs the s2-lite server binary into a per-version cache outside the checkout,
# so a fresh CI clone reuses it instead of rebuilding (15+ minutes on 2 cores).
# Prints the path of the binary on stdout.
#
#   S2_LITE_VERSION  pinned version (newest that builds with this machine's Rust)
#   S2_LUA_CACHE     cache root (default: ~/.cache/s2-lua)
set -euo pipefail

version="${S2_LITE_VERSION:-0.43.4}"
cache="${S2_LUA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/s2-lua}"
root="$cache/s2-lite-$version"
bin="$root/bin/server"

if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-s2-lite: cargo is required to build s2-lite $version (install Rust via rustup or Debian's cargo)" >&2
  exit 1
fi

mkdir -p "$cache"
# One build at a time: a second caller (another checkout, a spec) waits for the first and
# then finds the binary, instead of building it all again.
exec 9>"$cache/.install-$version.lock"
flock 9
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
echo "install-s2-lite: building s2-lite $version into $root (takes a while, once)" >&2
# Build in a scratch target dir, install atomically so an interrupted build never leaves
# a half-written binary at the cached path.
tmp="$root.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
CARGO_TARGET_DIR="$cache/target" cargo install --locked --quiet \
  --root "$tmp" --version "$version" s2-lite >&2
mkdir -p "$root"
rm -rf "$root/bin"
mv "$tmp/bin" "$root/bin"
rm -rf "$cache/target" # 2-4 GB of build products; the binary is all we keep
echo "$bin"
