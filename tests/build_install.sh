#!/bin/sh
# `cmake --install --prefix X` of the built tree: a program compiled with
# pkg-config against X runs (rpath for a non-system prefix), the static line
# needs no hard-coded path, and the tree still works after it is moved
# (mproc.pc is relocatable).
set -eu
BUILD=${MP_BUILD_DIR:?}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
command -v pkg-config >/dev/null || { echo "SKIP: no pkg-config"; exit 0; }
CC=${CC:-cc}
# A sanitized library needs the sanitizer runtime in the program too.
SAN=${MP_SANITIZE:+-fsanitize=$MP_SANITIZE}

cmake --install "$BUILD" --prefix "$T/first" >"$T/log" 2>&1 || { cat "$T/log"; fail "install"; }
mv "$T/first" "$T/moved"
PC=$(find "$T/moved" -name mproc.pc)
[ -n "$PC" ] || fail "no mproc.pc installed"
grep -q "$T/first" "$PC" && fail "mproc.pc names the install-time prefix"
export PKG_CONFIG_PATH=$(dirname "$PC")

cat >"$T/app.c" <<'C'
#include <mproc.h>
#include <stdio.h>
int main(void) {
  mp_queue_t *q;
  int rc = mp_queue_create(&q, NULL);
  if (rc < 0) { fprintf(stderr, "%s\n", mp_strerror(rc)); return 1; }
  rc = mp_queue_put(q, "hi", 2, 0);
  mp_queue_destroy(q);
  printf("version %s put %d\n", mp_version_string(), rc);
  return rc < 0;
}
C
LIBDIR=$(pkg-config --variable=libdir mproc)
[ -f "$LIBDIR/libmproc.a" ] || fail "libdir $LIBDIR from mproc.pc is wrong"
# Shared, with an rpath as README.md says for a non-system prefix.
$CC $SAN "$T/app.c" $(pkg-config --cflags --libs mproc) -Wl,-rpath,"$LIBDIR" -o "$T/app" ||
  fail "compile against the installed tree"
"$T/app" | grep -q "put 0" || fail "the shared-library program did not run"
# Static: the archive found through pkg-config.
$CC $SAN "$T/app.c" $(pkg-config --cflags mproc) "$LIBDIR/libmproc.a" -pthread -lcrypto -o "$T/app_static" ||
  fail "static link"
"$T/app_static" | grep -q "put 0" || fail "the static program did not run"
echo "OK"
