/* Family `queue`: messages through the shared-memory queue between
 * processes, beside the same stream through our own pipe (mp_conn), the
 * way a pipe-based queue moves them. One run of each workload per
 * invocation: bench/run.py repeats the runs, interleaved with the peer's,
 * and reports their median and spread. The time covers starting the
 * producers up to the last message taken, as in bench/python/queue.py. */
#include <signal.h>
#include <sys/prctl.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "mproc.h"

static void die(const char *what, int r) {
  fprintf(stderr, "bench_queue: %s: %s\n", what, mp_strerror(r));
  exit(1);
}

static void wait_child(pid_t pid) {
  int st;
  while (waitpid(pid, &st, 0) < 0) {
  }
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    fprintf(stderr, "bench_queue: child failed\n");
    exit(1);
  }
}

/* In a child: do not outlive the benchmark if it fails. */
static void child_setup(void) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
}

static mp_queue_t *new_queue(void) {
  mp_queue_t *q;
  int r = mp_queue_create(&q, NULL);
  if (r < 0)
    die("mp_queue_create", r);
  return q;
}

/* Consumer: take `n` messages (one at a time or in batches of `batch`). */
static void consume(mp_queue_t *q, long n, size_t size, int batch) {
  static unsigned char buf[1 << 20];
  struct iovec iov[64];
  long got = 0;
  while (got < n) {
    if (batch > 1) {
      int r =
          mp_queue_get_many(q, buf, sizeof buf, iov, (size_t)batch, MP_FOREVER);
      if (r < 0)
        _exit(r == MP_ECLOSED ? 0 : 1);
      got += r;
    } else {
      size_t len;
      int r = mp_queue_get_into(q, buf, sizeof buf, &len, MP_FOREVER);
      if (r < 0)
        _exit(r == MP_ECLOSED ? 0 : 1);
      if (len != size)
        _exit(2);
      got++;
    }
  }
}

static void produce(mp_queue_t *q, long n, size_t size, int batch) {
  static unsigned char msg[64 * 4096];
  struct iovec iov[64];
  memset(msg, 'x', sizeof msg);
  for (int i = 0; i < 64; i++) {
    iov[i].iov_base = msg + (size_t)i * size;
    iov[i].iov_len = size;
  }
  for (long i = 0; i < n;) {
    if (batch > 1) {
      long k = n - i < batch ? n - i : batch;
      int r = mp_queue_put_many(q, iov, (size_t)k, MP_FOREVER);
      if (r < 0)
        die("mp_queue_put_many", r);
      i += r;
    } else {
      int r = mp_queue_put(q, msg, size, MP_FOREVER);
      if (r < 0)
        die("mp_queue_put", r);
      i++;
    }
  }
}

/* producers x consumers processes; returns messages per second. */
static double queue_run(int producers, int consumers, long n, size_t size,
                        int batch) {
  mp_queue_t *q = new_queue();
  pid_t pids[8];
  for (int c = 0; c < consumers; c++) {
    if ((pids[c] = fork()) == 0) {
      child_setup();
      consume(q, consumers == 1 ? n : n * 2, size, batch);
      _exit(0);
    }
  }
  uint64_t t0 = bench_now_ns();
  for (int p = 0; p < producers; p++) {
    if ((pids[consumers + p] = fork()) == 0) {
      child_setup();
      produce(q, n / producers, size, batch);
      _exit(0);
    }
  }
  for (int p = 0; p < producers; p++)
    wait_child(pids[consumers + p]);
  if (consumers > 1)
    mp_queue_close(q); /* consumers stop once drained */
  for (int c = 0; c < consumers; c++)
    wait_child(pids[c]);
  double s = (double)(bench_now_ns() - t0) / 1e9;
  mp_queue_destroy(q);
  return (double)n / s;
}

/* Round trips: a message to a child through one queue, back through
 * another, one at a time. Returns microseconds per round trip. */
