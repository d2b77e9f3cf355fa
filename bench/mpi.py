#!/usr/bin/env python3
"""Benchmark family `mpi`: the pool on MPI ranks against mpi4py.futures
(MPIPoolExecutor) and against our local process pool, same worker count (2
worker ranks or processes, plus the root). Each program runs 3 times; the
median of the runs counts (each run reports the best of 3 rounds).
Prints whole rows for bench/run.py."""
import argparse, json, os, shutil, statistics, subprocess, sys

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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    a = ap.parse_args()
    mpirun = shutil.which("mpirun")
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
