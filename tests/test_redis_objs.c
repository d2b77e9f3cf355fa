/* The queue, lock and event of a Redis manager: Python's semantics, several
 * processes (one started with exec, connecting by TCP), consumers and lock
 * holders killed. Each binary runs its own redis-server (redis_server.h). */
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "redis_server.h"
#include "runner.h"

static mp_manager_t *rmanager(void) {
  mp_manager_t *m;
  mp_manager_opts_t o = {.address = mpt_redis.addr};
  ASSERT_OK(mp_manager_create(&m, &o));
  return m;
}

static void put_str(mp_mqueue_t *q, const char *s) {
  ASSERT_OK(mp_mqueue_put(q, s, strlen(s), 0));
}

/* Take one message and check it is s. */
static void get_str(mp_mqueue_t *q, const char *s, int timeout_ms) {
  void *msg;
  size_t len;
  ASSERT_OK(mp_mqueue_get(q, &msg, &len, timeout_ms));
  ASSERT_EQ(len, strlen(s));
  ASSERT(memcmp(msg, s, len) == 0);
  free(msg);
}

/* ---- queue ---------------------------------------------------------------
 */

TEST(mqueue_fifo_timeout_close) {
  mp_manager_t *m = rmanager();
  mp_mqueue_t *q;
  ASSERT_OK(mp_mqueue_create(&q, m, NULL));
  void *msg;
  size_t len, n;
  ASSERT_ERR(mp_mqueue_get(q, &msg, &len, 0), MP_EEMPTY);
  uint64_t t0 = mpt_now_ms();
  ASSERT_ERR(mp_mqueue_get(q, &msg, &len, 150), MP_EEMPTY);
  ASSERT(mpt_now_ms() - t0 >= 150);
  put_str(q, "a");
  put_str(q, "");
  char big[100000];
  memset(big, 'z', sizeof big);
  ASSERT_OK(mp_mqueue_put(q, big, sizeof big, MP_FOREVER));
  ASSERT_OK(mp_mqueue_qsize(q, &n));
  ASSERT_EQ(n, 3);
  get_str(q, "a", 0);
  get_str(q, "", 0);
  ASSERT_OK(mp_mqueue_get(q, &msg, &len, 0));
  ASSERT_EQ(len, sizeof big);
  ASSERT(memcmp(msg, big, len) == 0);
  free(msg);
  /* Batches keep their order. */
  struct iovec iov[3] = {{"x", 1}, {"yy", 2}, {"zzz", 3}}, out[5];
  ASSERT_EQ(mp_mqueue_put_many(q, iov, 3, 0), 3);
  ASSERT_EQ(mp_mqueue_get_many(q, out, 5, 0), 3);
  for (int i = 0; i < 3; i++) {
    ASSERT_EQ(out[i].iov_len, (size_t)i + 1);
    ASSERT(memcmp(out[i].iov_base, iov[i].iov_base, out[i].iov_len) == 0);
    free(out[i].iov_base);
  }
  /* A blocked get is woken by a put from another process. */
  pid_t pid = fork();
  if (pid == 0) {
    mpt_sleep_ms(100);
    put_str(q, "late");
    _exit(0);
  }
  get_str(q, "late", MP_FOREVER);
  mpt_wait_ok(pid);
  /* close: puts fail, gets drain and then fail, a blocked get wakes. */
  put_str(q, "left");
  pid = fork();
  if (pid == 0) {
    mpt_sleep_ms(100);
    ASSERT_OK(mp_mqueue_close(q));
    _exit(0);
  }
  get_str(q, "left", 0);
  ASSERT_ERR(mp_mqueue_get(q, &msg, &len, MP_FOREVER), MP_ECLOSED);
  mpt_wait_ok(pid);
  ASSERT_ERR(mp_mqueue_put(q, "b", 1, 0), MP_ECLOSED);
  ASSERT_OK(mp_mqueue_close(q));
  ASSERT_OK(mp_mqueue_destroy(q));
  ASSERT_OK(mp_manager_destroy(m));
}