static double pingpong_run(long n, size_t size) {
  mp_queue_t *there = new_queue(), *back = new_queue();
  pid_t pid = fork();
  if (pid == 0) {
    child_setup();
    unsigned char buf[4096];
    for (long i = 0; i < n; i++) {
      size_t len = 0;
      if (mp_queue_get_into(there, buf, sizeof buf, &len, MP_FOREVER) != 0 ||
          mp_queue_put(back, buf, len, MP_FOREVER) != 0)
        _exit(1);
    }
    _exit(0);
  }
  unsigned char msg[4096], buf[4096];
  memset(msg, 'x', size);
  uint64_t t0 = bench_now_ns();
  for (long i = 0; i < n; i++) {
    size_t len = 0;
    int r = mp_queue_put(there, msg, size, MP_FOREVER);
    if (r < 0 || (r = mp_queue_get_into(back, buf, sizeof buf, &len,
                                        MP_FOREVER)) < 0)
      die("ping-pong", r);
    if (len != size)
      die("ping-pong", MP_EPROTO);
  }
  double us = (double)(bench_now_ns() - t0) / 1e3 / (double)n;
  wait_child(pid);
  mp_queue_destroy(there);
  mp_queue_destroy(back);
  return us;
}

/* ---- the same stream through our pipe ---------------------------------- */

/* One message per send, or (batch > 1) `batch` messages packed into one, as
 * a pipe user would batch. Returns messages per second. */
static double pipe_run(long n, size_t size, int batch) {
  mp_conn_t *rx, *tx;
  int r = mp_pipe(&rx, &tx, false);
  if (r < 0)
    die("mp_pipe", r);
  size_t chunk = size * (size_t)(batch > 1 ? batch : 1);
  pid_t pid = fork();
  if (pid == 0) {
    child_setup();
    mp_conn_destroy(tx);
    static unsigned char buf[64 * 4096];
    long got = 0;
    while (got < n) {
      size_t len;
      if (mp_conn_recv_into(rx, buf, sizeof buf, &len) != 0 || len % size)
        _exit(1);
      got += (long)(len / size);
    }
    _exit(0);
  }
  mp_conn_destroy(rx);
  static unsigned char msg[64 * 4096];
  memset(msg, 'x', sizeof msg);
  uint64_t t0 = bench_now_ns();
  for (long i = 0; i < n;) {
    long k = (long)(chunk / size);
    if (k > n - i)
      k = n - i;
    if ((r = mp_conn_send(tx, msg, (size_t)k * size)) < 0)
      die("mp_conn_send", r);
    i += k;
  }
  wait_child(pid);
  double s = (double)(bench_now_ns() - t0) / 1e9;
  mp_conn_destroy(tx);
  return (double)n / s;
}

int main(int argc, char **argv) {
  long n64 = bench_scaled(2000000), n4k = bench_scaled(200000);
  /* A pipe moves one message per system call: fewer give the same rate. */
  long npipe = n64 / 20 > 0 ? n64 / 20 : 1;
  if (bench_selected(argc, argv, "queue_stream_64B")) {
    bench_emit("queue_stream_64B", "msgs/s", queue_run(1, 1, n64, 64, 1), -1,
               true, 50, 0);
    bench_emit_peer("queue_stream_64B", "mproc pipe", pipe_run(npipe, 64, 1));
  }
  if (bench_selected(argc, argv, "queue_stream_4KB")) {
    double q = queue_run(1, 1, n4k, 4096, 1), p = pipe_run(n4k, 4096, 1);
    bench_emit("queue_stream_4KB", "msgs/s", q, -1, true, 5, 0);
    bench_emit_peer("queue_stream_4KB", "mproc pipe", p);
    bench_emit("queue_stream_4KB_MBps", "MB/s", q * 4096 / 1e6, -1, true, 0, 0);
    bench_emit_peer("queue_stream_4KB_MBps", "mproc pipe", p * 4096 / 1e6);
  }
  if (bench_selected(argc, argv, "queue_mpmc_64B"))
    bench_emit("queue_mpmc_64B", "msgs/s", queue_run(2, 2, n64, 64, 1), -1,
               true, 30, 0);
  if (bench_selected(argc, argv, "queue_batch_64B")) {
    bench_emit("queue_batch_64B", "msgs/s", queue_run(1, 1, n64, 64, 64), -1,
               true, 5, 0);
    bench_emit_peer("queue_batch_64B", "mproc pipe", pipe_run(n64, 64, 64));
  }
  if (bench_selected(argc, argv, "queue_pingpong_64B"))
    bench_emit("queue_pingpong_64B", "us/roundtrip",
               pingpong_run(bench_scaled(100000), 64), -1, false, 0, 0);
  return 0;
}
