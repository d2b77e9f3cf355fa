#!/bin/sh
# The main job: mpcp, the parallel folder copier built on mproc's pool and
# queue, copies a sample tree with its progress line and prints the summary.
# The sample tree (a few thousand small files and a few large ones, about
# 400 MiB) is made under $BUILD/demo/ and removed with its copies at the end,
# also when the demo fails or is interrupted.
BUILD=${1:-build}
set -e
MPCP="$BUILD/mpcp"
[ -x "$MPCP" ] || MPCP="$BUILD/tools/mpcp/mpcp"
[ -x "$MPCP" ] || { echo "demo: mpcp is not built (run make)"; exit 1; }
DEMO="$BUILD/demo"
SRC="$DEMO/sample"
DST="$DEMO/copy"

trap 'rm -rf "$DEMO"' EXIT
trap 'exit 130' INT TERM
if [ ! -d "$SRC" ]; then
  echo "== making a sample tree in $SRC (3000 small files, 4 large ones)"
  python3 - "$SRC" <<'PY'
import os, random, sys
root = sys.argv[1]
rnd = random.Random(1)
blob = os.urandom(1 << 20)
tmp = root + ".tmp"
for d in range(30):
    sub = os.path.join(tmp, "docs" if d < 10 else "src", "part%02d" % d)
    os.makedirs(sub, exist_ok=True)
    for f in range(100):
        size = rnd.randint(0, 16 << 10)
        with open(os.path.join(sub, "file%03d.txt" % f), "wb") as fh:
            fh.write(blob[:size])
    os.symlink("file000.txt", os.path.join(sub, "latest"))
os.makedirs(os.path.join(tmp, "media"))
for i in range(4):
    with open(os.path.join(tmp, "media", "video%d.bin" % i), "wb") as fh:
        for k in range(96):
            fh.write(blob)
os.link(os.path.join(tmp, "media", "video0.bin"), os.path.join(tmp, "media", "video0-again.bin"))
os.rename(tmp, root)
PY
fi

rm -rf "$DST"
sync
echo "== mpcp -a --progress $SRC $DST"
"$MPCP" -a --progress "$SRC" "$DST"
echo "== the same with --verify and a JSON summary"
rm -rf "$DST"
"$MPCP" -a --progress --verify --json "$SRC" "$DST"
echo "== cp -a for comparison"
rm -rf "$DST"
sync
start=$(date +%s.%N)
cp -a "$SRC" "$DST"
end=$(date +%s.%N)
echo "cp -a: $(echo "$end - $start" | bc 2>/dev/null || echo "?") s"
rm -rf "$DST"