TEST(mqueue_maxsize_and_errors) {
  mp_manager_t *m = rmanager();
  mp_mqueue_t *q, *q2;
  mp_mobj_opts_t o = {.name = "jobs", .maxsize = 2};
  ASSERT_OK(mp_mqueue_create(&q, m, &o));
  ASSERT_ERR(mp_mqueue_create(&q2, m, &o), MP_EEXIST);
  put_str(q, "1");
  put_str(q, "2");
  ASSERT_ERR(mp_mqueue_put(q, "3", 1, 0), MP_EFULL);
  uint64_t t0 = mpt_now_ms();
  ASSERT_ERR(mp_mqueue_put(q, "3", 1, 100), MP_EFULL);
  ASSERT(mpt_now_ms() - t0 >= 100);
  struct iovec three[3] = {{"a", 1}, {"b", 1}, {"c", 1}};
  ASSERT_ERR(mp_mqueue_put_many(q, three, 3, MP_FOREVER), MP_EFULL);
  /* Opened by name: same queue, same bound, a consumer of its own. */
  ASSERT_OK(mp_mqueue_open(&q2, m, "jobs"));
  get_str(q2, "1", 0);
  ASSERT_OK(mp_mqueue_put(q, "3", 1, 0));
  pid_t pid = fork();
  if (pid == 0) {
    mpt_sleep_ms(100);
    get_str(q2, "2", 0);
    _exit(0);
  }
  ASSERT_OK(mp_mqueue_put(q, "4", 1, MP_FOREVER)); /* waits for room */
  mpt_wait_ok(pid);
  get_str(q2, "3", 0);
  get_str(q2, "4", 0);
  /* Errors. */
  void *msg;
  size_t len;
  struct iovec iov[1];
  ASSERT_ERR(mp_mqueue_create(NULL, m, NULL), MP_EINVAL);
  ASSERT_ERR(mp_mqueue_create(&q2, NULL, NULL), MP_EINVAL);
  mp_mobj_opts_t bad = {.lease_ms = -1};
  ASSERT_ERR(mp_mqueue_create(&q2, m, &bad), MP_EINVAL);
  bad = (mp_mobj_opts_t){.flags = 1u << 7};
  ASSERT_ERR(mp_mqueue_create(&q2, m, &bad), MP_EINVAL);
  bad = (mp_mobj_opts_t){.name = ""};
  ASSERT_ERR(mp_mqueue_create(&q2, m, &bad), MP_EINVAL);
  ASSERT_ERR(mp_mqueue_open(&q2, m, "nope"), MP_ENOENT);
  ASSERT_ERR(mp_mqueue_open(&q2, m, NULL), MP_EINVAL);
  mp_dict_t *d;
  mp_dict_opts_t dopt = {.name = "a-dict"};
  ASSERT_OK(mp_dict_create(&d, m, &dopt));
  ASSERT_ERR(mp_mqueue_open(&q2, m, "a-dict"), MP_EINVAL);
  ASSERT_OK(mp_dict_close(d));
  ASSERT_ERR(mp_mqueue_put(NULL, "a", 1, 0), MP_EINVAL);
  ASSERT_ERR(mp_mqueue_put(q, NULL, 1, 0), MP_EINVAL);
  ASSERT_ERR(mp_mqueue_put(q, "a", 1, -5), MP_EINVAL);
  ASSERT_ERR(mp_mqueue_put_many(q, NULL, 1, 0), MP_EINVAL);
  ASSERT_ERR(mp_mqueue_put_many(q, iov, 0, 0), MP_EINVAL);
  ASSERT_ERR(mp_mqueue_get(q, NULL, &len, 0), MP_EINVAL);
  ASSERT_ERR(mp_mqueue_get(q, &msg, NULL, 0), MP_EINVAL);
  ASSERT_ERR(mp_mqueue_get(q, &msg, &len, -2), MP_EINVAL);
  ASSERT_ERR(mp_mqueue_get_many(q, iov, 0, 0), MP_EINVAL);
  ASSERT_ERR(mp_mqueue_qsize(q, NULL), MP_EINVAL);
  ASSERT_ERR(mp_mqueue_close(NULL), MP_EINVAL);
  ASSERT_ERR(mp_mqueue_task_done(q), MP_ENOTSUP); /* not joinable */
  ASSERT_ERR(mp_mqueue_join(q, 0), MP_ENOTSUP);
  ASSERT_ERR(mp_mqueue_task_done(NULL), MP_EINVAL);
  ASSERT_ERR(mp_mqueue_destroy(NULL), MP_EINVAL);
  ASSERT_OK(mp_mqueue_destroy(q2));
  ASSERT_OK(mp_mqueue_destroy(q));
  ASSERT_OK(mp_manager_destroy(m));
}

