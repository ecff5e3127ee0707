#!/usr/bin/env bash
# Checks that the C files of the core (csrc/s2_*.c) call each other in one direction only:
# builds the graph "file A uses a symbol file B defines" from the object files (nm) and
# fails when it has a circle, naming the files on it. The binding (lua_s2*.c) is one layer
# on top and is not checked. Usage: scripts/check-layers.sh [objdir] (build/obj).
# The intended order is in the header comment of csrc/s2.h.
#
# KNOWN lists edges ("definer user") that still point the wrong way and are left out of the
# check, each printed as a warning: remove an entry once its edge is gone.
set -euo pipefail
objdir="${1:-build/obj}"
shopt -s nullglob
objs=("$objdir"/s2_*.o)
# None left: unary calls are an operation behind the ops table, and the notice socket sits
# below the runtime.
KNOWN=""
if [ ${#objs[@]} -eq 0 ]; then
  echo "check-layers: no object files in $objdir (build first)" >&2
  exit 2
fi
defs="$(mktemp)"
edges="$(mktemp)"
trap 'rm -f "$defs" "$edges" "$edges.all" "$edges.known"' EXIT
for o in "${objs[@]}"; do
  f="$(basename "$o" .o)"
  nm --defined-only -g "$o" | awk -v f="$f" 'NF == 3 { print $3, f }'
done | sort -u >"$defs"
for o in "${objs[@]}"; do
  f="$(basename "$o" .o)"
  nm -u "$o" | awk '{ print $NF }' | sort -u | join - "$defs" | awk -v f="$f" '$2 != f { print $2, f }'
done | sort -u >"$edges.all"
printf '%s\n' "$KNOWN" | sort -u >"$edges.known"
comm -12 "$edges.all" "$edges.known" | while read -r definer user; do
  echo "check-layers: warning: known wrong-way dependency: $user uses $definer" >&2
done
comm -23 "$edges.all" "$edges.known" >"$edges"
# tsort reports every circle it finds ("input contains a loop:" then the members).
if ! out="$(tsort "$edges" 2>&1 >/dev/null)" || [ -n "$out" ]; then
  echo "check-layers: dependency circle among csrc files:" >&2
  echo "$out" | sed -E 's/^tsort: ([^:]*: )?//; s/^/  /' >&2
  echo "edges (definer user):" >&2
  sed 's/^/  /' "$edges" >&2
  exit 1
fi
echo "check-layers: $(wc -l <"$edges") dependencies among ${#objs[@]} files, no circle"
