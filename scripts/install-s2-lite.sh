#!/usr/bin/env bash
# Installs the s2-lite server binary into a per-version cache outside the checkout,
# so a fresh CI clone reuses it instead of rebuilding (15+ minutes on 2 cores).
# Prints the path of the binary on stdout.
#
#   S2_LITE          an s2-lite server binary to use instead (nothing is built)
#   S2_LITE_VERSION  pinned version (newest that builds with this machine's Rust)
#   S2_LUA_CACHE     cache root (default: ~/.cache/s2-lua)
#
# Building needs cargo and rustc 1.88 or newer (s2-lite is Rust 2024 and uses let-chains).
set -euo pipefail

if [ -n "${S2_LITE:-}" ]; then
  if [ ! -x "$S2_LITE" ]; then
    echo "install-s2-lite: S2_LITE=$S2_LITE is not an executable file" >&2
    exit 1
  fi
  echo "$S2_LITE"
  exit 0
fi

version="${S2_LITE_VERSION:-0.43.4}"
cache="${S2_LUA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/s2-lua}"
root="$cache/s2-lite-$version"
bin="$root/bin/server"

if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
no_build() {
  cat >&2 <<MSG
install-s2-lite: $1
  s2-lite $version (the S2 server the demo and the specs run against) is built from source
  with cargo, once, into $root (15-25 minutes on two cores). It needs Rust 1.88 or newer;
  Debian's own cargo is too old (bookworm: 1.63, trixie: 1.85). Install Rust with rustup
  (https://rustup.rs):
      curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  then run this again (~/.cargo/bin is picked up). Or skip the build:
      S2_LITE=/path/to/server make demo          an s2-lite binary you already have
      S2_ACCOUNT_ENDPOINT=http://127.0.0.1:8080 S2_BASIN_ENDPOINT=http://127.0.0.1:8080 make demo
                                                 a server that is already running
MSG
  exit 1
}
command -v cargo >/dev/null 2>&1 || no_build "cargo is required to build s2-lite, and there is none"
rustc_version="$(rustc --version 2>/dev/null | awk '{ print $2 }')"
case "$rustc_version" in
  1.[0-9].*|1.[0-7][0-9].*|1.8[0-7].*) no_build "rustc $rustc_version is too old for s2-lite $version" ;;
  "") no_build "cargo is there but rustc is not" ;;
esac

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
