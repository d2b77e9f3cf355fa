#!/bin/sh
# The main job: for now, run the seed examples one after another.
BUILD=${1:-build}
set -e
for ex in "$BUILD"/examples/*; do
  [ -x "$ex" ] || continue
  echo "== $(basename "$ex")"
  timeout 30 "$ex" || echo "(exit $?)"
done
