"""Peer for bench family `pool`: Python's multiprocessing Pool (fork) and
ThreadPool doing what bench/bench_pool.c does, 2 workers."""
import os, sys

# This directory holds peer scripts named like stdlib modules (queue.py):
# keep it off the import path so multiprocessing gets the real ones.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]

import json, multiprocessing as mp, time  # noqa: E402
from multiprocessing.pool import ThreadPool  # noqa: E402

# Timed rounds per invocation: bench/run.py repeats the invocations,
# interleaved with bench_pool's, and takes the median.
ROUNDS = 1
SCALE = float(os.environ.get("BENCH_SCALE", "1") or 1) or 1.0


def scaled(n):
    return max(1, int(n * SCALE))


def emit(workload, value):
    print(json.dumps({"workload": workload, "peer": "python", "value": value}),
          flush=True)


def echo(x):
    return x


def square(x):
    return x * x


def sum_squares(r):
    lo, hi = r
    s = 0
    for i in range(lo, hi):
        s += i * i
    return s


def selected(name):
    return len(sys.argv) < 2 or sys.argv[1] == name


def main():
    ctx = mp.get_context("fork")
    if selected("pool_apply_async_pipelined"):
        n = scaled(50000)
        with ctx.Pool(2) as p:
            best = 0
            for _ in range(ROUNDS):
                t0 = time.perf_counter()
                rs = [p.apply_async(echo, (i,)) for i in range(n)]
                for r in rs:
                    r.get()
                best = max(best, n / (time.perf_counter() - t0))
            emit("pool_apply_async_pipelined", best)
    if selected("pool_apply_sync_rtt"):
        n = scaled(1000)
        with ctx.Pool(2) as p:
            for i in range(200):
                p.apply(echo, (i,))
            best = None
            for _ in range(ROUNDS):
                t0 = time.perf_counter()
                for i in range(n):
                    p.apply(echo, (i,))
                us = (time.perf_counter() - t0) * 1e6 / n
                best = us if best is None else min(best, us)
            emit("pool_apply_sync_rtt", best)
    data = list(range(scaled(1000000)))
    if selected("pool_map_1M"):
        with ctx.Pool(2) as p:
            best = 0
            for _ in range(ROUNDS):
                t0 = time.perf_counter()
                p.map(square, data)
                best = max(best, len(data) / (time.perf_counter() - t0))
            emit("pool_map_1M", best)
    if selected("pool_imap_chunksize1"):
        n = scaled(50000)
        with ctx.Pool(2) as p:
            best = 0
            for _ in range(ROUNDS):
                t0 = time.perf_counter()
                for _ in p.imap(square, range(n), chunksize=1):
                    pass
                best = max(best, n / (time.perf_counter() - t0))
            emit("pool_imap_chunksize1", best)
    if selected("threadpool_map_1M"):
        with ThreadPool(2) as p:
            best = 0
            for _ in range(ROUNDS):
                t0 = time.perf_counter()
                p.map(square, data)
                best = max(best, len(data) / (time.perf_counter() - t0))
            emit("threadpool_map_1M", best)
    if selected("sum_of_squares_10M"):
        # One timed map per worker count, the pool started before the clock;
        # efficiency: speedup of two workers over one, divided by two.
        n = scaled(10000000)
        parts = [(n * i // 16, n * (i + 1) // 16) for i in range(16)]
        times = []
        for workers in (1, 2):
            with ctx.Pool(workers) as p:
                t0 = time.perf_counter()
                p.map(sum_squares, parts, chunksize=1)
                times.append(time.perf_counter() - t0)
        emit("sum_of_squares_10M", times[0] / times[1] / 2)


if __name__ == "__main__":
    main()
