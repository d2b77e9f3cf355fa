#!/usr/bin/env python3
"""The `copy` benchmark family: mpcp -a against cp -a, rsync -a and the seeds'
Python copier (bench/python/seed_copier.py), side by side in one run.

    copy.py --build DIR [--reps N] [--keep]

Workloads (source trees made once under DIR/bench-copy/):
  copy_small  20 000 files of 4 KiB in 100 folders
  copy_large  4 files of 256 MiB
  copy_mixed  about 5 000 files of varied sizes, symlinks, hard links and
              nested folders, like a source tree

Each tool copies the same source into a fresh destination; `sync` runs before
every timed run (outside the timing), the tools are alternated run by run,
and the median of the runs counts. The seeds' copier is slow, so it runs once
per workload (copy_small and copy_mixed only), after the first round of the
others, and rsync (no target) once. Prints one JSON row per
workload and peer: bench/run.py computes ratio = peer time / mpcp time.
BENCH_SCALE (a float, default 1) scales the file counts and sizes.
"""
import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SCALE = float(os.environ.get("BENCH_SCALE", "1") or 1)


def log(msg):
    print("  copy: " + msg, file=sys.stderr, flush=True)


def scaled(n):
    return max(1, int(n * SCALE))


def make_small(root):
    data = os.urandom(4096)
    for d in range(100):
        dd = os.path.join(root, "d%03d" % d)
        os.makedirs(dd)
        for f in range(scaled(200)):
            with open(os.path.join(dd, "f%03d" % f), "wb") as fh:
                fh.write(data)


def make_large(root):
    os.makedirs(root)
    block = bytearray(os.urandom(1 << 20))
    for i in range(4):
        with open(os.path.join(root, "big%d" % i), "wb") as fh:
            for k in range(scaled(256)):
                block[0:8] = (i * 100000 + k).to_bytes(8, "little")
                fh.write(block)


def make_mixed(root):
    rnd = random.Random(42)
    blob = os.urandom(4 << 20)
    dirs = [root]
    os.makedirs(root)
    for i in range(scaled(300)):
        parent = rnd.choice(dirs)
        if parent.count(os.sep) - root.count(os.sep) >= 6:
            parent = root
        d = os.path.join(parent, "dir%03d" % i)
        os.makedirs(d)
        dirs.append(d)
    files = []
    for i in range(scaled(4700)):
        d = rnd.choice(dirs)
        r = rnd.random()
        if r < 0.60:
            size = rnd.randint(0, 8 << 10)          # small sources
        elif r < 0.90:
            size = rnd.randint(8 << 10, 128 << 10)  # medium
        elif r < 0.99:
            size = rnd.randint(128 << 10, 1 << 20)  # large-ish
        else:
            size = rnd.randint(1 << 20, 4 << 20)    # a few big ones
        p = os.path.join(d, "file%04d.%s" % (i, rnd.choice(["c", "h", "py", "txt", "o"])))
        off = rnd.randint(0, len(blob) - size) if size < len(blob) else 0
        with open(p, "wb") as fh:
            fh.write(blob[off:off + size])
        files.append(p)
    for i in range(scaled(200)):  # relative symlinks to files nearby
        target = rnd.choice(files)
        link = os.path.join(os.path.dirname(target), "link%03d" % i)
        os.symlink(os.path.basename(target), link)
    for i in range(scaled(100)):  # hard links, some across folders
        target = rnd.choice(files)
        os.link(target, os.path.join(rnd.choice(dirs), "hard%03d" % i))


def find_mpcp(build):
    for p in (os.path.join(build, "mpcp"), os.path.join(build, "tools", "mpcp", "mpcp")):
        if os.path.exists(p):
            return os.path.abspath(p)
    sys.exit("copy.py: mpcp not built in %s" % build)


def timed(cmd):
    subprocess.run(["sync"], check=False)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t = time.perf_counter() - t0
    if r.returncode != 0:
        log("%s failed (%d): %s" % (cmd[0], r.returncode, r.stderr.decode()[-500:]))
        return None
    return t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the source trees")
    ap.add_argument("--only", default="", help="comma-separated workloads")
    a = ap.parse_args()
    mpcp = find_mpcp(a.build)
    py = sys.executable
    seed = os.path.join(HERE, "python", "seed_copier.py")
    work = os.path.join(os.path.abspath(a.build), "bench-copy")
    os.makedirs(work, exist_ok=True)
    has_rsync = shutil.which("rsync") is not None
    if not has_rsync:
        log("rsync not installed: its rows are skipped (scripts/deps.sh installs it)")

    workloads = [
        ("copy_small", make_small, {"cp -a": 1.0, "python": 30.0}),
        ("copy_large", make_large, {"cp -a": 0.91}),
        ("copy_mixed", make_mixed, {}),
    ]
    only = [w for w in a.only.split(",") if w]
    for name, maker, targets in workloads:
        if only and name not in only:
            continue
        src = os.path.join(work, name)
        if not os.path.isdir(src):
            log("making %s" % name)
            shutil.rmtree(src + ".tmp", ignore_errors=True)
            maker(src + ".tmp")
            os.rename(src + ".tmp", src)
        dst = os.path.join(work, "dst")
        tools = [("mpcp", [mpcp, "-a", "--no-progress", src, dst]),
                 ("cp -a", ["cp", "-a", src, dst])]
        if has_rsync:
            tools.append(("rsync -a", ["rsync", "-a", src + "/", dst]))
        times = {t: [] for t, _ in tools}
        python_at = min(1, a.reps) if name != "copy_large" else -1
        for rep in range(a.reps + 1):
            if rep == python_at:
                # The seeds' copier runs once, between the runs of the
                # others, so that it meets the same machine load as they do.
                shutil.rmtree(dst, ignore_errors=True)
                times["python"] = []
                t = timed([py, seed, src, dst])
                if t is not None:
                    times["python"].append(t)
                log("%s python copier: %s s" % (name, "%.3f" % t if t else "failed"))
            if rep == a.reps:
                break
            order = tools[rep % len(tools):] + tools[:rep % len(tools)]
            for tool, cmd in order:
                # rsync has no target and is slow on small files: one run
                # (the middle one) is enough for its row.
                if tool == "rsync -a" and rep != min(1, a.reps - 1):
                    continue
                shutil.rmtree(dst, ignore_errors=True)
                t = timed(cmd)
                if t is not None:
                    times[tool].append(t)
                log("%s %s run %d: %s s" % (name, tool, rep + 1,
                                             "%.3f" % t if t else "failed"))
        shutil.rmtree(dst, ignore_errors=True)
        if not times["mpcp"]:
            continue
        ours = statistics.median(times["mpcp"])
        for peer in ["cp -a", "rsync -a", "python"]:
            if peer not in times or not times[peer]:
                continue
            print(json.dumps({"workload": name, "peer": peer, "unit": "s",
                              "mproc": round(ours, 4),
                              "peer_value": round(statistics.median(times[peer]), 4),
                              "floor": None, "higher_is_better": False,
                              "target": targets.get(peer, 0), "floor_max": 0}),
                  flush=True)
        if not a.keep:
            shutil.rmtree(src, ignore_errors=True)
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
