#!/usr/bin/env python3
"""Benchmark family `mpi`: the pool on MPI ranks against mpi4py.futures
(MPIPoolExecutor) and against our local process pool, same worker count (2
worker ranks or processes, plus the root). Each program runs 3 times; the
median of the runs counts (each run reports the best of 3 rounds).

mpi_copy_small: `mpirun -n 3 mpcp --mpi -a` (the root and 2 worker ranks)
copying 20 000 files of 4 KiB in 100 folders, against local `mpcp -a` (2
workers on this 2-CPU machine) and `cp -a`, each run onto a fresh
loop-mounted ext4 filesystem, warm source, `sync -f` inside the time,
interleaved (the order rotates), median of BENCH_RUNS (default 5) runs; the
way bench/copy.py measures copy_small (its code is reused). Also, as
information, the same MPI run with the root walking alone
(MPCP_MPI_ROOT_WALK=1). On one host this is informative: the design must
not make the MPI run more than 1.5x slower than local mpcp (ratio >= 0.67),
judged on the copy phase as mpcp times it (--json "seconds": Open MPI's
start-up, about 2-3 s here, is not the design's); the whole runs, start-up
and sync included, are reported too.
Needs root (loop mounts); skipped otherwise.

Prints whole rows for bench/run.py."""
import argparse, importlib.util, json, os, shutil, statistics, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
RUNS = 3
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1",
           OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_btl_vader_single_copy_mechanism="none",
           OMPI_MCA_rmaps_base_oversubscribe="1")


def log(msg):
    print("  mpi: " + msg, file=sys.stderr, flush=True)


def run(cmd):
    log(" ".join(cmd))
    try:
        out = subprocess.run(cmd, stdout=subprocess.PIPE, env=ENV, timeout=1800,
                             check=False).stdout.decode()
    except subprocess.TimeoutExpired:
        log("timed out")
        return []
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")]


def medians(cmd):
    vals = {}
    units = {}
    for _ in range(RUNS):
        for r in run(cmd):
            vals.setdefault(r["workload"], []).append(r["value"])
            units[r["workload"]] = r["unit"]
    return {w: statistics.median(v) for w, v in vals.items()}, units


def copy_bench():
    """bench/copy.py as a module (its name would shadow the stdlib's)."""
    spec = importlib.util.spec_from_file_location(
        "mproc_bench_copy", os.path.join(HERE, "copy.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def bench_copy_small(build, mpirun, reps):
    if os.geteuid() != 0:
        log("mpi_copy_small needs root (loop mounts): skipped")
        return
    cb = copy_bench()
    mpcp = cb.find_mpcp(build)
    # Open MPI's settings for root and containers, for the runs below.
    os.environ.update({k: v for k, v in ENV.items() if k.startswith("OMPI_")})
    work = os.path.join(os.path.abspath(build), "bench-mpi-copy")
    os.makedirs(work, exist_ok=True)
    src = os.path.join(work, "copy_small")
    try:
        if not os.path.isdir(src):
            log("making copy_small")
            shutil.rmtree(src + ".tmp", ignore_errors=True)
            cb.make_small(src + ".tmp")
            os.rename(src + ".tmp", src)
        mpi = [mpirun, "--oversubscribe", "-n", "3", mpcp, "--mpi", "-a",
               "--no-progress", "--json", src]
        tools = [("mpcp --mpi", lambda d: mpi + [d]),
                 ("mpcp", lambda d: [mpcp, "-a", "--no-progress", "--json",
                                     src, d]),
                 ("cp -a", lambda d: ["cp", "-a", src, d]),
                 ("mpcp --mpi, root walks alone",
                  lambda d: ["env", "MPCP_MPI_ROOT_WALK=1"] + mpi + [d])]
        times = {t: [] for t, _ in tools}
        inner = {t: [] for t, _ in tools}  # mpcp's own "seconds"
        for rep in range(reps):
            k = rep % len(tools)
            for tool, mk in tools[k:] + tools[:k]:
                fs = cb.Fs(work, 1024)
                try:
                    cb.warm(src)
                    t0 = time.perf_counter()
                    r = subprocess.run(mk(os.path.join(fs.mnt, "dst")),
                                       stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE)
                    subprocess.run(["sync", "-f", fs.mnt], check=False)
                    t = time.perf_counter() - t0
                finally:
                    fs.close()
                if r.returncode != 0:
                    log("%s failed (%d): %s" % (tool, r.returncode,
                                                r.stderr.decode()[-500:]))
                    continue
                times[tool].append(t)
                for line in r.stdout.decode().splitlines():
                    if line.startswith("{"):
                        inner[tool].append(json.loads(line)["seconds"])
                log("mpi_copy_small %s run %d: %.3f s (mpcp: %s)" %
                    (tool, rep + 1, t,
                     inner[tool][-1] if inner[tool] else "-"))
        # Whole runs, Open MPI's start-up included, with sync; then the copy
        # alone as mpcp times it (from the end of MPI's start-up to the end
        # of the copy, before the ranks finalize; without the sync).
        for wl, tab in (("mpi_copy_small", times),
                        ("mpi_copy_small_copy_phase", inner)):
            ours = tab["mpcp --mpi"]
            for tool, target in (("mpcp", 0.67), ("cp -a", 0),
                                 ("mpcp --mpi, root walks alone", 0)):
                if not ours or not tab[tool]:
                    continue
                print(json.dumps({
                    "workload": wl, "peer": tool, "unit": "s",
                    "mproc": round(statistics.median(ours), 4),
                    "peer_value": round(statistics.median(tab[tool]), 4),
                    "mproc_runs": [round(t, 4) for t in ours],
                    "peer_runs": [round(t, 4) for t in tab[tool]],
                    "floor": None, "higher_is_better": False,
                    "target": target if wl.endswith("phase") else 0}),
                    flush=True)
    finally:
        cb.cleanup_all()
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--only", default="",
                    help="pool or copy (default: both)")
    ap.add_argument("--reps", type=int,
                    default=int(os.environ.get("BENCH_RUNS", "5") or 5))
    a = ap.parse_args()
    mpirun = shutil.which("mpirun")
    if a.only in ("", "copy") and mpirun:
        bench_copy_small(a.build, mpirun, a.reps)
    if a.only == "copy":
        return
    exe = os.path.join(a.build, "bench", "bench_mpi")
    if not mpirun or not os.path.exists(exe):
        log("no mpirun or no %s: MPI not built" % exe)
        return
    ours, units = medians([mpirun, "--oversubscribe", "-n", "3", exe, "mpi"])
    local, _ = medians([exe, "local"])
    # The system python: python3-mpi4py is a Debian package.
    py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else (shutil.which("python3") or sys.executable)
    peer, _ = medians([mpirun, "--oversubscribe", "-n", "3", py, "-m",
                       "mpi4py.futures", os.path.join(HERE, "python", "mpi_peer.py")])
    targets = {"mpi_pool_apply_async_pipelined": 20, "mpi_pool_map_1M": 10}
    for w in sorted(ours):
        rows = [("mpi4py.futures", peer.get(w), targets.get(w, 0)),
                ("mproc local pool", local.get(w), 0)]
        for name, pv, target in rows:
            if pv is None:
                continue
            print(json.dumps({"workload": w, "peer": name, "unit": units[w],
                              "mproc": round(ours[w], 1), "peer_value": round(pv, 1),
                              "floor": None, "higher_is_better": True,
                              "target": target}), flush=True)


if __name__ == "__main__":
    main()