TEST(mqueue_joinable_task_done_join) {
  mp_manager_t *m = rmanager();
  mp_mqueue_t *q;
  mp_mobj_opts_t o = {.flags = MP_QUEUE_JOINABLE};
  ASSERT_OK(mp_mqueue_create(&q, m, &o));
  ASSERT_OK(mp_mqueue_join(q, 0)); /* nothing put */
  ASSERT_ERR(mp_mqueue_task_done(q), MP_EINVAL);
  for (int i = 0; i < 20; i++)
    put_str(q, "job");
  ASSERT_ERR(mp_mqueue_join(q, 50), MP_ETIMEDOUT);
  pid_t pids[2];
  for (int c = 0; c < 2; c++) {
    if ((pids[c] = fork()) == 0) {
      void *msg;
      size_t len;
      while (mp_mqueue_get(q, &msg, &len, 200) == 0) {
        free(msg);
        ASSERT_OK(mp_mqueue_task_done(q));
      }
      _exit(0);
    }
  }
  ASSERT_OK(mp_mqueue_join(q, MP_FOREVER));
  for (int c = 0; c < 2; c++)
    mpt_wait_ok(pids[c]);
  ASSERT_ERR(mp_mqueue_task_done(q), MP_EINVAL); /* more than taken */
  ASSERT_OK(mp_mqueue_destroy(q));
  ASSERT_OK(mp_manager_destroy(m));
}

TEST(mqueue_consumer_killed_message_redelivered) {
  /* A consumer SIGKILLed while it holds a message: once its lease ran out
   * the message goes to another consumer, and join completes. */
  mp_manager_t *m = rmanager();
  mp_mqueue_t *q;
  mp_mobj_opts_t o = {.flags = MP_QUEUE_JOINABLE, .lease_ms = 300};
  ASSERT_OK(mp_mqueue_create(&q, m, &o));
  put_str(q, "precious");
  put_str(q, "second");
  int pfd[2];
  ASSERT(pipe(pfd) == 0);
  pid_t pid = fork();
  if (pid == 0) {
    close(pfd[0]);
    get_str(q, "precious", MP_FOREVER);
    ASSERT(write(pfd[1], "t", 1) == 1);
    for (;;)
      pause();
  }
  close(pfd[1]);
  char c;
  ASSERT(read(pfd[0], &c, 1) == 1);
  close(pfd[0]);
  mpt_kill_reap(pid);
  /* Given back at the front, before "second". */
  get_str(q, "second", 0);
  get_str(q, "precious", MP_FOREVER);
  ASSERT_OK(mp_mqueue_task_done(q));
  ASSERT_OK(mp_mqueue_task_done(q));
  ASSERT_OK(mp_mqueue_join(q, MP_FOREVER));
  size_t n;
  ASSERT_OK(mp_mqueue_qsize(q, &n));
  ASSERT_EQ(n, 0);
  ASSERT_OK(mp_mqueue_destroy(q));
  ASSERT_OK(mp_manager_destroy(m));
}

