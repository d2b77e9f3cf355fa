"""Python peers of the lock family (multiprocessing), run with /usr/bin/python3.

lock_contended: 2 processes each increment a shared counter under mp.Lock
(mp.Value with lock=False), increments per second. lock_uncontended: ns per
acquire+release of mp.Lock. event_pingpong: us per round trip through two
mp.Event between two processes."""
import json
import multiprocessing as mp
import os
import time

SCALE = float(os.environ.get("BENCH_SCALE", "1") or 1)


def scaled(n):
    return max(1, int(n * SCALE))


def emit(workload, value):
    print(json.dumps({"workload": workload, "peer": "python", "value": value}),
          flush=True)


def incr(lock, counter, n):
    for _ in range(n):
        lock.acquire()
        counter.value += 1
        lock.release()


def contended(n):
    lock = mp.Lock()
    counter = mp.Value("l", 0, lock=False)
    procs = [mp.Process(target=incr, args=(lock, counter, n)) for _ in range(2)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    s = time.perf_counter() - t0
    assert counter.value == 2 * n
    return 2 * n / s


def uncontended(n):
    lock = mp.Lock()
    acquire, release = lock.acquire, lock.release
    t0 = time.perf_counter()
    for _ in range(n):
        acquire()
        release()
    return (time.perf_counter() - t0) * 1e9 / n


def pong(ping, pong_ev, n):
    for _ in range(n):
        ping.wait()
        ping.clear()
        pong_ev.set()


def pingpong(n):
    ping, pong_ev = mp.Event(), mp.Event()
    p = mp.Process(target=pong, args=(ping, pong_ev, n))
    p.start()
    t0 = time.perf_counter()
    for _ in range(n):
        ping.set()
        pong_ev.wait()
        pong_ev.clear()
    us = (time.perf_counter() - t0) * 1e6 / n
    p.join()
    return us


if __name__ == "__main__":
    mp.set_start_method("fork")
    # Rates and per-operation times do not depend on the count: Python runs
    # fewer iterations to keep the family short.
    emit("lock_contended", contended(scaled(1000000)))
    emit("lock_uncontended", uncontended(scaled(1000000)))
    emit("event_pingpong", pingpong(scaled(20000)))
