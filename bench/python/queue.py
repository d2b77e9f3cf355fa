"""Family `queue`, Python peer: the same streams through multiprocessing.Queue
(put/get of bytes objects; a batch is a list of 64 distinct bytes objects,
which is how a Python program batches: one list of 64 references to the same
object would be pickled as one message and 63 back-references). One run of
each workload per invocation: bench/run.py repeats and interleaves them."""
import os, sys

# This file is named like the stdlib module multiprocessing imports: keep its
# own directory off the import path.
sys.path = [p for p in sys.path
            if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import json, multiprocessing as mp, time  # noqa: E402


def scaled(n):
    try:
        f = float(os.environ.get("BENCH_SCALE", "1"))
    except ValueError:
        f = 1.0
    return max(1, int(n * (f if f > 0 else 1.0)))


def consumer(q, n, batch):
    got = 0
    while got < n:
        m = q.get()
        if m is None:
            return
        got += len(m) if batch else 1


def producer(q, n, size, batch):
    msg = b"x" * size
    if batch:
        chunk = [msg[:-1] + bytes([i]) for i in range(64)]
        for _ in range(n // 64):
            q.put(chunk)
    else:
        for _ in range(n):
            q.put(msg)


def run(producers, consumers, n, size, batch=False):
    q = mp.Queue()
    cs = [mp.Process(target=consumer, args=(q, n if consumers == 1 else 2 * n, batch))
          for _ in range(consumers)]
    for c in cs:
        c.start()
    t0 = time.perf_counter()
    ps = [mp.Process(target=producer, args=(q, n // producers, size, batch))
          for _ in range(producers)]
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    if consumers > 1:
        for _ in cs:
            q.put(None)
    for c in cs:
        c.join()
    return n / (time.perf_counter() - t0)


def echo(there, back, n):
    for _ in range(n):
        back.put(there.get())


def pingpong(n, size):
    """Microseconds per round trip of one message, there and back."""
    there, back = mp.Queue(), mp.Queue()
    p = mp.Process(target=echo, args=(there, back, n))
    p.start()
    msg = b"x" * size
    t0 = time.perf_counter()
    for _ in range(n):
        there.put(msg)
        back.get()
    us = (time.perf_counter() - t0) * 1e6 / n
    p.join()
    return us


def emit(workload, value):
    print(json.dumps({"workload": workload, "peer": "python", "value": value}),
          flush=True)


def main():
    sel = sys.argv[1] if len(sys.argv) > 1 else None
    # Python moves a few hundred thousand messages a second: fewer messages
    # give the same rate in a bearable time.
    n64, n4k = scaled(100000), scaled(50000)
    if sel in (None, "queue_stream_64B"):
        emit("queue_stream_64B", run(1, 1, n64, 64))
    if sel in (None, "queue_stream_4KB"):
        v = run(1, 1, n4k, 4096)
        emit("queue_stream_4KB", v)
        emit("queue_stream_4KB_MBps", v * 4096 / 1e6)
    if sel in (None, "queue_mpmc_64B"):
        emit("queue_mpmc_64B", run(2, 2, n64, 64))
    if sel in (None, "queue_batch_64B"):
        emit("queue_batch_64B", run(1, 1, n64 * 4, 64, batch=True))
    if sel in (None, "queue_pingpong_64B"):
        emit("queue_pingpong_64B", pingpong(scaled(10000), 64))


if __name__ == "__main__":
    mp.set_start_method("fork")
    main()