TEST(mqueue_consumers_killed_at_random_nothing_lost) {
  /* Consumers report each message through a pipe, then mark it done, and
   * are SIGKILLed at random moments. Every message put is reported at least
   * once (none lost) and join completes. */
  mp_manager_t *m = rmanager();
  mp_mqueue_t *q;
  mp_mobj_opts_t o = {.flags = MP_QUEUE_JOINABLE, .lease_ms = 200};
  ASSERT_OK(mp_mqueue_create(&q, m, &o));
  const int total = 400;
  for (int i = 0; i < total; i++) {
    char b[16];
    snprintf(b, sizeof b, "%d", i);
    put_str(q, b);
  }
  char *done = calloc((size_t)total, 1);
  int pfd[2];
  ASSERT(pipe(pfd) == 0);
  unsigned seed = 5;
  for (int round = 0; round < 200; round++) {
    size_t left;
    ASSERT_OK(mp_mqueue_qsize(q, &left));
    pid_t pid = fork();
    if (pid == 0) {
      close(pfd[0]);
      void *msg;
      size_t len;
      while (mp_mqueue_get(q, &msg, &len, 500) == 0) {
        int v = atoi(msg);
        free(msg);
        /* Handled (reported) first, then done: a message done was always
         * reported; one reported and not done comes again. */
        ASSERT(write(pfd[1], &v, sizeof v) == (ssize_t)sizeof v);
        ASSERT_OK(mp_mqueue_task_done(q));
      }
      _exit(0);
    }
    mpt_sleep_ms((int)(rand_r(&seed) % 8));
    mpt_kill_reap(pid);
    if (mp_mqueue_join(q, 0) == 0)
      break;
  }
  /* What is left (given back after the leases) this process finishes. */
  void *msg;
  size_t len;
  while (mp_mqueue_join(q, 0) != 0) {
    int r = mp_mqueue_get(q, &msg, &len, 1000);
    if (r == MP_EEMPTY)
      continue;
    ASSERT_OK(r);
    done[atoi(msg)] = 1;
    free(msg);
    ASSERT_OK(mp_mqueue_task_done(q));
  }
  close(pfd[1]);
  int v;
  while (read(pfd[0], &v, sizeof v) == (ssize_t)sizeof v) {
    ASSERT(v >= 0 && v < total);
    done[v] = 1;
  }
  close(pfd[0]);
  for (int i = 0; i < total; i++)
    ASSERT(done[i]);
  free(done);
  ASSERT_OK(mp_mqueue_destroy(q));
  ASSERT_OK(mp_manager_destroy(m));
}

/* ---- lock ----------------------------------------------------------------
 */

TEST(mlock_basic_and_errors) {
  mp_manager_t *m = rmanager();
  mp_mlock_t *l, *l2;
  mp_mobj_opts_t o = {.name = "lk"};
  ASSERT_OK(mp_mlock_create(&l, m, &o));
  ASSERT_OK(mp_mlock_open(&l2, m, "lk"));
  ASSERT_ERR(mp_mlock_release(l), MP_EPERM);
  ASSERT_OK(mp_mlock_acquire(l, 0));
  ASSERT_ERR(mp_mlock_acquire(l, 0), MP_EDEADLK);
  ASSERT_ERR(mp_mlock_acquire(l2, 0), MP_ETIMEDOUT);
  uint64_t t0 = mpt_now_ms();
  ASSERT_ERR(mp_mlock_acquire(l2, 120), MP_ETIMEDOUT);
  ASSERT(mpt_now_ms() - t0 >= 120);
  ASSERT_ERR(mp_mlock_release(l2), MP_EPERM);
  ASSERT_ERR(mp_mlock_renew(l2), MP_EPERM);
  ASSERT_OK(mp_mlock_renew(l));
  /* A waiter in another process gets it once released. */
  pid_t pid = fork();
  if (pid == 0) {
    ASSERT_OK(mp_mlock_acquire(l2, MP_FOREVER));
    ASSERT_OK(mp_mlock_release(l2));
    _exit(0);
  }
  mpt_sleep_ms(100);
  ASSERT_OK(mp_mlock_release(l));
  mpt_wait_ok(pid);
  /* A forked child is another owner. */
  ASSERT_OK(mp_mlock_acquire(l, 0));
  pid = fork();
  if (pid == 0) {
    ASSERT_ERR(mp_mlock_release(l), MP_EPERM);
    ASSERT_ERR(mp_mlock_acquire(l, 0), MP_ETIMEDOUT);
    _exit(0);
  }
  mpt_wait_ok(pid);
  ASSERT_OK(mp_mlock_release(l));
  ASSERT_ERR(mp_mlock_create(NULL, m, NULL), MP_EINVAL);
  ASSERT_ERR(mp_mlock_create(&l2, NULL, NULL), MP_EINVAL);
  ASSERT_ERR(mp_mlock_open(&l2, m, "nope"), MP_ENOENT);
  ASSERT_ERR(mp_mlock_acquire(NULL, 0), MP_EINVAL);
  ASSERT_ERR(mp_mlock_acquire(l, -3), MP_EINVAL);
  ASSERT_ERR(mp_mlock_release(NULL), MP_EINVAL);
  ASSERT_ERR(mp_mlock_renew(NULL), MP_EINVAL);
  ASSERT_ERR(mp_mlock_destroy(NULL), MP_EINVAL);
  ASSERT_OK(mp_mlock_destroy(l2));
  ASSERT_OK(mp_mlock_destroy(l));
  ASSERT_OK(mp_manager_destroy(m));
}

