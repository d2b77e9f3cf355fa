"""Python peers for bench/bench_process_subprocess.c (family `process`)."""
import json
import os
import statistics
import subprocess
import time

SCALE = float(os.environ.get("BENCH_SCALE", "1") or 1)


def scaled(n):
    return max(1, int(n * SCALE))


def emit(workload, value):
    print(json.dumps({"workload": workload, "peer": "python", "value": value}),
          flush=True)


def run_true():
    for _ in range(20):
        subprocess.run(["/bin/true"])
    times = []
    for _ in range(scaled(500)):
        t0 = time.perf_counter()
        subprocess.run(["/bin/true"])
        times.append((time.perf_counter() - t0) * 1e6)
    emit("subprocess_run_true", statistics.median(times))


def cat_64mb():
    size = 64 << 20
    data = bytes(range(256)) * (size // 256)
    rates = []
    for _ in range(scaled(9)):
        t0 = time.perf_counter()
        r = subprocess.run(["cat"], input=data, capture_output=True)
        s = time.perf_counter() - t0
        assert len(r.stdout) == size
        rates.append(size / 1e6 / s)
    # Best of several runs, as the C side: other load only slows a run.
    emit("subprocess_cat_64MB", max(rates))


if __name__ == "__main__":
    run_true()
    cat_64mb()
