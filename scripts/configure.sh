#!/bin/sh
# Configure step of the Makefile: runs CMake when the build directory has no
# Makefile (a first run, or a configure that failed), or when CC,
# CMAKE_FLAGS or PREFIX were given with values different from the last
# configure. Values not given keep what the build directory was configured
# with. A change starts from a fresh cache, so a flag that was dropped is
# really gone. The values used are kept in $BUILD/mproc-configure.txt.
#
# Usage: scripts/configure.sh BUILD
# Environment: MP_CC, MP_FLAGS, MP_PREFIX and MP_CC_GIVEN, MP_FLAGS_GIVEN,
# MP_PREFIX_GIVEN (1 when the caller set the value explicitly).
set -e
BUILD=${1:-build}
STAMP="$BUILD/mproc-configure.txt"

old_cc= old_flags= old_prefix=/usr/local have_stamp=0
if [ -f "$STAMP" ]; then
  have_stamp=1
  old_cc=$(sed -n 's/^cc=//p' "$STAMP")
  old_flags=$(sed -n 's/^flags=//p' "$STAMP")
  old_prefix=$(sed -n 's/^prefix=//p' "$STAMP")
fi
cc=$old_cc flags=$old_flags prefix=$old_prefix
[ "${MP_CC_GIVEN:-0}" = 1 ] && cc=$MP_CC
[ "${MP_FLAGS_GIVEN:-0}" = 1 ] && flags=$MP_FLAGS
[ "${MP_PREFIX_GIVEN:-0}" = 1 ] && prefix=$MP_PREFIX

save() { printf 'cc=%s\nflags=%s\nprefix=%s\n' "$cc" "$flags" "$prefix" >"$STAMP"; }

run=0
if [ ! -f "$BUILD/Makefile" ] || [ ! -f "$BUILD/CMakeCache.txt" ]; then
  run=1
elif [ $have_stamp = 1 ]; then
  [ "$cc" = "$old_cc" ] && [ "$flags" = "$old_flags" ] || run=1
elif [ "${MP_CC_GIVEN:-0}${MP_FLAGS_GIVEN:-0}" != 00 ]; then
  run=1 # configured before this script kept its values: trust what was given
fi
if [ $run = 0 ]; then
  # Only the install prefix changed: no need to start afresh.
  if [ "${MP_PREFIX_GIVEN:-0}" = 1 ] && { [ $have_stamp = 0 ] || [ "$prefix" != "$old_prefix" ]; }; then
    cmake -S . -B "$BUILD" -DCMAKE_INSTALL_PREFIX="$prefix" >/dev/null
    [ $have_stamp = 0 ] || save
  fi
  exit 0
fi

[ -f "$BUILD/CMakeCache.txt" ] && echo "configure: CC, CMAKE_FLAGS or PREFIX changed or the last configure failed: configuring $BUILD afresh"
# Without a Makefile the next run configures again, whatever happens here.
rm -rf "$BUILD/Makefile" "$BUILD/CMakeCache.txt" "$BUILD/CMakeFiles" "$STAMP"
mkdir -p "$BUILD"
if [ -n "$cc" ]; then CC=$cc; export CC; else unset CC; fi
# $flags is split into words on purpose: it holds several -D options.
# shellcheck disable=SC2086
cmake -S . -B "$BUILD" -DCMAKE_INSTALL_PREFIX="$prefix" $flags
save