TEST(mlock_mutual_exclusion_processes) {
  /* A non-atomic read-modify-write of a dict value under the lock, from 3
   * processes at once: no increment is lost. */
  mp_manager_t *m = rmanager();
  mp_dict_t *d;
  mp_mlock_t *l;
  mp_mobj_opts_t o = {.name = "mx"};
  ASSERT_OK(mp_dict_create(&d, m, NULL));
  ASSERT_OK(mp_mlock_create(&l, m, &o));
  mp_val_t k = mp_val_str("n"), zero = mp_val_int(0);
  ASSERT_OK(mp_dict_set(d, &k, &zero));
  pid_t pids[3];
  for (int p = 0; p < 3; p++) {
    if ((pids[p] = fork()) == 0) {
      for (int i = 0; i < 150; i++) {
        ASSERT_OK(mp_mlock_acquire(l, MP_FOREVER));
        mp_val_t v;
        ASSERT_OK(mp_dict_get(d, &k, &v));
        v.u.i++;
        ASSERT_OK(mp_dict_set(d, &k, &v));
        ASSERT_OK(mp_mlock_release(l));
      }
      _exit(0);
    }
  }
  for (int p = 0; p < 3; p++)
    mpt_wait_ok(pids[p]);
  mp_val_t v;
  ASSERT_OK(mp_dict_get(d, &k, &v));
  ASSERT_EQ(v.u.i, 450);
  ASSERT_OK(mp_mlock_destroy(l));
  ASSERT_OK(mp_dict_close(d));
  ASSERT_OK(mp_manager_destroy(m));
}

TEST(mlock_holder_killed_ownerdead_after_lease) {
  mp_manager_t *m = rmanager();
  mp_mlock_t *l;
  mp_mobj_opts_t o = {.lease_ms = 300};
  ASSERT_OK(mp_mlock_create(&l, m, &o));
  int pfd[2];
  ASSERT(pipe(pfd) == 0);
  pid_t pid = fork();
  if (pid == 0) {
    close(pfd[0]);
    ASSERT_OK(mp_mlock_acquire(l, 0));
    ASSERT(write(pfd[1], "h", 1) == 1);
    for (;;)
      pause();
  }
  close(pfd[1]);
  char c;
  ASSERT(read(pfd[0], &c, 1) == 1);
  close(pfd[0]);
  uint64_t t0 = mpt_now_ms();
  mpt_kill_reap(pid);
  ASSERT_ERR(mp_mlock_acquire(l, MP_FOREVER), MP_EOWNERDEAD);
  ASSERT(mpt_now_ms() - t0 >= 150); /* not before the lease ran out */
  ASSERT_OK(mp_mlock_release(l));
  ASSERT_OK(mp_mlock_acquire(l, 0)); /* a clean release: plain 0 again */
  ASSERT_OK(mp_mlock_release(l));
  ASSERT_OK(mp_mlock_destroy(l));
  ASSERT_OK(mp_manager_destroy(m));
}

/* A live holder blocked in another object's wait (Python's `with lock:
 * event.wait()`) keeps its lock and the message it took: every wait loop
 * renews the process's leases. Another process meanwhile never gets the
 * lock nor the message, over several leases. */
