#!/bin/sh
# Installs the Debian packages mproc needs to build, test, demo and benchmark.
# Quick no-op when everything is present. Needs root (or sudo) only when
# something is missing.
set -e
PKGS="build-essential cmake python3 libxxhash-dev rsync attr acl libacl1-dev clang llvm valgrind
  openmpi-bin libopenmpi-dev python3-mpi4py libhiredis-dev redis-server python3-redis libssl-dev"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || true
$SUDO apt-get install -y -qq --no-install-recommends $missing
