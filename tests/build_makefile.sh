#!/bin/sh
# The Makefile's configure step on a fresh copy of the source tree: a failed
# configure must not break the build directory for good, and a later CC or
# CMAKE_FLAGS must be honoured (not silently ignored because a cache exists).
# Only the configure step runs (no compile), so this stays quick.
set -eu
SRC=${MP_SOURCE_DIR:?}
# Values from the environment count as given: start from none.
unset CC CMAKE_FLAGS PREFIX MAKEFLAGS MFLAGS
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
cache() { sed -n "s/^$1:[A-Z]*=//p" "$T/src/b/CMakeCache.txt"; }

# A fresh clone: the tracked files plus new ones not yet committed, no build.
mkdir "$T/src"
(cd "$SRC" && git ls-files -z --cached --others --exclude-standard 2>/dev/null ||
  find . -path './build*' -prune -o -type f -print0) |
  (cd "$SRC" && xargs -0 tar cf -) | (cd "$T/src" && tar xf -)
cd "$T/src"
[ -f Makefile ] && [ -f CMakeLists.txt ] || fail "copy of the source tree"

# 1. A configure that fails (a compiler that does not exist) ...
if make -s configure BUILD=b CMAKE_FLAGS="-DCMAKE_C_COMPILER=/nonexistent/cc" >"$T/log" 2>&1; then
  fail "configure with a missing compiler succeeded"
fi
[ ! -f b/Makefile ] || fail "a failed configure left a Makefile"

# 2. ... is retried on the next run, which succeeds with the new flags.
make -s configure BUILD=b CMAKE_FLAGS="-DMP_WERROR=ON" >"$T/log" 2>&1 || { cat "$T/log"; fail "configure after a failed one"; }
[ -f b/Makefile ] || fail "no Makefile after a good configure"
[ "$(cache MP_WERROR)" = ON ] || fail "CMAKE_FLAGS not applied: MP_WERROR=$(cache MP_WERROR)"

# 3. Not giving CMAKE_FLAGS keeps the configured ones (no reconfigure).
before=$(cksum <b/CMakeCache.txt)
make -s configure BUILD=b >"$T/log" 2>&1 || fail "plain configure"
[ "$(cksum <b/CMakeCache.txt)" = "$before" ] || fail "plain make reconfigured"
[ "$(cache MP_WERROR)" = ON ] || fail "plain make dropped MP_WERROR"

# 4. Changed CMAKE_FLAGS start afresh: a dropped flag is really gone.
make -s configure BUILD=b CMAKE_FLAGS="-DMP_SANITIZE=undefined" >"$T/log" 2>&1 || fail "configure with new flags"
[ "$(cache MP_SANITIZE)" = undefined ] || fail "new CMAKE_FLAGS ignored"
[ "$(cache MP_WERROR)" = OFF ] || fail "old flag kept after CMAKE_FLAGS changed"

# 5. A changed CC is honoured.
if command -v clang >/dev/null 2>&1; then
  make -s configure BUILD=b CC=clang >"$T/log" 2>&1 || fail "configure with CC=clang"
  case "$(cache CMAKE_C_COMPILER)" in *clang*) ;; *) fail "CC=clang ignored: $(cache CMAKE_C_COMPILER)" ;; esac
  [ "$(cache MP_SANITIZE)" = undefined ] || fail "CC change dropped CMAKE_FLAGS"
fi
echo "OK"
