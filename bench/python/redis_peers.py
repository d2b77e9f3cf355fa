"""Peers for family "redis".

python:   multiprocessing's remote manager: a BaseManager server process on
          127.0.0.1 (TCP) serving a dict and a queue.Queue, used through
          proxies from this process (dict set/get/update) or from a producer
          and a consumer process (queue stream).
redis-py: the same workloads with python3-redis against a redis-server of
          our own on 127.0.0.1 (HSET/HGET, HSET with a 1000-field mapping,
          RPUSH/BLPOP one message per call), for information.

Each figure is the median of 5 runs, measured as bench_redis measures its
own (ops/s, microseconds per update, messages/s at the consumer).
"""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import queue  # noqa: E402
import resource  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from multiprocessing.managers import BaseManager, DictProxy  # noqa: E402

RUNS = 5
MSG = b"m" * 64
_dict = {}
_queue = queue.Queue()


def get_dict():
    return _dict


def get_queue():
    return _queue


class Remote(BaseManager):
    pass


Remote.register("get_dict", callable=get_dict, proxytype=DictProxy)
Remote.register("get_queue", callable=get_queue)


def emit(workload, peer, value):
    print(json.dumps({"workload": workload, "peer": peer, "value": value}),
          flush=True)


def scaled(n):
    s = float(os.environ.get("BENCH_SCALE", "1") or 1)
    return max(50, int(n * s))


def rate(fn, n):
    t0 = time.perf_counter()
    fn(n)
    return n / (time.perf_counter() - t0)


def cpu_us(server_pid):
    """CPU time so far of this process and the manager's server process, in
    microseconds (as bench_redis counts its own and redis-server's)."""
    u = resource.getrusage(resource.RUSAGE_SELF)
    us = (u.ru_utime + u.ru_stime) * 1e6
    task = "/proc/%d/task" % server_pid
    try:
        for t in os.listdir(task):  # every thread: run time in ns
            with open("%s/%s/schedstat" % (task, t)) as f:
                us += int(f.read().split()[0]) / 1e3
    except OSError:
        pass
    return us


def connect(address):
    m = Remote(address=address, authkey=b"bench")
    m.connect()
    return m


def producer(address, n, kind):
    if kind == "python":
        q = connect(address).get_queue()
        for _ in range(n):
            q.put(MSG)
    else:
        import redis
        r = redis.Redis(host="127.0.0.1", port=address)
        for _ in range(n):
            r.rpush("q", MSG)


def stream(address, n, kind):
    p = mp.get_context("fork").Process(target=producer, args=(address, n, kind))
    if kind == "python":
        q = connect(address).get_queue()
        get = q.get
    else:
        import redis
        r = redis.Redis(host="127.0.0.1", port=address)
        get = lambda: r.blpop("q")  # noqa: E731
    p.start()
    get()
    t0 = time.perf_counter()
    for _ in range(n - 1):
        get()
    value = (n - 1) / (time.perf_counter() - t0)
    p.join()
    return value


def python_peer():
    ctx = mp.get_context("fork")
    server = Remote(address=("127.0.0.1", 0), authkey=b"bench", ctx=ctx)
    server.start()
    address = server.address
    d = connect(address).get_dict()
    n = scaled(5000)

    def dset(k):
        for i in range(k):
            d[i] = i

    def dget(k):
        for i in range(k):
            d[i]

    spid = server._process.pid

    def timed(fn, k):
        """(rate, CPU microseconds per call on both ends)"""
        c0 = cpu_us(spid)
        v = rate(fn, k)
        return v, (cpu_us(spid) - c0) / k

    src = {i: i for i in range(1000)}
    calls = scaled(200)

    def upd(k):
        for _ in range(k):
            d.update(src)

    for name, fn, k in (("redis_dict_set", dset, n), ("redis_dict_get", dget, n),
                        ("redis_dict_update_1000", upd, calls)):
        runs = [timed(fn, k) for _ in range(RUNS)]
        v = statistics.median(r[0] for r in runs)
        emit(name, "python", 1e6 / v if "update" in name else v)
        emit(name + "_cpu", "python", statistics.median(r[1] for r in runs))
    v = statistics.median(stream(address, scaled(5000), "python")
                          for _ in range(RUNS))
    emit("redis_queue_stream_64B", "python", v)
    emit("redis_queue_stream_64B_unbatched", "python", v)
    server.shutdown()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def redis_py_peer():
    try:
        import redis
    except ImportError:
        return
    port = free_port()
    srv = subprocess.Popen(["redis-server", "--port", str(port), "--bind",
                            "127.0.0.1", "--save", "", "--appendonly", "no"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r = redis.Redis(host="127.0.0.1", port=port)
        for _ in range(500):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.01)
        n = scaled(20000)

        def hset(k):
            for i in range(k):
                r.hset("h", i, i)

        def hget(k):
            for i in range(k):
                r.hget("h", i)

        emit("redis_dict_set", "redis-py",
             statistics.median(rate(hset, n) for _ in range(RUNS)))
        emit("redis_dict_get", "redis-py",
             statistics.median(rate(hget, n) for _ in range(RUNS)))
        src = {i: i for i in range(1000)}
        calls = scaled(50)

        def upd():
            t0 = time.perf_counter()
            for _ in range(calls):
                r.hset("u", mapping=src)
            return (time.perf_counter() - t0) * 1e6 / calls

        emit("redis_dict_update_1000", "redis-py",
             statistics.median(upd() for _ in range(RUNS)))
        v = statistics.median(stream(port, scaled(10000), "redis-py")
                              for _ in range(RUNS))
        emit("redis_queue_stream_64B_unbatched", "redis-py", v)
    finally:
        srv.kill()
        srv.wait()


def main():
    python_peer()
    redis_py_peer()


if __name__ == "__main__":
    main()
