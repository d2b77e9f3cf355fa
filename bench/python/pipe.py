"""Peer for family "pipe": multiprocessing.Pipe send_bytes/recv_bytes."""
import json
import multiprocessing as mp
import os
import time

MSG = b"x" * 64


def echo(conn, n):
    for _ in range(n):
        conn.send_bytes(conn.recv_bytes())


def roundtrip_us(n):
    a, b = mp.Pipe()
    p = mp.get_context("fork").Process(target=echo, args=(b, n))
    p.start()
    b.close()
    t0 = time.perf_counter()
    for _ in range(n):
        a.send_bytes(MSG)
        a.recv_bytes()
    us = (time.perf_counter() - t0) * 1e6 / n
    p.join()
    a.close()
    return us


def produce(conn, n):
    for _ in range(n):
        conn.send_bytes(MSG)


def stream_rate(n):
    a, b = mp.Pipe()
    p = mp.get_context("fork").Process(target=produce, args=(b, n))
    p.start()
    b.close()
    t0 = time.perf_counter()
    for _ in range(n):
        a.recv_bytes()
    rate = n / (time.perf_counter() - t0)
    p.join()
    a.close()
    return rate


def main():
    scale = float(os.environ.get("BENCH_SCALE", "1") or 1)
    n = max(1, int(50000 * scale))
    roundtrip_us(max(1, n // 10))
    print(json.dumps({"workload": "pipe_roundtrip_64B", "peer": "python",
                      "value": roundtrip_us(n)}), flush=True)
    print(json.dumps({"workload": "pipe_stream_64B", "peer": "python",
                      "value": stream_rate(max(1, int(1000000 * scale)))}),
          flush=True)


if __name__ == "__main__":
    main()
