"""Peer for family "process": multiprocessing.Process with fork."""
import json
import multiprocessing as mp
import os
import time


def empty():
    pass


def per_start_join(ctx, n):
    t0 = time.perf_counter()
    for _ in range(n):
        p = ctx.Process(target=empty)
        p.start()
        p.join()
    return (time.perf_counter() - t0) * 1e6 / n


def main():
    scale = float(os.environ.get("BENCH_SCALE", "1") or 1)
    n = max(1, int(500 * scale))
    ctx = mp.get_context("fork")
    per_start_join(ctx, max(1, n // 10))
    print(json.dumps({"workload": "process_start_join", "peer": "python",
                      "value": per_start_join(ctx, n)}), flush=True)
    fs = mp.get_context("forkserver")
    per_start_join(fs, max(1, n // 10))
    print(json.dumps({"workload": "process_start_join_forkserver",
                      "peer": "python", "value": per_start_join(fs, n)}),
          flush=True)


if __name__ == "__main__":
    main()
