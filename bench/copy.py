#!/usr/bin/env python3
"""The `copy` benchmark family: mpcp against cp -a (copies) and rsync -a
(resume), every tool under the same conditions.

    copy.py --build DIR [--reps N] [--only W1,W2] [--keep] [--base-mpcp P]

(--only copy_resume runs the resume rows alone; --base-mpcp P adds another
mpcp build to them, interleaved, for a before/after on one machine; --rt,
or BENCH_RT=1, runs every tool alike under SCHED_FIFO, so that other work
on a shared machine does not decide the times.)

Workloads (source trees made once under DIR/bench-copy/, on the build
directory's filesystem):
  copy_small   20 000 files of 4 KiB in 100 folders: mpcp -a vs cp -a
  copy_large   one file of 512 MiB: mpcp -a vs cp -a (both tools are bound
               by writing it to the disk; 512 MiB gives the same ratio as
               1 GiB in half the time)
  copy_resume  the copy_small tree already copied: a second run over it,
               unchanged and with 1% of the files (200) changed in the
               destination; mpcp -a --resume vs rsync -a; the unchanged
               rows carry a floor: bench/resume_floor.c with 2 threads
               (getdents64 of each source folder, one fstatat per side per
               entry, nothing else), and a row against it with 1 thread

How a run is measured, the same for every tool:
  - the destination is a fresh directory on a fresh ext4 filesystem (a new
    sparse image file, mkfs.ext4 with the inode tables written up front,
    loop-mounted) made for that run alone, so no tool meets a filesystem
    that has just freed the inodes of an earlier copy (ext4 then rescans
    them on every create); copy_resume uses one filesystem per variant,
    prepared once with cp -a (one filesystem serves both variants:
    unchanged first, then the 1% one), and before each run of the second
    variant the same 1% of files are made to differ again;
  - warm runs read the source tree first (it is in the page cache); cold
    runs write 3 to /proc/sys/vm/drop_caches just before the tool starts;
  - the time is the tool's run plus the `sync -f` of the destination
    filesystem after it (data on disk, not only in the page cache);
  - tools and conditions are interleaved run by run (the order rotates),
    and the median of --reps runs (default 5) counts.
Needs root (mount, drop_caches); images and mounts are removed on every
exit path. Prints one JSON row per workload, condition and peer:
bench/run.py computes ratio = peer time / mpcp time. BENCH_SCALE (a float,
default 1) scales file counts and sizes.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

SCALE = float(os.environ.get("BENCH_SCALE", "1") or 1)
LARGE_MIB = 512


def log(msg):
    print("  copy: %s (load %.1f)" % (msg, os.getloadavg()[0]),
          file=sys.stderr, flush=True)


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
    with open(os.path.join(root, "big"), "wb") as fh:
        for k in range(scaled(LARGE_MIB)):
            block[0:8] = k.to_bytes(8, "little")
            fh.write(block)


def find_mpcp(build):
    for p in (os.path.join(build, "mpcp"),
              os.path.join(build, "tools", "mpcp", "mpcp")):
        if os.path.exists(p):
            return os.path.abspath(p)
    sys.exit("copy.py: mpcp not built in %s" % build)


def run(cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


class Fs:
    """A fresh loop-mounted ext4 filesystem in a sparse image file."""
    live = []

    def __init__(self, work, size_mib):
        self.img = tempfile.mktemp(prefix="img-", dir=work)
        self.mnt = tempfile.mkdtemp(prefix="mnt-", dir=work)
        self.mounted = False
        Fs.live.append(self)
        with open(self.img, "wb") as fh:
            fh.truncate(size_mib << 20)
        run(["mkfs.ext4", "-q", "-F", "-E",
             "lazy_itable_init=0,lazy_journal_init=0", self.img])
        run(["mount", "-o", "loop", self.img, self.mnt])
        self.mounted = True

    def close(self):
        if self.mounted:
            subprocess.run(["umount", self.mnt], check=False)
            self.mounted = False
        for p in (self.img,):
            if os.path.exists(p):
                os.unlink(p)
        if os.path.isdir(self.mnt):
            os.rmdir(self.mnt)
        if self in Fs.live:
            Fs.live.remove(self)


def cleanup_all(*_):
    for fs in list(Fs.live):
        fs.close()


def warm(tree):
    for dp, _, fns in os.walk(tree):
        for f in fns:
            p = os.path.join(dp, f)
            if os.path.islink(p):
                continue
            with open(p, "rb") as fh:
                while fh.read(1 << 20):
                    pass


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as fh:
        fh.write("3\n")


RT = []  # --rt: ["chrt", "-f", "10"], put in front of every tool alike


def timed(cmd, dst_fs, src, cold):
    if cold:
        drop_caches()
    else:
        warm(src)
    cmd = RT + cmd
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    subprocess.run(["sync", "-f", dst_fs], check=False)
    t = time.perf_counter() - t0
    if r.returncode != 0:
        log("%s failed (%d): %s" % (cmd[0], r.returncode,
                                    r.stderr.decode()[-500:]))
        return None
    return t


def damage(dst, n):
    """Makes the same n destination files differ from their source again
    (content and mtime), as if the source had changed since the copy."""
    done = 0
    for d in sorted(os.listdir(dst)):
        for f in sorted(os.listdir(os.path.join(dst, d)))[:2]:
            if done >= n:
                return
            p = os.path.join(dst, d, f)
            with open(p, "r+b") as fh:
                fh.write(os.urandom(16))
            os.utime(p, (1e9, 1e9))
            done += 1


def row(name, peer, ours, theirs, target, floor=None):
    """One row: medians, and every run (bench/run.py reports the spread)."""
    r = {"workload": name, "peer": peer, "unit": "s",
         "mproc": round(statistics.median(ours), 4),
         "peer_value": round(statistics.median(theirs), 4),
         "mproc_runs": [round(t, 4) for t in ours],
         "peer_runs": [round(t, 4) for t in theirs],
         "floor": round(statistics.median(floor), 4) if floor else None,
         "higher_is_better": False, "target": target, "floor_max": 0}
    if floor:
        r["floor_runs"] = [round(t, 4) for t in floor]
    print(json.dumps(r), flush=True)


def bench_copy(name, src, work, mpcp, reps, size_mib, target):
    tools = [("mpcp", lambda d: [mpcp, "-a", "--no-progress", src, d]),
             ("cp -a", lambda d: ["cp", "-a", src, d])]
    times = {(t, c): [] for t, _ in tools for c in ("warm", "cold")}
    for rep in range(reps):
        order = tools[rep % 2:] + tools[:rep % 2]
        for cond in (("warm", "cold") if rep % 2 == 0 else ("cold", "warm")):
            for tool, mk in order:
                fs = Fs(work, size_mib)
                try:
                    t = timed(mk(os.path.join(fs.mnt, "dst")), fs.mnt, src,
                              cond == "cold")
                finally:
                    fs.close()
                if t is not None:
                    times[(tool, cond)].append(t)
                log("%s %s %s run %d: %s s" % (name, cond, tool, rep + 1,
                                                "%.3f" % t if t else "failed"))
    for cond in ("warm", "cold"):
        if times[("mpcp", cond)] and times[("cp -a", cond)]:
            row("%s_%s" % (name, cond), "cp -a", times[("mpcp", cond)],
                times[("cp -a", cond)], target)


def build_floor(work):
    """bench/resume_floor.c, built here (None without a C compiler)."""
    exe = os.path.join(work, "resume_floor")
    c = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                     "resume_floor.c")
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc or subprocess.run([cc, "-O2", "-o", exe, c, "-lpthread"],
                                check=False).returncode != 0:
        log("cannot build %s: no floor for copy_resume" % c)
        return None
    return exe


def bench_resume(src, work, mpcp, reps, size_mib, target, base=None):
    # "SRC/." is cp's (and mpcp's) way to say "the contents of SRC", which
    # rsync says "SRC/".
    tools = [("mpcp", lambda d: [mpcp, "-a", "--resume", "--no-progress",
                                 src + "/.", d]),
             ("rsync -a", lambda d: ["rsync", "-a", src + "/", d + "/"])]
    # The floor (unchanged tree only): the least kernel work that decides
    # "unchanged" for every entry, with 2 threads and with 1 (see
    # bench/resume_floor.c). --base-mpcp: another mpcp build, interleaved.
    floor = build_floor(work)
    if floor:
        tools.append(("floor", lambda d: [floor, "-t2", src, d]))
        tools.append(("floor 1 thread", lambda d: [floor, "-t1", src, d]))
    if base:
        tools.append(("mpcp (base)", lambda d: [base, "-a", "--resume",
                                                "--no-progress", src + "/.",
                                                d]))
    nchanged = max(1, scaled(20000) // 100)
    # One destination filesystem, filled once, serves both variants: the
    # unchanged runs leave it as it was, and the 1% variant makes the same
    # files differ again before each of its runs.
    fs = Fs(work, size_mib)
    try:
        dst = os.path.join(fs.mnt, "dst")
        subprocess.run(["cp", "-a", src + "/.", dst], check=True)
        subprocess.run(["sync", "-f", fs.mnt], check=False)
        for variant, n in (("unchanged", 0), ("changed1pct", nchanged)):
            these = [t for t in tools if not n or not t[0].startswith("floor")]
            times = {(t, c): [] for t, _ in these for c in ("warm", "cold")}
            for rep in range(reps):
                k = rep % len(these)
                order = these[k:] + these[:k]
                for cond in (("warm", "cold") if rep % 2 == 0
                             else ("cold", "warm")):
                    for tool, mk in order:
                        if n:
                            damage(dst, n)
                            subprocess.run(["sync", "-f", fs.mnt], check=False)
                        t = timed(mk(dst), fs.mnt, src, cond == "cold")
                        if t is not None:
                            times[(tool, cond)].append(t)
                        log("copy_resume_%s %s %s run %d: %s s" %
                            (variant, cond, tool, rep + 1,
                             "%.3f" % t if t else "failed"))
            for cond in ("warm", "cold"):
                name = "copy_resume_%s_%s" % (variant, cond)
                ours = times[("mpcp", cond)]
                fl = times.get(("floor", cond))
                if ours and times[("rsync -a", cond)]:
                    row(name, "rsync -a", ours, times[("rsync -a", cond)],
                        target, fl)
                for peer in ("floor 1 thread", "mpcp (base)"):
                    if ours and times.get((peer, cond)):
                        row(name, peer, ours, times[(peer, cond)], 0, fl)
    finally:
        fs.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--reps", type=int,
                    default=int(os.environ.get("BENCH_RUNS", "5") or 5))
    ap.add_argument("--keep", action="store_true", help="keep the source trees")
    ap.add_argument("--only", default="", help="comma-separated workloads")
    ap.add_argument("--base-mpcp", default="",
                    help="copy_resume: another mpcp build timed beside")
    ap.add_argument("--rt", action="store_true",
                    default=bool(os.environ.get("BENCH_RT")),
                    help="run every tool under SCHED_FIFO (chrt -f 10): on "
                         "a machine shared with other work, the load then "
                         "does not decide the times")
    a = ap.parse_args()
    if a.rt and shutil.which("chrt"):
        RT.extend(["chrt", "-f", "10"])
    if os.geteuid() != 0:
        log("needs root (loop mounts, drop_caches): skipped")
        return
    mpcp = find_mpcp(a.build)
    work = os.path.join(os.path.abspath(a.build), "bench-copy")
    os.makedirs(work, exist_ok=True)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, lambda s, f: sys.exit(128 + s))
    only = [w for w in a.only.split(",") if w]
    try:
        trees = {"copy_small": make_small, "copy_large": make_large}
        for name, want in (("copy_small", ("copy_small", "copy_resume")),
                           ("copy_large", ("copy_large",))):
            if only and not any(w in only for w in want):
                continue
            src = os.path.join(work, name)
            if not os.path.isdir(src):
                log("making %s" % name)
                shutil.rmtree(src + ".tmp", ignore_errors=True)
                trees[name](src + ".tmp")
                os.rename(src + ".tmp", src)
        small = os.path.join(work, "copy_small")
        large = os.path.join(work, "copy_large")
        if not only or "copy_small" in only:
            bench_copy("copy_small", small, work, mpcp, a.reps, 1024, 1.0)
        if not only or "copy_large" in only:
            bench_copy("copy_large", large, work, mpcp, a.reps,
                       scaled(LARGE_MIB) + 512, 1.0)
        if (not only or "copy_resume" in only) and shutil.which("rsync"):
            bench_resume(small, work, mpcp, a.reps, 1024, 3.0,
                         os.path.abspath(a.base_mpcp) if a.base_mpcp else None)
    finally:
        cleanup_all()
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
