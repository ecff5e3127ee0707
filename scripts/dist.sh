#!/usr/bin/env bash
# make dist: the source rock of the release rockspec (rockspec/s2-VERSION-1.rockspec).
#
#   scripts/dist.sh [OUTDIR]     (default build/dist)
#
# There is no public repository to fetch from yet, so the release rockspec's source.url is a
# file name, s2-VERSION.tar.gz: this script writes that tarball (the files of this checkout
# that building, installing and `luarocks test` need, under s2-VERSION/) and a copy of the
# rockspec into OUTDIR, and `luarocks pack` turns the pair into OUTDIR/s2-VERSION-1.src.rock,
# which `luarocks install` builds anywhere (it takes the tarball inside the rock, by name).
# luarocks pack reads a relative file url from a temporary directory, so the copy names the
# tarball by its absolute file:// path. Prints the path of the rock.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$repo/build/dist}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

rockspecs=("$repo"/rockspec/s2-[0-9]*.rockspec)
[ ${#rockspecs[@]} -eq 1 ] && [ -f "${rockspecs[0]}" ] \
  || { echo "dist: want exactly one release rockspec in rockspec/, found: ${rockspecs[*]}" >&2; exit 1; }
rockspec="${rockspecs[0]}"
name="$(basename "$rockspec" .rockspec)"            # s2-0.1.0-1
version="${name#s2-}"; version="${version%-*}"      # 0.1.0
core_version="$(sed -n 's/^#define S2_VERSION "\(.*\)"$/\1/p' "$repo/csrc/s2.h")"
[ "$version" = "$core_version" ] \
  || { echo "dist: $name.rockspec is version $version, csrc/s2.h says S2_VERSION \"$core_version\"" >&2; exit 1; }

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
top="s2-$version"
mkdir "$stage/$top"
# What the rock builds and installs (csrc, lua, bin), what `luarocks test` runs (spec, .busted,
# docs for docs_spec), and the user's documentation and examples.
(cd "$repo" && cp -r csrc lua bin rockspec spec docs examples .busted README.md LICENSE "$stage/$top/")
find "$stage/$top" \( -name '*.o' -o -name '*.so' \) -delete
tar -C "$stage" --owner=0 --group=0 --sort=name -czf "$out/$top.tar.gz" "$top"
sed "s|^\(  url = \)\"$top.tar.gz\",|\1\"file://$out/$top.tar.gz\",|" "$rockspec" >"$out/$name.rockspec"
grep -q "file://$out/$top.tar.gz" "$out/$name.rockspec" \
  || { echo "dist: $name.rockspec has no source url = \"$top.tar.gz\"" >&2; exit 1; }
(cd "$out" && rm -f "$name.src.rock" && luarocks --lua-version=5.4 pack "$name.rockspec" >&2)
[ -f "$out/$name.src.rock" ] || { echo "dist: luarocks pack wrote no $name.src.rock" >&2; exit 1; }
echo "$out/$name.src.rock"