TEST(leases_kept_while_holder_waits_elsewhere) {
  mp_manager_t *m = rmanager();
  mp_mlock_t *l;
  mp_mqueue_t *q;
  mp_mevent_t *e;
  mp_mobj_opts_t lo = {.lease_ms = 1000};
  mp_mobj_opts_t qo = {.flags = MP_QUEUE_JOINABLE, .lease_ms = 1000};
  ASSERT_OK(mp_mlock_create(&l, m, &lo));
  ASSERT_OK(mp_mqueue_create(&q, m, &qo));
  ASSERT_OK(mp_mevent_create(&e, m, NULL));
  put_str(q, "held");
  ASSERT_OK(mp_mlock_acquire(l, 0));
  get_str(q, "held", 0);
  pid_t pid = fork();
  if (pid == 0) {
    /* A different owner and consumer (handles inherited by fork). */
    uint64_t t0 = mpt_now_ms();
    int bad = 0;
    while (mpt_now_ms() - t0 < 4000) {
      void *msg;
      size_t len;
      bad |= mp_mlock_acquire(l, 0) != MP_ETIMEDOUT;
      bad |= mp_mqueue_get(q, &msg, &len, 0) != MP_EEMPTY;
      usleep(50000);
    }
    mp_mevent_set(e);
    _exit(bad);
  }
  ASSERT_OK(mp_mevent_wait(e, MP_FOREVER));
  mpt_wait_ok(pid);
  ASSERT_OK(mp_mqueue_task_done(q));
  ASSERT_OK(mp_mlock_release(l)); /* still ours: not MP_EPERM */
  ASSERT_OK(mp_mqueue_join(q, 0));
  ASSERT_OK(mp_mevent_destroy(e));
  ASSERT_OK(mp_mqueue_destroy(q));
  ASSERT_OK(mp_mlock_destroy(l));
  ASSERT_OK(mp_manager_destroy(m));
}

/* ---- event ---------------------------------------------------------------
 */

TEST(mevent_set_wait_clear) {
  mp_manager_t *m = rmanager();
  mp_mevent_t *e, *e2;
  mp_mobj_opts_t o = {.name = "go"};
  ASSERT_OK(mp_mevent_create(&e, m, &o));
  ASSERT_OK(mp_mevent_open(&e2, m, "go"));
  ASSERT_EQ(mp_mevent_is_set(e), 0);
  ASSERT_ERR(mp_mevent_wait(e, 0), MP_ETIMEDOUT);
  ASSERT_ERR(mp_mevent_wait(e, 80), MP_ETIMEDOUT);
  pid_t pids[3];
  for (int i = 0; i < 3; i++) {
    if ((pids[i] = fork()) == 0) {
      ASSERT_OK(mp_mevent_wait(e2, MP_FOREVER));
      _exit(0);
    }
  }
  mpt_sleep_ms(100);
  ASSERT_OK(mp_mevent_set(e));
  for (int i = 0; i < 3; i++)
    mpt_wait_ok(pids[i]);
  ASSERT_EQ(mp_mevent_is_set(e2), 1);
  ASSERT_OK(mp_mevent_wait(e2, 0));
  ASSERT_OK(mp_mevent_clear(e2));
  ASSERT_EQ(mp_mevent_is_set(e), 0);
  ASSERT_ERR(mp_mevent_create(NULL, m, NULL), MP_EINVAL);
  ASSERT_ERR(mp_mevent_open(&e2, m, NULL), MP_EINVAL);
  ASSERT_ERR(mp_mevent_open(&e2, m, "none"), MP_ENOENT);
  ASSERT_ERR(mp_mevent_set(NULL), MP_EINVAL);
  ASSERT_ERR(mp_mevent_wait(e, -7), MP_EINVAL);
  ASSERT_ERR(mp_mevent_is_set(NULL), MP_EINVAL);
  ASSERT_OK(mp_mevent_destroy(e2));
  ASSERT_OK(mp_mevent_destroy(e));
  ASSERT_OK(mp_manager_destroy(m));
}

/* ---- another host: a process started with exec, over TCP ---------------
 */

/* The exec'd helper (this binary, with MPT_REDIS_HELPER="<address> <name>"):
 * opens everything by name over TCP and works on it. */
