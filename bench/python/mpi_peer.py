"""The mpi family's peer: mpi4py.futures doing what bench/bench_mpi.c does.
Run as `mpirun -n 3 python3 -m mpi4py.futures mpi_peer.py [workload]`
(1 root + 2 worker ranks, as ours). Prints one JSON line per workload, the
best of 3 rounds, as bench_mpi.c."""
import json, os, sys, time
from mpi4py.futures import MPIPoolExecutor


def echo(x):
    return x


def square(x):
    return x * x


def scaled(n):
    return max(1, int(n * float(os.environ.get("BENCH_SCALE", "1") or 1)))


def emit(workload, unit, value):
    print(json.dumps({"mode": "mpi4py", "workload": workload, "unit": unit,
                      "value": value}), flush=True)


def main():
    sel = sys.argv[1] if len(sys.argv) > 1 else None
    with MPIPoolExecutor() as ex:
        from mpi4py import MPI
        workers = MPI.COMM_WORLD.Get_size() - 1  # the other ranks serve
        if sel in (None, "mpi_pool_apply_async_pipelined"):
            n = scaled(50000)
            best = 0
            for _ in range(3):
                t0 = time.perf_counter()
                fs = [ex.submit(echo, i) for i in range(n)]
                for f in fs:
                    f.result()
                best = max(best, n / (time.perf_counter() - t0))
            emit("mpi_pool_apply_async_pipelined", "tasks/s", best)
        if sel in (None, "mpi_pool_map_1M"):
            data = list(range(scaled(1000000)))
            # The same chunks as ours: ceil(n / (4 * workers)).
            cs = -(-len(data) // (4 * workers))
            best = 0
            for _ in range(3):
                t0 = time.perf_counter()
                out = list(ex.map(square, data, chunksize=cs))
                best = max(best, len(data) / (time.perf_counter() - t0))
            assert out[-1] == data[-1] ** 2
            emit("mpi_pool_map_1M", "items/s", best)


if __name__ == "__main__":
    main()
