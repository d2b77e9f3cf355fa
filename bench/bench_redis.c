/* Family "redis": the manager's dict and queue on Redis, one client, against
 * a raw hiredis loop on the same socket (the floor). The program runs its
 * own redis-server on 127.0.0.1 (TCP, as the Python peers' manager server
 * listens) with persistence off. Each figure is the median of 5 runs. */
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "mproc.h"

#define RUNS 5

static pid_t server;
static int port;
static char addr[64];

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  socklen_t len = sizeof a;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
      getsockname(fd, (struct sockaddr *)&a, &len) < 0)
    return -1;
  close(fd);
  return ntohs(a.sin_port);
}

static int start_server(void) {
  port = free_port();
  char ps[16];
  snprintf(ps, sizeof ps, "%d", port);
  server = fork();
  if (server == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int fd = open("/dev/null", O_WRONLY);
    dup2(fd, 1);
    dup2(fd, 2);
    execlp("redis-server", "redis-server", "--port", ps, "--bind", "127.0.0.1",
           "--save", "", "--appendonly", "no", (char *)NULL);
    _exit(127);
  }
  for (int i = 0; i < 1000; i++) {
    redisContext *c = redisConnect("127.0.0.1", port);
    bool ok = c && !c->err;
    if (c)
      redisFree(c);
    if (ok) {
      snprintf(addr, sizeof addr, "redis://127.0.0.1:%d", port);
      return 0;
    }
    usleep(10000);
  }
  return -1;
}

/* CPU time so far of this process and the server, in microseconds: the
 * cost of a call on both ends, which the machine's load does not change
 * much (unlike the time a round trip waits to be scheduled). */