__attribute__((constructor)) static void helper_main(void) {
  const char *h = getenv("MPT_REDIS_HELPER");
  if (!h)
    return;
  char addr[256], name[256];
  if (sscanf(h, "%255s %255s", addr, name) != 2)
    _exit(2);
  mp_manager_t *m;
  mp_manager_opts_t o = {.address = addr};
  mp_dict_t *d;
  mp_list_t *l;
  mp_mqueue_t *q;
  mp_mlock_t *lk;
  if (mp_manager_open_opts(&m, name, &o) < 0 ||
      mp_dict_open(&d, m, "shared") < 0 || mp_list_open(&l, m, "log") < 0 ||
      mp_mqueue_open(&q, m, "tasks") < 0 || mp_mlock_open(&lk, m, "lk") < 0)
    _exit(3);
  void *msg;
  size_t len;
  int n = 0;
  while (mp_mqueue_get(q, &msg, &len, 2000) == 0) {
    mp_val_t k = mp_val_strn(msg, len);
    if (mp_mlock_acquire(lk, MP_FOREVER) < 0 ||
        mp_dict_add(d, &k, 1, NULL) < 0 || mp_list_append(l, &k) < 0 ||
        mp_mlock_release(lk) < 0)
      _exit(4);
    free(msg);
    n++;
  }
  mp_val_t k = mp_val_str("helper"), v = mp_val_int(n);
  if (mp_dict_set(d, &k, &v) < 0)
    _exit(5);
  mp_mlock_destroy(lk);
  mp_mqueue_destroy(q);
  mp_list_close(l);
  mp_dict_close(d);
  mp_manager_destroy(m);
  _exit(0);
}

TEST(exec_process_over_tcp_shares_everything) {
  mpt_redis_t s = {0};
  ASSERT_OK(mpt_redis_start(&s, 1, NULL));
  mp_manager_t *m;
  mp_manager_opts_t o = {.address = s.addr};
  ASSERT_OK(mp_manager_create(&m, &o));
  mp_dict_t *d;
  mp_list_t *l;
  mp_mqueue_t *q;
  mp_mlock_t *lk;
  mp_dict_opts_t dn = {.name = "shared"};
  mp_list_opts_t ln = {.name = "log"};
  mp_mobj_opts_t qn = {.name = "tasks"}, lkn = {.name = "lk"};
  ASSERT_OK(mp_dict_create(&d, m, &dn));
  ASSERT_OK(mp_list_create(&l, m, &ln));
  ASSERT_OK(mp_mqueue_create(&q, m, &qn));
  ASSERT_OK(mp_mlock_create(&lk, m, &lkn));
  const char *name;
  ASSERT_OK(mp_manager_name(m, &name));
  for (int i = 0; i < 200; i++)
    put_str(q, i % 2 ? "odd" : "even");
  char env[600];
  snprintf(env, sizeof env, "%s %s", s.addr, name);
  pid_t pid = fork();
  if (pid == 0) {
    setenv("MPT_REDIS_HELPER", env, 1);
    char self[512];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n < 0)
      _exit(126);
    self[n] = '\0';
    execl(self, self, "none", (char *)NULL);
    _exit(127);
  }
  /* This process consumes too, under the same lock. */
  void *msg;
  size_t len;
  int mine = 0;
  while (mp_mqueue_get(q, &msg, &len, 1000) == 0) {
    mp_val_t k = mp_val_strn(msg, len);
    ASSERT_OK(mp_mlock_acquire(lk, MP_FOREVER));
    ASSERT_OK(mp_dict_add(d, &k, 1, NULL));
    ASSERT_OK(mp_list_append(l, &k));
    ASSERT_OK(mp_mlock_release(lk));
    free(msg);
    mine++;
  }
  mpt_wait_ok(pid);
  mp_val_t v, ke = mp_val_str("even"), ko = mp_val_str("odd"),
              kh = mp_val_str("helper");
  ASSERT_OK(mp_dict_get(d, &ke, &v));
  ASSERT_EQ(v.u.i, 100);
  ASSERT_OK(mp_dict_get(d, &ko, &v));
  ASSERT_EQ(v.u.i, 100);
  ASSERT_OK(mp_dict_get(d, &kh, &v));
  ASSERT_EQ(v.u.i + mine, 200);
  size_t n;
  ASSERT_OK(mp_list_len(l, &n));
  ASSERT_EQ(n, 200);
  ASSERT_OK(mp_mlock_destroy(lk));
  ASSERT_OK(mp_mqueue_destroy(q));
  ASSERT_OK(mp_list_close(l));
  ASSERT_OK(mp_dict_close(d));
  ASSERT_OK(mp_manager_destroy(m));
  mpt_redis_stop(&s);
}

