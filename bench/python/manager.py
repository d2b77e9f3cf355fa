"""Peer for family "manager": multiprocessing.Manager() dict and list.

Each workload runs in a child process (as bench_manager does) and reports
operations per second measured inside it. Python's manager does one socket
round trip to its server per operation, so fewer operations are used than
for mproc; rates are comparable.
"""
import os
import sys

# This folder holds peer scripts named like standard modules (queue.py):
# keep it off the import path so multiprocessing.managers gets the real ones.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import time  # noqa: E402


def dict_set(d, n, conn):
    t0 = time.perf_counter()
    for i in range(n):
        d[i] = i
    conn.send(n / (time.perf_counter() - t0))


def dict_get(d, n, conn):
    t0 = time.perf_counter()
    for i in range(n):
        d[i]
    conn.send(n / (time.perf_counter() - t0))


def list_append(l, n, conn):
    t0 = time.perf_counter()
    for i in range(n):
        l.append(i)
    conn.send(n / (time.perf_counter() - t0))


def in_child(ctx, fn, obj, n):
    a, b = ctx.Pipe()
    p = ctx.Process(target=fn, args=(obj, n, b))
    p.start()
    rate = a.recv()
    p.join()
    return rate


def main():
    scale = float(os.environ.get("BENCH_SCALE", "1") or 1)
    n = max(100, int(20000 * scale))
    ctx = mp.get_context("fork")
    with ctx.Manager() as manager:
        d = manager.dict()
        rate = in_child(ctx, dict_set, d, n)
        print(json.dumps({"workload": "manager_dict_set", "peer": "python",
                          "value": rate}), flush=True)
        rate = in_child(ctx, dict_get, d, n)
        print(json.dumps({"workload": "manager_dict_get", "peer": "python",
                          "value": rate}), flush=True)
        l = manager.list()
        rate = in_child(ctx, list_append, l, n)
        print(json.dumps({"workload": "manager_list_append", "peer": "python",
                          "value": rate}), flush=True)


if __name__ == "__main__":
    main()