static double cpu_us(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  double us = (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e6 +
              (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
  /* The server's threads: run time in ns (schedstat, not 10 ms ticks). */
  char path[96];
  snprintf(path, sizeof path, "/proc/%d/task", (int)server);
  DIR *dir = opendir(path);
  struct dirent *de;
  while (dir && (de = readdir(dir))) {
    if (de->d_name[0] == '.')
      continue;
    snprintf(path, sizeof path, "/proc/%d/task/%.16s/schedstat", (int)server,
             de->d_name);
    FILE *f = fopen(path, "r");
    unsigned long long ns = 0;
    if (f && fscanf(f, "%llu", &ns) == 1)
      us += (double)ns / 1e3;
    if (f)
      fclose(f);
  }
  if (dir)
    closedir(dir);
  return us;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return v[n / 2];
}

/* ---- floor: raw hiredis ----------------------------------------------- */

static double raw_loop(bool set, long n) {
  redisContext *c = redisConnect("127.0.0.1", port);
  if (!c || c->err)
    return 0;
  char key[32];
  snprintf(key, sizeof key, "rawbench:%d", (int)getpid());
  uint64_t t0 = bench_now_ns();
  for (long i = 0; i < n; i++) {
    char f[24];
    int fl = snprintf(f, sizeof f, "%ld", i);
    const char *av[4] = {set ? "HSET" : "HGET", key, f, f};
    size_t lv[4] = {4, strlen(key), (size_t)fl, (size_t)fl};
    redisReply *rp = redisCommandArgv(c, set ? 4 : 3, av, lv);
    if (!rp)
      return 0;
    freeReplyObject(rp);
  }
  double rate = (double)n * 1e9 / (double)(bench_now_ns() - t0);
  if (!set) {
    redisReply *rp = redisCommand(c, "DEL %s", key);
    freeReplyObject(rp);
  }
  redisFree(c);
  return rate;
}

/* Microseconds per HSET of 1000 fields (the floor of update_1000). */
static double raw_hset_1000(int calls) {
  redisContext *c = redisConnect("127.0.0.1", port);
  if (!c || c->err)
    return 0;
  static const char *av[2002];
  static size_t lv[2002];
  static char buf[1000][8];
  av[0] = "HSET";
  lv[0] = 4;
  av[1] = "rawbench:u";
  lv[1] = strlen(av[1]);
  for (int i = 0; i < 1000; i++) {
    int l = snprintf(buf[i], sizeof buf[i], "%d", i);
    av[2 + 2 * i] = av[3 + 2 * i] = buf[i];
    lv[2 + 2 * i] = lv[3 + 2 * i] = (size_t)l;
  }
  uint64_t t0 = bench_now_ns();
  for (int i = 0; i < calls; i++) {
    redisReply *rp = redisCommandArgv(c, 2002, av, lv);
    if (!rp)
      return 0;
    freeReplyObject(rp);
  }
  double us = (double)(bench_now_ns() - t0) / 1e3 / calls;
  redisFree(c);
  return us;
}

/* ---- ours --------------------------------------------------------------- */

static double dict_loop(mp_dict_t *d, bool set, long n) {
  uint64_t t0 = bench_now_ns();
  for (long i = 0; i < n; i++) {
    mp_val_t k = mp_val_int(i), v;
    int r = set ? mp_dict_set(d, &k, &k) : mp_dict_get(d, &k, &v);
    if (r < 0)
      return 0;
  }
  return (double)n * 1e9 / (double)(bench_now_ns() - t0);
}

/* Microseconds per update() of 1000 keys from a local dict. */
static double dict_update(mp_dict_t *d, mp_dict_t *src, int calls) {
  uint64_t t0 = bench_now_ns();
  for (int i = 0; i < calls; i++)
    if (mp_dict_update(d, src) < 0)
      return 0;
  return (double)(bench_now_ns() - t0) / 1e3 / calls;
}

/* One producer process, one consumer (this process): messages/s measured
 * by the consumer. batch 1: put/get; more: put_many/get_many. */
static double queue_stream(mp_manager_t *m, long n, int batch) {
  mp_mqueue_t *q;
  if (mp_mqueue_create(&q, m, NULL) < 0)
    return 0;
  char msg[64];
  memset(msg, 'm', sizeof msg);
  pid_t pid = fork();
  if (pid == 0) {
    struct iovec iov[256];
    for (int i = 0; i < 256; i++)
      iov[i] = (struct iovec){msg, sizeof msg};
    for (long i = 0; i < n;) {
      int k = (int)(n - i < batch ? n - i : batch);
      int r = k == 1 ? mp_mqueue_put(q, msg, sizeof msg, MP_FOREVER)
                     : mp_mqueue_put_many(q, iov, (size_t)k, MP_FOREVER);
      if (r < 0)
        _exit(1);
      i += k;
    }
    _exit(0);
  }
  struct iovec got[256];
  uint64_t t0 = 0;
  for (long i = 0; i < n;) {
    int r = mp_mqueue_get_many(q, got, (size_t)batch, MP_FOREVER);
    if (r < 0)
      break;
    if (!t0)
      t0 = bench_now_ns();
    for (int j = 0; j < r; j++)
      free(got[j].iov_base);
    i += r;
  }
  double rate = (double)(n - 1) * 1e9 / (double)(bench_now_ns() - t0);
  waitpid(pid, NULL, 0);
  mp_mqueue_destroy(q);
  return rate;
}

int main(int argc, char **argv) {
  if (start_server() < 0) {
    fprintf(stderr, "bench_redis: cannot start redis-server\n");
    return 1;
  }
  long n = bench_scaled(20000);
  mp_manager_t *m, *lm;
  mp_dict_t *d, *src, *ud;
  mp_manager_opts_t o = {.address = addr};
  if (mp_manager_create(&m, &o) < 0 || mp_dict_create(&d, m, NULL) < 0 ||
      mp_dict_create(&ud, m, NULL) < 0 || mp_manager_create(&lm, NULL) < 0 ||
      mp_dict_create(&src, lm, NULL) < 0)
    return 1;
  for (int i = 0; i < 1000; i++) {
    mp_val_t k = mp_val_int(i);
    mp_dict_set(src, &k, &k);
  }
  /* Each figure with its CPU time per call (this process and the server):
   * the *_cpu rows, microseconds per call on both ends together. */
  double ours[RUNS], floor[RUNS], ocpu[RUNS], fcpu[RUNS], c0;
  if (bench_selected(argc, argv, "redis_dict_set") ||
      bench_selected(argc, argv, "redis_dict_get")) {
    for (int set = 1; set >= 0; set--) {
      for (int r = 0; r < RUNS; r++) {
        c0 = cpu_us();
        floor[r] = raw_loop(set, n);
        fcpu[r] = (cpu_us() - c0) / (double)n;
        c0 = cpu_us();
        ours[r] = dict_loop(d, set, n);
        ocpu[r] = (cpu_us() - c0) / (double)n;
      }
      const char *w = set ? "redis_dict_set" : "redis_dict_get";
      char wc[64];
      snprintf(wc, sizeof wc, "%s_cpu", w);
      bench_emit(w, "ops/s", median(ours, RUNS), median(floor, RUNS), true, 3,
                 1.2);
      bench_emit(wc, "us/op", median(ocpu, RUNS), median(fcpu, RUNS), false,
                 0, 0);
    }
  }
  if (bench_selected(argc, argv, "redis_dict_update_1000")) {
    int calls = (int)bench_scaled(200);
    for (int r = 0; r < RUNS; r++) {
      c0 = cpu_us();
      floor[r] = raw_hset_1000(calls);
      fcpu[r] = (cpu_us() - c0) / calls;
      c0 = cpu_us();
      ours[r] = dict_update(ud, src, calls);
      ocpu[r] = (cpu_us() - c0) / calls;
    }
    bench_emit("redis_dict_update_1000", "us", median(ours, RUNS),
               median(floor, RUNS), false, 10, 0);
    bench_emit("redis_dict_update_1000_cpu", "us/call", median(ocpu, RUNS),
               median(fcpu, RUNS), false, 0, 0);
  }
  if (bench_selected(argc, argv, "redis_queue_stream_64B")) {
    for (int r = 0; r < RUNS; r++)
      ours[r] = queue_stream(m, bench_scaled(100000), 256);
    bench_emit("redis_queue_stream_64B", "msgs/s", median(ours, RUNS), -1,
               true, 10, 0);
    for (int r = 0; r < RUNS; r++)
      ours[r] = queue_stream(m, bench_scaled(10000), 1);
    bench_emit("redis_queue_stream_64B_unbatched", "msgs/s",
               median(ours, RUNS), -1, true, 0, 0);
  }
  mp_dict_close(d);
  mp_dict_close(ud);
  mp_dict_close(src);
  mp_manager_destroy(m);
  mp_manager_destroy(lm);
  kill(server, SIGKILL);
  waitpid(server, NULL, 0);
  return 0;
}