TEST(objects_survive_server_restart_errors_then_recover) {
  /* Queue, lock and event calls while the server is down return
   * connection errors (a blocked get included) and work once it is back. */
  mpt_redis_t s = {0};
  ASSERT_OK(mpt_redis_start(&s, 0, NULL));
  mp_manager_t *m;
  mp_manager_opts_t o = {.address = s.addr, .command_timeout_ms = 2000};
  ASSERT_OK(mp_manager_create(&m, &o));
  mp_mqueue_t *q;
  mp_mlock_t *lk;
  mp_mevent_t *e;
  ASSERT_OK(mp_mqueue_create(&q, m, NULL));
  ASSERT_OK(mp_mlock_create(&lk, m, NULL));
  ASSERT_OK(mp_mevent_create(&e, m, NULL));
  pid_t pid = fork();
  if (pid == 0) {
    void *msg;
    size_t len;
    int r = mp_mqueue_get(q, &msg, &len, MP_FOREVER);
    _exit(r == MP_ECONNRESET || r == MP_ECONNREFUSED ? 0 : 1);
  }
  mpt_sleep_ms(200);
  mpt_redis_kill(&s);
  mpt_wait_ok(pid);
  int r = mp_mqueue_put(q, "x", 1, 0);
  ASSERT(r == MP_ECONNRESET || r == MP_ECONNREFUSED || r == MP_ENOENT);
  r = mp_mlock_acquire(lk, 0);
  ASSERT(r == MP_ECONNRESET || r == MP_ECONNREFUSED || r == MP_ENOENT);
  r = mp_mevent_set(e);
  ASSERT(r == MP_ECONNRESET || r == MP_ECONNREFUSED || r == MP_ENOENT);
  ASSERT_OK(mpt_redis_start(&s, 0, NULL));
  put_str(q, "back");
  get_str(q, "back", 0);
  ASSERT_OK(mp_mlock_acquire(lk, 0));
  ASSERT_OK(mp_mlock_release(lk));
  ASSERT_OK(mp_mevent_set(e));
  ASSERT_OK(mp_mevent_wait(e, 0));
  ASSERT_OK(mp_mevent_destroy(e));
  ASSERT_OK(mp_mlock_destroy(lk));
  ASSERT_OK(mp_mqueue_destroy(q));
  ASSERT_OK(mp_manager_destroy(m));
  mpt_redis_stop(&s);
}

/* ---- stress: a CPU hog beside, a 1 ms signal storm inside ---------------
 */

TEST(signal_storm_and_cpu_hog) {
  /* Every call keeps working while SIGALRM (no SA_RESTART) interrupts the
   * caller's system calls every millisecond and a busy process competes
   * for the CPU: interrupted reads and writes are resumed, never turned
   * into errors. */
  pid_t hog = mpt_hog_start();
  mpt_storm_start(1000, false);
  mp_manager_t *m = rmanager();
  mp_dict_t *d;
  mp_mqueue_t *q;
  mp_mlock_t *l;
  ASSERT_OK(mp_dict_create(&d, m, NULL));
  ASSERT_OK(mp_mqueue_create(&q, m, NULL));
  ASSERT_OK(mp_mlock_create(&l, m, NULL));
  for (int i = 0; i < 1500; i++) {
    mp_val_t k = mp_val_int(i), v;
    ASSERT_OK(mp_dict_set(d, &k, &k));
    ASSERT_OK(mp_dict_get(d, &k, &v));
    ASSERT_EQ(v.u.i, i);
    if (i % 5 == 0) {
      ASSERT_OK(mp_mqueue_put(q, &i, sizeof i, MP_FOREVER));
      void *msg;
      size_t len;
      ASSERT_OK(mp_mqueue_get(q, &msg, &len, MP_FOREVER));
      ASSERT_EQ(len, sizeof i);
      free(msg);
      ASSERT_OK(mp_mlock_acquire(l, MP_FOREVER));
      ASSERT_OK(mp_mlock_release(l));
    }
  }
  /* A blocking get with a deadline under the storm ends at the deadline. */
  void *msg;
  size_t len;
  ASSERT_ERR(mp_mqueue_get(q, &msg, &len, 300), MP_EEMPTY);
  mpt_storm_stop();
  ASSERT(mpt_storm_alarms > 10);
  mpt_hog_stop(hog);
  ASSERT_OK(mp_mlock_destroy(l));
  ASSERT_OK(mp_mqueue_destroy(q));
  ASSERT_OK(mp_dict_close(d));
  ASSERT_OK(mp_manager_destroy(m));
}
