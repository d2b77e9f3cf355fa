/* Tests for the shared-memory queue. */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runner.h"

static mp_queue_t *mkq(size_t maxsize, size_t capacity, unsigned flags) {
  mp_queue_opts_t o = {
      .maxsize = maxsize, .capacity = capacity, .flags = flags};
  mp_queue_t *q = NULL;
  ASSERT_OK(mp_queue_create(&q, &o));
  ASSERT(q != NULL);
  return q;
}

/* Message i of producer p: a header then bytes derived from both, of a
 * length that varies with i (and may be large). */
typedef struct {
  uint32_t producer;
  uint32_t seq;
} msg_hdr_t;

static size_t msg_len(uint32_t p, uint32_t i, size_t maxlen) {
  size_t l = sizeof(msg_hdr_t) + ((i * 7919u + p * 31u) % 97u);
  if (i % 97 == 5)
    l += 3000;
  return l > maxlen ? maxlen : l;
}

static size_t msg_make(unsigned char *buf, uint32_t p, uint32_t i,
                       size_t maxlen) {
  size_t l = msg_len(p, i, maxlen);
  msg_hdr_t h = {p, i};
  memcpy(buf, &h, sizeof h);
  for (size_t k = sizeof h; k < l; k++)
    buf[k] = (unsigned char)(p * 13 + i * 7 + k);
  return l;
}

static bool msg_check(const unsigned char *buf, size_t len, msg_hdr_t *out,
                      size_t maxlen) {
  if (len < sizeof(msg_hdr_t))
    return false;
  memcpy(out, buf, sizeof *out);
  if (len != msg_len(out->producer, out->seq, maxlen))
    return false;
  for (size_t k = sizeof *out; k < len; k++)
    if (buf[k] != (unsigned char)(out->producer * 13 + out->seq * 7 + k))
      return false;
  return true;
}

/* ---- basics ------------------------------------------------------------ */

TEST(queue_create_errors) {
  mp_queue_t *q = NULL;
  mp_queue_opts_t o = {0};
  ASSERT_ERR(mp_queue_create(NULL, NULL), MP_EINVAL);
  o.capacity = MP_QUEUE_MAX_CAPACITY + 1;
  ASSERT_ERR(mp_queue_create(&q, &o), MP_EINVAL);
  o.capacity = 0;
  o.flags = 1u << 7;
  ASSERT_ERR(mp_queue_create(&q, &o), MP_EINVAL);
  o.flags = 0;
  o.name = "inner/slash"; /* "x" and "/x" are both fine; a '/' inside is not */
  ASSERT_ERR(mp_queue_create(&q, &o), MP_EINVAL);
  o.name = "/a/b";
  ASSERT_ERR(mp_queue_create(&q, &o), MP_EINVAL);
  o.name = "/";
  ASSERT_ERR(mp_queue_create(&q, &o), MP_EINVAL);
  o.name = "/mp-0123456789012345678901234567890123456789012345678901234";
  ASSERT_ERR(mp_queue_create(&q, &o), MP_ENAMETOOLONG);
  ASSERT(q == NULL);

  char name[64];
  snprintf(name, sizeof name, "/mp-test-q-%d", (int)getpid());
  o.name = name;
  ASSERT_OK(mp_queue_create(&q, &o));
  ASSERT_STR_EQ(mp_queue_name(q), name);
  ASSERT(mpt_shm_exists(name));
  mp_queue_t *q2 = NULL;
  ASSERT_ERR(mp_queue_create(&q2, &o), MP_EEXIST);
  ASSERT_OK(mp_queue_destroy(q));
  ASSERT(!mpt_shm_exists(name));
  ASSERT_ERR(mp_queue_destroy(NULL), MP_EINVAL);
  ASSERT(mp_queue_name(NULL) == NULL);

  /* Defaults: random name, no bound but the bytes. */
  ASSERT_OK(mp_queue_create(&q, NULL));
  ASSERT(strncmp(mp_queue_name(q), "/mp-", 4) == 0);
  ASSERT_EQ(mp_queue_full(q), 0);
  ASSERT_OK(mp_queue_destroy(q));
}

TEST(queue_bad_handles) {
  mp_queue_t *q = mkq(0, 4096, 0);
  void *m = NULL;
  size_t len = 0, n;
  char buf[16];
  struct iovec iov = {buf, 4};
  ASSERT_ERR(mp_queue_put(NULL, "x", 1, 0), MP_EINVAL);
  ASSERT_ERR(mp_queue_put(q, NULL, 1, 0), MP_EINVAL);
  ASSERT_ERR(mp_queue_put(q, "x", 1, -2), MP_EINVAL);
  ASSERT_ERR(mp_queue_put(q, buf, 4097, 0), MP_EMSGSIZE);
  ASSERT_ERR(mp_queue_get(NULL, &m, &len, 0), MP_EINVAL);
  ASSERT_ERR(mp_queue_get(q, NULL, &len, 0), MP_EINVAL);
  ASSERT_ERR(mp_queue_get(q, &m, NULL, 0), MP_EINVAL);
  ASSERT_ERR(mp_queue_get(q, &m, &len, -7), MP_EINVAL);
  ASSERT_ERR(mp_queue_get_into(NULL, buf, 16, &len, 0), MP_EINVAL);
  ASSERT_ERR(mp_queue_get_into(q, NULL, 16, &len, 0), MP_EINVAL);
  ASSERT_ERR(mp_queue_get_into(q, buf, 16, NULL, 0), MP_EINVAL);
  ASSERT_ERR(mp_queue_put_many(NULL, &iov, 1, 0), MP_EINVAL);
  ASSERT_ERR(mp_queue_put_many(q, NULL, 1, 0), MP_EINVAL);
  ASSERT_ERR(mp_queue_put_many(q, &iov, 0, 0), MP_EINVAL);
  ASSERT_ERR(mp_queue_put_many(q, &iov, 1, -3), MP_EINVAL);
  struct iovec bad = {NULL, 3};
  ASSERT_ERR(mp_queue_put_many(q, &bad, 1, 0), MP_EINVAL);
  ASSERT_ERR(mp_queue_get_many(NULL, buf, 16, &iov, 1, 0), MP_EINVAL);
  ASSERT_ERR(mp_queue_get_many(q, buf, 16, NULL, 1, 0), MP_EINVAL);
  ASSERT_ERR(mp_queue_get_many(q, buf, 16, &iov, 0, 0), MP_EINVAL);
  ASSERT_ERR(mp_queue_get_many(q, NULL, 16, &iov, 1, 0), MP_EINVAL);
  ASSERT_ERR(mp_queue_qsize(NULL, &n), MP_EINVAL);
  ASSERT_ERR(mp_queue_qsize(q, NULL), MP_EINVAL);
  ASSERT_ERR(mp_queue_empty(NULL), MP_EINVAL);
  ASSERT_ERR(mp_queue_full(NULL), MP_EINVAL);
  ASSERT_ERR(mp_queue_close(NULL), MP_EINVAL);
  ASSERT_ERR(mp_queue_task_done(NULL), MP_EINVAL);
  ASSERT_ERR(mp_queue_join(NULL, 0), MP_EINVAL);
  ASSERT_ERR(mp_queue_task_done(q), MP_ENOTSUP);
  ASSERT_ERR(mp_queue_join(q, 0), MP_ENOTSUP);
  int fd;
  ASSERT_ERR(mp_queue_fd(NULL, &fd), MP_EINVAL);
  ASSERT_ERR(mp_queue_fd(q, NULL), MP_EINVAL);
  ASSERT_EQ(mp_queue_waitable(NULL).fd, -1);
  ASSERT_ERR(mp_queue_open(NULL, "/x"), MP_EINVAL);
  mp_queue_t *q2 = NULL;
  ASSERT_ERR(mp_queue_open(&q2, NULL), MP_EINVAL);
  ASSERT_ERR(mp_queue_open(&q2, "b/ad"), MP_EINVAL);
  ASSERT_ERR(mp_queue_open(&q2, "/mp-no-such-queue-here"), MP_ENOENT);
  /* Nothing of the failed calls changed the queue. */
  ASSERT_OK(mp_queue_qsize(q, &n));
  ASSERT_EQ(n, 0);
  ASSERT_OK(mp_queue_destroy(q));
}

TEST(queue_fifo_order_and_content) {
  mp_queue_t *q = mkq(0, 1 << 20, 0);
  unsigned char buf[8192];
  for (uint32_t i = 0; i < 3000; i++) {
    size_t l = msg_make(buf, 1, i, sizeof buf);
    ASSERT_OK(mp_queue_put(q, buf, l, 0));
  }
  size_t n;
  ASSERT_OK(mp_queue_qsize(q, &n));
  ASSERT_EQ(n, 3000);
  ASSERT_EQ(mp_queue_empty(q), 0);
  for (uint32_t i = 0; i < 3000; i++) {
    void *m;
    size_t len;
    msg_hdr_t h;
    if (i % 2) {
      ASSERT_OK(mp_queue_get(q, &m, &len, 0));
    } else {
      m = malloc(sizeof buf);
      ASSERT_OK(mp_queue_get_into(q, m, sizeof buf, &len, 0));
    }
    ASSERT(msg_check(m, len, &h, sizeof buf));
    ASSERT_EQ(h.seq, i);
    free(m);
  }
  ASSERT_EQ(mp_queue_empty(q), 1);
  /* Zero-length messages are messages. */
  ASSERT_OK(mp_queue_put(q, NULL, 0, 0));
  ASSERT_OK(mp_queue_put(q, "", 0, 0));
  void *m = NULL;
  size_t len = 99;
  ASSERT_OK(mp_queue_get(q, &m, &len, 0));
  ASSERT(m != NULL);
  ASSERT_EQ(len, 0);
  free(m);
  ASSERT_OK(mp_queue_get_into(q, NULL, 0, &len, 0));
  ASSERT_EQ(len, 0);
  ASSERT_ERR(mp_queue_get(q, &m, &len, 0), MP_EEMPTY);
  ASSERT_OK(mp_queue_destroy(q));
}

TEST(queue_get_into_too_short_keeps_message) {
  mp_queue_t *q = mkq(0, 0, 0);
  ASSERT_OK(mp_queue_put(q, "hello world", 11, 0));
  ASSERT_OK(mp_queue_put(q, "x", 1, 0));
  char buf[32];
  size_t len = 0;
  ASSERT_ERR(mp_queue_get_into(q, buf, 5, &len, 0), MP_ETOOSHORT);
  ASSERT_EQ(len, 11);
  size_t n;
  ASSERT_OK(mp_queue_qsize(q, &n));
  ASSERT_EQ(n, 2);
  ASSERT_OK(mp_queue_get_into(q, buf, len, &len, 0));
  ASSERT(memcmp(buf, "hello world", 11) == 0);
  ASSERT_OK(mp_queue_get_into(q, buf, sizeof buf, &len, 0));
  ASSERT_EQ(len, 1);
  ASSERT_OK(mp_queue_destroy(q));
}

TEST(queue_capacity_bytes) {
  mp_queue_t *q = mkq(0, 1000, 0);
  static char big[2000];
  ASSERT_ERR(mp_queue_put(q, big, 1001, 0), MP_EMSGSIZE);
  ASSERT_OK(mp_queue_put(q, big, 1000, 0)); /* one full-size message fits */
  ASSERT_ERR(mp_queue_put(q, big, 0, 0), MP_EFULL);
  size_t len;
  ASSERT_OK(mp_queue_get_into(q, big, sizeof big, &len, 0));
  ASSERT_EQ(len, 1000);
  ASSERT_OK(mp_queue_put(q, big, 500, 0));
  ASSERT_ERR(mp_queue_put(q, big, 500, 0), MP_EFULL); /* bytes, not count */
  ASSERT_OK(mp_queue_put(q, big, 400, 0));
  ASSERT_EQ(mp_queue_full(q), 0); /* no maxsize: never "full" by count */
  ASSERT_OK(mp_queue_destroy(q));
}

/* Takes the next message without waiting and checks it is message `*got`
 * of producer 2 or 3 (as put by the two tests below); false when empty. */
static bool get_next(mp_queue_t *q, unsigned char *buf, size_t cap,
                     uint32_t *got) {
  size_t len;
  msg_hdr_t h;
  int r = mp_queue_get_into(q, buf, cap, &len, 0);
  if (r == MP_EEMPTY)
    return false;
  ASSERT_OK(r);
  ASSERT(msg_check(buf, len, &h, cap));
  ASSERT_EQ(h.seq, *got);
  (*got)++;
  return true;
}

TEST(queue_grows_and_wraps) {
  /* Backlog far beyond the first ring, with the data wrapped when it grows. */
  mp_queue_t *q = mkq(0, 32 << 20, 0);
  unsigned char buf[8192];
  uint32_t put = 0, got = 0;
  for (int round = 0; round < 6; round++) {
    for (int k = 0; k < 1500 * (round + 1); k++) {
      size_t l = msg_make(buf, 2, put, sizeof buf);
      ASSERT_OK(mp_queue_put(q, buf, l, 0));
      put++;
    }
    for (int k = 0; k < 700 * (round + 1); k++)
      ASSERT(get_next(q, buf, sizeof buf, &got));
  }
  while (get_next(q, buf, sizeof buf, &got)) {
  }
  ASSERT_EQ(got, put);
  ASSERT_OK(mp_queue_destroy(q));
}

TEST(queue_shrinks_and_regrows) {
  /* A backlog of megabytes, drained to a little, again and again: the ring
   * grows, then shrinks back with live (wrapped) messages in it, then grows
   * from there, and every message comes out once, in order, intact. */
  mp_queue_t *q = mkq(0, 32 << 20, 0);
  static unsigned char buf[8192];
  uint32_t put = 0, got = 0;
  for (int round = 0; round < 8; round++) {
    int n = round % 2 ? 9000 : 30000 + 777 * round;
    for (int k = 0; k < n; k++) {
      size_t l = msg_make(buf, 3, put, sizeof buf);
      ASSERT_OK(mp_queue_put(q, buf, l, k % 3 ? 0 : MP_FOREVER));
      put++;
    }
    /* Leave a backlog that varies from round to round. */
    while (put - got > (uint32_t)(round * 97 + 13))
      ASSERT(get_next(q, buf, sizeof buf, &got));
  }
  while (get_next(q, buf, sizeof buf, &got)) {
  }
  ASSERT_EQ(got, put);
  ASSERT_OK(mp_queue_destroy(q));
}

TEST(queue_open_while_it_grows_and_shrinks) {
  /* mp_queue_open checks the header's state against the object's size. A
   * process that grows and shrinks the ring and moves both counters all
   * the while must not make the queue look corrupt to it. */
  mp_queue_t *q = mkq(0, 32 << 20, 0);
  char name[64];
  snprintf(name, sizeof name, "%s", mp_queue_name(q));
  pid_t pid = fork();
  if (pid == 0) {
    static unsigned char buf[8192];
    uint32_t put = 0, got = 0;
    for (int round = 0; round < 100000; round++) {
      int n = round % 2 ? 3000 : 20000 + 777 * (round % 8);
      for (int k = 0; k < n; k++) {
        size_t l = msg_make(buf, 3, put, sizeof buf);
        int r = mp_queue_put(q, buf, l, 0);
        if (r == MP_ECLOSED)
          _exit(0);
        if (r != 0)
          _exit(1);
        put++;
      }
      while (put - got > (uint32_t)(round % 7) * 50) {
        size_t len;
        msg_hdr_t h;
        int r = mp_queue_get_into(q, buf, sizeof buf, &len, 0);
        if (r == MP_ECLOSED)
          _exit(0);
        if (r != 0 || !msg_check(buf, len, &h, sizeof buf) || h.seq != got)
          _exit(2);
        got++;
      }
    }
    _exit(3); /* never closed */
  }
  int refused = 0;
  for (int i = 0; i < 200; i++) {
    mp_queue_t *o = NULL;
    if (mp_queue_open(&o, name) == 0)
      ASSERT_OK(mp_queue_destroy(o));
    else
      refused++;
  }
  ASSERT_OK(mp_queue_close(q));
  mpt_wait_ok(pid);
  ASSERT_EQ(refused, 0);
  ASSERT_OK(mp_queue_destroy(q));
}

TEST(queue_timed_puts_grow_past_soft_size) {
  /* Puts that may wait a little, with nobody taking: past the ring's soft
   * size each put first waits for consumers (never past its own deadline),
   * then grows the ring, so the capacity is there for them too. */
  mp_queue_t *q = mkq(0, 16 << 20, 0);
  static unsigned char buf[4096];
  uint32_t put = 0, got = 0;
  for (; put < 1500; put++) { /* about 6 MiB */
    memset(buf, (int)(put & 0xff), sizeof buf);
    ASSERT_OK(mp_queue_put(q, buf, sizeof buf, put % 2 ? 1 : 30));
  }
  size_t len;
  while (mp_queue_get_into(q, buf, sizeof buf, &len, 0) == 0) {
    ASSERT_EQ(len, sizeof buf);
    ASSERT_EQ(buf[0], got & 0xff);
    ASSERT_EQ(buf[sizeof buf - 1], got & 0xff);
    got++;
  }
  ASSERT_EQ(got, put);
  ASSERT_OK(mp_queue_destroy(q));
}

/* ---- blocking and timeouts --------------------------------------------- */

TEST(queue_nonblocking_and_timeouts) {
  mp_queue_t *q = mkq(3, 0, 0);
  void *m;
  size_t len;
  ASSERT_ERR(mp_queue_get(q, &m, &len, 0), MP_EEMPTY);
  uint64_t t0 = mpt_now_ms();
  ASSERT_ERR(mp_queue_get(q, &m, &len, 150), MP_EEMPTY);
  ASSERT(mpt_now_ms() - t0 >= 150);
  for (int i = 0; i < 3; i++)
    ASSERT_OK(mp_queue_put(q, "abc", 3, 0));
  ASSERT_EQ(mp_queue_full(q), 1);
  ASSERT_ERR(mp_queue_put(q, "abc", 3, 0), MP_EFULL);
  t0 = mpt_now_ms();
  ASSERT_ERR(mp_queue_put(q, "abc", 3, 120), MP_EFULL);
  ASSERT(mpt_now_ms() - t0 >= 120);
  size_t n;
  ASSERT_OK(mp_queue_qsize(q, &n));
  ASSERT_EQ(n, 3);
  ASSERT_OK(mp_queue_destroy(q));
}

TEST(queue_blocking_wakes_across_processes) {
  mp_queue_t *q = mkq(1, 0, 0);
  /* The child starts its 100 ms only once the parent has read its clock, so
   * a parent scheduled late cannot see less than 100 ms of blocking. */
  int go[2];
  ASSERT(pipe(go) == 0);
  pid_t pid = fork();
  if (pid == 0) {
    char c;
    close(go[1]);
    if (read(go[0], &c, 1) != 1)
      _exit(3);
    mpt_sleep_ms(100);
    if (mp_queue_put(q, "first", 5, MP_FOREVER) != 0)
      _exit(1);
    /* Blocks until the parent takes "first"... */
    if (mp_queue_put(q, "second", 6, MP_FOREVER) != 0)
      _exit(2);
    _exit(0);
  }
  close(go[0]);
  uint64_t t0 = mpt_now_ms();
  ASSERT(write(go[1], "g", 1) == 1);
  close(go[1]);
  char buf[16];
  size_t len;
  ASSERT_OK(mp_queue_get_into(q, buf, sizeof buf, &len, MP_FOREVER));
  ASSERT(mpt_now_ms() - t0 >= 100);
  ASSERT_EQ(len, 5);
  ASSERT_OK(mp_queue_get_into(q, buf, sizeof buf, &len, 5000));
  ASSERT_EQ(len, 6);
  ASSERT(memcmp(buf, "second", 6) == 0);
  mpt_wait_ok(pid);
  ASSERT_OK(mp_queue_destroy(q));
}

/* ---- waiting that adapts --------------------------------------------- */

/* A consumer learns, per thread, how long to spin before sleeping and how
 * long to let a stream build up before taking from it; a request-reply
 * exchange must unlearn the second and a sleeping partner the first. The
 * child takes a stream (in order), answers single messages, then takes a
 * stream again; the parent checks every answer. With `stress`, a CPU hog
 * runs beside them and a 1 ms signal storm hits the parent. */
#define ADAPT_STREAM 100000u
#define ADAPT_REPLIES 3000u

static void adapt_child(mp_queue_t *there, mp_queue_t *back) {
  unsigned char buf[256];
  size_t len;
  for (int phase = 0; phase < 3; phase++) {
    uint32_t n = phase == 1 ? ADAPT_REPLIES : ADAPT_STREAM;
    for (uint32_t i = 0; i < n; i++) {
      msg_hdr_t h;
      if (mp_queue_get_into(there, buf, sizeof buf, &len, 20000) != 0 ||
          !msg_check(buf, len, &h, sizeof buf) || h.producer != (uint32_t)phase ||
          h.seq != i)
        _exit(10 + phase);
      if (phase == 1) {
        h.seq = ~i;
        if (mp_queue_put(back, &h, sizeof h, 20000) != 0)
          _exit(20);
      }
    }
    if (phase != 1 && mp_queue_put(back, "end", 3, 20000) != 0)
      _exit(21);
  }
  _exit(0);
}

static void adapt_run(bool stress) {
  mp_queue_t *there = mkq(0, 0, 0), *back = mkq(0, 0, 0);
  pid_t hog = stress ? mpt_hog_start() : 0;
  pid_t pid = fork();
  ASSERT(pid >= 0);
  if (pid == 0)
    adapt_child(there, back);
  if (stress)
    mpt_storm_start(1000, true);
  unsigned char buf[256];
  size_t len;
  for (uint32_t phase = 0; phase < 3; phase++) {
    uint32_t n = phase == 1 ? ADAPT_REPLIES : ADAPT_STREAM;
    for (uint32_t i = 0; i < n; i++) {
      size_t l = msg_make(buf, phase, i, sizeof buf);
      ASSERT_OK(mp_queue_put(there, buf, l, 20000));
      if (phase == 1) {
        msg_hdr_t h;
        ASSERT_OK(mp_queue_get_into(back, &h, sizeof h, &len, 20000));
        ASSERT_EQ(len, sizeof h);
        ASSERT_EQ(h.producer, 1);
        ASSERT_EQ(h.seq, ~i);
      }
    }
    if (phase != 1) {
      ASSERT_OK(mp_queue_get_into(back, buf, sizeof buf, &len, 20000));
      ASSERT(len == 3 && memcmp(buf, "end", 3) == 0);
    }
  }
  if (stress) {
    mpt_storm_stop();
    mpt_hog_stop(hog);
  }
  mpt_wait_ok(pid);
  size_t left;
  ASSERT_OK(mp_queue_qsize(there, &left));
  ASSERT_EQ(left, 0);
  ASSERT_OK(mp_queue_qsize(back, &left));
  ASSERT_EQ(left, 0);
  ASSERT_OK(mp_queue_destroy(there));
  ASSERT_OK(mp_queue_destroy(back));
}

TEST(queue_stream_then_replies_then_stream) { adapt_run(false); }

TEST(queue_stream_then_replies_under_hog_and_storm) { adapt_run(true); }

/* ---- concurrency ----------------------------------------------------- */

typedef struct {
  mp_queue_t *q;
  uint32_t id;
  uint32_t count;
  _Atomic uint32_t *seen; /* per (producer, seq) */
  uint32_t producers;
  _Atomic int *failures;
  bool batch;
} worker_t;

static void produce(worker_t *w) {
  unsigned char buf[4096];
  for (uint32_t i = 0; i < w->count;) {
    if (w->batch && i + 8 <= w->count) {
      static __thread unsigned char bb[8][4096];
      struct iovec iov[8];
      for (int k = 0; k < 8; k++) {
        iov[k].iov_base = bb[k];
        iov[k].iov_len = msg_make(bb[k], w->id, i + (uint32_t)k, sizeof bb[k]);
      }
      int r = mp_queue_put_many(w->q, iov, 8, MP_FOREVER);
      if (r != 8)
        atomic_fetch_add(w->failures, 1);
      i += 8;
      continue;
    }
    size_t l = msg_make(buf, w->id, i, sizeof buf);
    if (mp_queue_put(w->q, buf, l, MP_FOREVER) != 0)
      atomic_fetch_add(w->failures, 1);
    i++;
  }
}

/* Consume until the queue is closed and drained. Checks each message's
 * content, that it arrives once, and FIFO order per producer. */
static void consume(worker_t *w) {
  static __thread unsigned char buf[1 << 16];
  uint32_t last[16];
  for (int i = 0; i < 16; i++)
    last[i] = UINT32_MAX;
  for (;;) {
    struct iovec iov[16];
    int r;
    if (w->batch) {
      r = mp_queue_get_many(w->q, buf, sizeof buf, iov, 16, MP_FOREVER);
    } else {
      size_t len;
      r = mp_queue_get_into(w->q, buf, sizeof buf, &len, MP_FOREVER);
      iov[0].iov_base = buf;
      iov[0].iov_len = len;
      r = r == 0 ? 1 : r;
    }
    if (r == MP_ECLOSED)
      return;
    if (r < 0) {
      atomic_fetch_add(w->failures, 1);
      return;
    }
    for (int k = 0; k < r; k++) {
      msg_hdr_t h;
      if (((uintptr_t)iov[k].iov_base - (uintptr_t)buf) % 8 != 0 ||
          !msg_check(iov[k].iov_base, iov[k].iov_len, &h, 4096) ||
          h.producer >= w->producers || h.seq >= w->count ||
          (last[h.producer] != UINT32_MAX && h.seq <= last[h.producer])) {
        atomic_fetch_add(w->failures, 1);
        continue;
      }
      last[h.producer] = h.seq;
      atomic_fetch_add(&w->seen[h.producer * w->count + h.seq], 1);
    }
  }
}

static void *produce_thread(void *a) {
  produce(a);
  return NULL;
}
static void *consume_thread(void *a) {
  consume(a);
  return NULL;
}

static bool mpmc_polled; /* make the queue polled first */

static void mpmc(int producers, int consumers, bool threads, bool batch,
                 size_t maxsize, size_t capacity, uint32_t count) {
  mp_queue_t *q = mkq(maxsize, capacity, 0);
  int pfd = -1;
  if (mpmc_polled)
    ASSERT_OK(mp_queue_fd(q, &pfd));
  size_t shared_len = sizeof(_Atomic int) +
                      (size_t)producers * count * sizeof(_Atomic uint32_t);
  void *shared = mmap(NULL, shared_len, PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT(shared != MAP_FAILED);
  _Atomic int *failures = shared;
  _Atomic uint32_t *seen = (void *)((char *)shared + 8);
  worker_t w[16];
  pthread_t tid[16];
  pid_t pid[16];
  for (int i = 0; i < producers + consumers; i++) {
    w[i] = (worker_t){q,
                      (uint32_t)(i < producers ? i : 0),
                      count,
                      seen,
                      (uint32_t)producers,
                      failures,
                      batch};
  }
  for (int i = 0; i < producers + consumers; i++) {
    void *(*fn)(void *) = i < producers ? produce_thread : consume_thread;
    if (threads) {
      ASSERT_EQ(pthread_create(&tid[i], NULL, fn, &w[i]), 0);
    } else {
      pid[i] = fork();
      ASSERT(pid[i] >= 0);
      if (pid[i] == 0) {
        fn(&w[i]);
        _exit(0);
      }
    }
  }
  for (int i = 0; i < producers; i++) {
    if (threads)
      pthread_join(tid[i], NULL);
    else
      mpt_wait_ok(pid[i]);
  }
  ASSERT_OK(mp_queue_close(q));
  for (int i = producers; i < producers + consumers; i++) {
    if (threads)
      pthread_join(tid[i], NULL);
    else
      mpt_wait_ok(pid[i]);
  }
  ASSERT_EQ(atomic_load(failures), 0);
  for (size_t i = 0; i < (size_t)producers * count; i++)
    if (atomic_load(&seen[i]) != 1)
      mpt_fail(__FILE__, __LINE__, "message %zu/%zu seen %u times", i / count,
               i % count, atomic_load(&seen[i]));
  size_t n;
  ASSERT_OK(mp_queue_qsize(q, &n));
  ASSERT_EQ(n, 0);
  if (pfd >= 0) {
    /* Drained and closed: readable for the close alone. */
    struct pollfd pl = {.fd = pfd, .events = POLLIN};
    ASSERT_EQ(poll(&pl, 1, 0), 1);
    char b[8];
    ASSERT_EQ(read(pfd, b, sizeof b), 1); /* exactly one byte */
  }
  munmap(shared, shared_len);
  ASSERT_OK(mp_queue_destroy(q));
}

TEST(queue_mpmc_processes) {
  mpmc(3, 3, false, false, 0, 1 << 16, 20000);
}

TEST(queue_mpmc_processes_bounded) {
  mpmc(4, 2, false, false, 5, 0, 10000);
}

/* Polled queues take both locks on every operation and keep the FIFO. */
TEST(queue_mpmc_polled) {
  mpmc_polled = true;
  mpmc(2, 2, false, false, 0, 1 << 16, 20000);
  mpmc(2, 2, true, true, 3, 0, 8000);
}

/* The ring grows while consumers read from it. */
TEST(queue_mpmc_growing_ring) {
  mpmc(1, 1, false, false, 0, 0, 150000);
  mpmc(2, 2, true, false, 0, 0, 60000);
  mpmc(2, 1, false, true, 0, 0, 60000);
}

TEST(queue_mpmc_threads) {
  mpmc(3, 4, true, false, 0, 1 << 15, 20000);
}

TEST(queue_mpmc_batches) {
  mpmc(2, 2, false, true, 0, 1 << 16, 20000);
  mpmc(2, 3, true, true, 7, 0, 8000);
}

static void *put_n_thread(void *a) {
  mp_queue_t *q = a;
  for (int i = 0; i < 5000; i++)
    if (mp_queue_put(q, &i, sizeof i, MP_FOREVER) != 0)
      return (void *)1;
  return NULL;
}

TEST(queue_qsize_exact_under_concurrency) {
  mp_queue_t *q = mkq(0, 0, 0);
  pthread_t t[4];
  pid_t pid[2];
  for (int i = 0; i < 2; i++) {
    pid[i] = fork();
    if (pid[i] == 0)
      _exit(put_n_thread(q) ? 1 : 0);
  }
  for (int i = 0; i < 4; i++)
    ASSERT_EQ(pthread_create(&t[i], NULL, put_n_thread, q), 0);
  for (int i = 0; i < 4; i++) {
    void *r;
    pthread_join(t[i], &r);
    ASSERT(r == NULL);
  }
  for (int i = 0; i < 2; i++)
    mpt_wait_ok(pid[i]);
  size_t n;
  ASSERT_OK(mp_queue_qsize(q, &n));
  ASSERT_EQ(n, 30000);
  /* Take some in a child: the count is shared. */
  pid_t c = fork();
  if (c == 0) {
    int v;
    size_t len;
    for (int i = 0; i < 12345; i++)
      if (mp_queue_get_into(q, &v, sizeof v, &len, 0) != 0)
        _exit(1);
    _exit(0);
  }
  mpt_wait_ok(c);
  ASSERT_OK(mp_queue_qsize(q, &n));
  ASSERT_EQ(n, 30000 - 12345);
  ASSERT_OK(mp_queue_destroy(q));
}

/* ---- close, join -------------------------------------------------------- */

static void *blocked_get(void *a) {
  void *m;
  size_t len;
  return (void *)(intptr_t)mp_queue_get(a, &m, &len, MP_FOREVER);
}

static void *blocked_put(void *a) {
  return (void *)(intptr_t)mp_queue_put(a, "zz", 2, MP_FOREVER);
}

TEST(queue_close_semantics) {
  mp_queue_t *q = mkq(0, 0, 0);
  pthread_t t;
  ASSERT_EQ(pthread_create(&t, NULL, blocked_get, q), 0);
  mpt_sleep_ms(50);
  ASSERT_OK(mp_queue_close(q));
  void *r;
  pthread_join(t, &r);
  ASSERT_EQ((intptr_t)r, MP_ECLOSED);
  ASSERT_OK(mp_queue_close(q)); /* twice is fine */
  ASSERT_OK(mp_queue_destroy(q));

  q = mkq(2, 0, 0);
  ASSERT_OK(mp_queue_put(q, "a", 1, 0));
  ASSERT_OK(mp_queue_put(q, "b", 1, 0));
  ASSERT_EQ(pthread_create(&t, NULL, blocked_put, q), 0);
  mpt_sleep_ms(50);
  ASSERT_OK(mp_queue_close(q));
  pthread_join(t, &r);
  ASSERT_EQ((intptr_t)r, MP_ECLOSED);
  ASSERT_ERR(mp_queue_put(q, "c", 1, 0), MP_ECLOSED);
  struct iovec iov = {"d", 1};
  ASSERT_ERR(mp_queue_put_many(q, &iov, 1, 0), MP_ECLOSED);
  /* Gets drain what is left, then report the close. */
  char c;
  size_t len;
  ASSERT_OK(mp_queue_get_into(q, &c, 1, &len, 0));
  ASSERT_EQ(c, 'a');
  ASSERT_OK(mp_queue_get_into(q, &c, 1, &len, MP_FOREVER));
  ASSERT_EQ(c, 'b');
  ASSERT_ERR(mp_queue_get_into(q, &c, 1, &len, MP_FOREVER), MP_ECLOSED);
  ASSERT_ERR(mp_queue_get_many(q, &c, 1, &iov, 1, 0), MP_ECLOSED);
  ASSERT_OK(mp_queue_destroy(q));
}

TEST(queue_task_done_and_join) {
  mp_queue_t *q = mkq(0, 0, MP_QUEUE_JOINABLE);
  ASSERT_OK(mp_queue_join(q, 0)); /* nothing put: done */
  ASSERT_ERR(mp_queue_task_done(q), MP_EINVAL);
  for (int i = 0; i < 50; i++)
    ASSERT_OK(mp_queue_put(q, &i, sizeof i, 0));
  uint64_t t0 = mpt_now_ms();
  ASSERT_ERR(mp_queue_join(q, 100), MP_ETIMEDOUT);
  ASSERT(mpt_now_ms() - t0 >= 100);
  /* task_done without a get is more than taken. */
  ASSERT_ERR(mp_queue_task_done(q), MP_EINVAL);
  pid_t pid = fork();
  if (pid == 0) {
    int v;
    size_t len;
    for (int i = 0; i < 50; i++) {
      if (mp_queue_get_into(q, &v, sizeof v, &len, MP_FOREVER) != 0 || v != i)
        _exit(1);
      mpt_sleep_ms(1);
      if (mp_queue_task_done(q) != 0)
        _exit(2);
    }
    _exit(mp_queue_task_done(q) == MP_EINVAL ? 0 : 3);
  }
  ASSERT_OK(mp_queue_join(q, MP_FOREVER));
  mpt_wait_ok(pid);
  ASSERT_OK(mp_queue_join(q, 0));
  ASSERT_OK(mp_queue_destroy(q));
}

/* ---- batches ------------------------------------------------------------ */

TEST(queue_put_many_get_many) {
  mp_queue_t *q = mkq(5, 0, 0);
  struct iovec in[8];
  char txt[8][8];
  for (int i = 0; i < 8; i++) {
    snprintf(txt[i], sizeof txt[i], "m%d", i);
    in[i].iov_base = txt[i];
    in[i].iov_len = strlen(txt[i]) + (size_t)(i % 3);
  }
  /* Only 5 fit: a short count, the rest not put. */
  ASSERT_EQ(mp_queue_put_many(q, in, 8, 0), 5);
  ASSERT_ERR(mp_queue_put_many(q, in, 8, 30), MP_EFULL);
  static char big[100];
  struct iovec huge = {big, MP_QUEUE_DEFAULT_CAPACITY + 1};
  struct iovec mix[2] = {{big, 1}, huge};
  ASSERT_ERR(mp_queue_put_many(q, mix, 2, 0), MP_EMSGSIZE);
  char buf[64];
  struct iovec out[8];
  /* The first message does not fit: it stays. */
  ASSERT_ERR(mp_queue_get_many(q, buf, 1, out, 8, 0), MP_ETOOSHORT);
  ASSERT_EQ(out[0].iov_len, 2);
  /* Room for two (8-aligned): 2 taken. */
  ASSERT_EQ(mp_queue_get_many(q, buf, 11, out, 8, 0), 2);
  ASSERT_EQ(out[0].iov_len, 2);
  ASSERT(out[0].iov_base == buf);
  ASSERT(memcmp(out[0].iov_base, "m0", 2) == 0);
  ASSERT(out[1].iov_base == buf + 8);
  ASSERT_EQ(out[1].iov_len, 3);
  ASSERT(memcmp(out[1].iov_base, "m1", 2) == 0);
  ASSERT_EQ(mp_queue_get_many(q, buf, sizeof buf, out, 2, 0), 2);
  ASSERT(memcmp(out[0].iov_base, "m2", 2) == 0);
  ASSERT_EQ(mp_queue_get_many(q, buf, sizeof buf, out, 8, 0), 1);
  ASSERT(memcmp(out[0].iov_base, "m4", 2) == 0);
  ASSERT_ERR(mp_queue_get_many(q, buf, sizeof buf, out, 8, 0), MP_EEMPTY);
  uint64_t t0 = mpt_now_ms();
  ASSERT_ERR(mp_queue_get_many(q, buf, sizeof buf, out, 8, 60), MP_EEMPTY);
  ASSERT(mpt_now_ms() - t0 >= 60);
  /* A blocked put_many finishes as a consumer makes room. */
  pid_t pid = fork();
  if (pid == 0) {
    char b[16];
    size_t len;
    mpt_sleep_ms(50);
    for (int i = 0; i < 8; i++)
      if (mp_queue_get_into(q, b, sizeof b, &len, 5000) != 0 ||
          memcmp(b, txt[i], 2) != 0)
        _exit(1);
    _exit(0);
  }
  ASSERT_EQ(mp_queue_put_many(q, in, 8, MP_FOREVER), 8);
  mpt_wait_ok(pid);
  ASSERT_OK(mp_queue_destroy(q));
}

/* ---- sharing ------------------------------------------------------------ */

TEST(queue_open_by_name) {
  mp_queue_t *q = mkq(0, 0, MP_QUEUE_JOINABLE);
  char name[MP_QUEUE_NAME_MAX + 1];
  snprintf(name, sizeof name, "%s", mp_queue_name(q));
  pid_t pid = fork();
  if (pid == 0) {
    /* A fresh handle from the name alone, as an unrelated process would. */
    mp_queue_t *o = NULL;
    if (mp_queue_open(&o, name) != 0)
      _exit(1);
    char buf[16];
    size_t len;
    if (mp_queue_get_into(o, buf, sizeof buf, &len, 5000) != 0 || len != 4 ||
        memcmp(buf, "ping", 4) != 0)
      _exit(2);
    if (mp_queue_task_done(o) != 0 || mp_queue_put(o, "pong", 4, 0) != 0)
      _exit(3);
    mp_queue_destroy(o);
    _exit(0);
  }
  ASSERT_OK(mp_queue_put(q, "ping", 4, 0));
  mpt_wait_ok(pid);
  char buf[16];
  size_t len;
  ASSERT_OK(mp_queue_get_into(q, buf, sizeof buf, &len, 0));
  ASSERT(memcmp(buf, "pong", 4) == 0);
  /* The opener's destroy left the name in place. */
  ASSERT(mpt_shm_exists(name));
  mp_queue_t *o = NULL;
  ASSERT_OK(mp_queue_open(&o, name));
  ASSERT_OK(mp_queue_put(o, "x", 1, 0));
  ASSERT_OK(mp_queue_destroy(q));
  ASSERT(!mpt_shm_exists(name));
  /* An open handle outlives the name. */
  ASSERT_OK(mp_queue_get_into(o, buf, sizeof buf, &len, 0));
  ASSERT_EQ(buf[0], 'x');
  ASSERT_OK(mp_queue_destroy(o));
  ASSERT_ERR(mp_queue_open(&o, name), MP_ENOENT);
}

TEST(queue_open_rejects_non_queue) {
  char name[64];
  snprintf(name, sizeof name, "/mp-test-notq-%d", (int)getpid());
  int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  ASSERT(fd >= 0);
  ASSERT_EQ(ftruncate(fd, 8192), 0);
  close(fd);
  mp_queue_t *q = NULL;
  ASSERT_ERR(mp_queue_open(&q, name), MP_EINVAL);
  shm_unlink(name);
}

static bool wait_gone(const char *name) {
  for (int i = 0; i < 400; i++) {
    if (!mpt_shm_exists(name))
      return true;
    mpt_sleep_ms(10);
  }
  return false;
}

TEST(queue_no_leftovers_after_creator_sigkill) {
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  pid_t pid = fork();
  if (pid == 0) {
    mp_queue_t *q;
    if (mp_queue_create(&q, NULL) != 0)
      _exit(1);
    char name[64];
    snprintf(name, sizeof name, "%s", mp_queue_name(q));
    int fd;
    mp_queue_fd(q, &fd);
    if (write(p[1], name, sizeof name) != sizeof name)
      _exit(2);
    pause();
    _exit(0);
  }
  close(p[1]);
  char name[64];
  ASSERT_EQ(read(p[0], name, sizeof name), (ssize_t)sizeof name);
  close(p[0]);
  char fifo[80];
  snprintf(fifo, sizeof fifo, "%s.p", name);
  ASSERT(mpt_shm_exists(name));
  ASSERT(mpt_shm_exists(fifo));
  mpt_kill_reap(pid);
  ASSERT(wait_gone(name));
  ASSERT(wait_gone(fifo));
}

/* ---- polling --------------------------------------------------------------
 */

static bool readable(int fd, int ms) {
  struct pollfd pfd = {.fd = fd, .events = POLLIN};
  return poll(&pfd, 1, ms) == 1 && (pfd.revents & POLLIN);
}

TEST(queue_poll_fd) {
  mp_queue_t *q = mkq(0, 0, 0);
  ASSERT_OK(mp_queue_put(q, "early", 5, 0));
  int fd, fd2;
  ASSERT_OK(mp_queue_fd(q, &fd));
  ASSERT_OK(mp_queue_fd(q, &fd2));
  ASSERT_EQ(fd, fd2);
  ASSERT(readable(fd, 0)); /* messages put before polling count */
  char buf[64];
  size_t len;
  ASSERT_OK(mp_queue_get_into(q, buf, sizeof buf, &len, 0));
  ASSERT(!readable(fd, 0));
  ASSERT_OK(mp_queue_put(q, "a", 1, 0));
  ASSERT_OK(mp_queue_put(q, "b", 1, 0));
  ASSERT(readable(fd, 0));
  ASSERT_OK(mp_queue_get_into(q, buf, sizeof buf, &len, 0));
  ASSERT(readable(fd, 0)); /* one left */
  ASSERT_OK(mp_queue_get_into(q, buf, sizeof buf, &len, 0));
  ASSERT(!readable(fd, 0));

  /* epoll, woken by a put from another process that opened by name. */
  int ep = epoll_create1(EPOLL_CLOEXEC);
  ASSERT(ep >= 0);
  struct epoll_event ev = {.events = EPOLLIN, .data.u32 = 7};
  ASSERT_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev), 0);
  ASSERT_EQ(epoll_wait(ep, &ev, 1, 0), 0);
  char name[64];
  snprintf(name, sizeof name, "%s", mp_queue_name(q));
  pid_t pid = fork();
  if (pid == 0) {
    mp_queue_t *o;
    if (mp_queue_open(&o, name) != 0)
      _exit(1);
    mpt_sleep_ms(80);
    mp_queue_put(o, "late", 4, 0);
    mp_queue_destroy(o);
    _exit(0);
  }
  uint64_t t0 = mpt_now_ms();
  ASSERT_EQ(epoll_wait(ep, &ev, 1, 10000), 1);
  ASSERT_EQ(ev.data.u32, 7);
  ASSERT(mpt_now_ms() - t0 >= 50);
  mpt_wait_ok(pid);
  ASSERT_OK(mp_queue_get_into(q, buf, sizeof buf, &len, 0));
  ASSERT_EQ(epoll_wait(ep, &ev, 1, 0), 0);
  /* Batches and close. */
  struct iovec iov[3] = {{"1", 1}, {"2", 1}, {"3", 1}};
  ASSERT_EQ(mp_queue_put_many(q, iov, 3, 0), 3);
  ASSERT(readable(fd, 0));
  struct iovec out[3];
  ASSERT_EQ(mp_queue_get_many(q, buf, sizeof buf, out, 3, 0), 3);
  ASSERT(!readable(fd, 0));
  ASSERT_OK(mp_queue_close(q));
  ASSERT(readable(fd, 0)); /* closed: a get will not block */
  close(ep);

  mp_waitable_t w = mp_queue_waitable(q);
  ASSERT_EQ(w.fd, fd);
  ASSERT(w.check != NULL);
  ASSERT(w.check(w.obj));
  ASSERT_OK(mp_queue_destroy(q));
}

TEST(queue_waitable_check) {
  mp_queue_t *q = mkq(0, 0, 0);
  mp_waitable_t w = mp_queue_waitable(q);
  ASSERT(w.fd >= 0);
  ASSERT(!w.check(w.obj));
  ASSERT(!readable(w.fd, 0));
  ASSERT_OK(mp_queue_put(q, "x", 1, 0));
  ASSERT(w.check(w.obj));
  ASSERT(readable(w.fd, 0));
  ASSERT_OK(mp_queue_destroy(q));
}

/* ---- crashes ---------------------------------------------------------------
 */

static uint32_t rnd(void) {
  static uint32_t s = 0;
  if (!s)
    s = (uint32_t)getpid() * 2654435761u;
  s ^= s << 13;
  s ^= s >> 17;
  s ^= s << 5;
  return s;
}

/* Read every ack a killed child wrote: a stream of uint32 values. */
static uint32_t read_acks(int fd, uint32_t *acks, uint32_t cap) {
  uint32_t n = 0;
  for (;;) {
    uint32_t v;
    ssize_t r = read(fd, &v, sizeof v);
    if (r < 0 && errno == EINTR)
      continue;
    if (r != (ssize_t)sizeof v)
      break;
    if (n < cap)
      acks[n++] = v;
  }
  return n;
}

/* Producers killed at random moments: every acknowledged message is there,
 * in order, and at most the one in flight besides. */
TEST(queue_crash_producers) {
  mp_queue_t *q = mkq(0, 1 << 15, 0);
  static uint32_t acks[1 << 16];
  static unsigned char buf[8192];
  uint32_t next = 0; /* first seq of the next round */
  for (int round = 0; round < 60; round++) {
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    pid_t pid = fork();
    if (pid == 0) {
      close(p[0]);
      for (uint32_t i = next;; i++) {
        size_t l = msg_make(buf, 0, i, sizeof buf);
        if (mp_queue_put(q, buf, l, MP_FOREVER) != 0)
          _exit(1);
        if (write(p[1], &i, sizeof i) != sizeof i)
          _exit(2);
      }
    }
    close(p[1]);
    /* Sometimes drain concurrently so the producer is mid-put, not blocked. */
    uint64_t until = mpt_now_ms() + rnd() % 20;
    while (round % 2 && mpt_now_ms() < until) {
      size_t len;
      msg_hdr_t h;
      if (mp_queue_get_into(q, buf, sizeof buf, &len, 0) == 0) {
        ASSERT(msg_check(buf, len, &h, sizeof buf));
        ASSERT_EQ(h.seq, next);
        next++;
      }
    }
    if (!(round % 2))
      usleep(rnd() % 3000);
    mpt_kill_reap(pid);
    uint32_t n = read_acks(p[0], acks, 1 << 16);
    close(p[0]);
    uint32_t last_acked = n ? acks[n - 1] : next - 1;
    /* Everything acknowledged and not yet taken must be there, in order. */
    size_t len;
    msg_hdr_t h;
    while (mp_queue_get_into(q, buf, sizeof buf, &len, 0) == 0) {
      ASSERT(msg_check(buf, len, &h, sizeof buf));
      ASSERT_EQ(h.seq, next);
      next++;
    }
    /* At most the message whose ack was not written yet. */
    ASSERT(next == last_acked + 1 || next == last_acked + 2);
  }
  /* Still fully usable. */
  ASSERT_OK(mp_queue_put(q, "ok", 2, 0));
  char b[4];
  size_t len;
  ASSERT_OK(mp_queue_get_into(q, b, sizeof b, &len, 1000));
  ASSERT_EQ(len, 2);
  ASSERT_OK(mp_queue_destroy(q));
}

/* Consumers killed at random moments: nothing put is lost except at most
 * the one message the killed consumer had taken but not reported. */
TEST(queue_crash_consumers) {
  mp_queue_t *q = mkq(0, 4 << 20, 0);
  static uint32_t acks[1 << 16];
  static unsigned char buf[8192];
  uint32_t total = 0, lost = 0;
  for (int round = 0; round < 60; round++) {
    uint32_t base = total;
    for (uint32_t i = 0; i < 300; i++) {
      size_t l = msg_make(buf, 0, base + i, sizeof buf);
      ASSERT_OK(mp_queue_put(q, buf, l, 0));
    }
    total += 300;
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    pid_t pid = fork();
    if (pid == 0) {
      close(p[0]);
      for (;;) {
        size_t len;
        void *m;
        msg_hdr_t h;
        if (mp_queue_get(q, &m, &len, MP_FOREVER) != 0)
          _exit(1);
        if (!msg_check(m, len, &h, sizeof buf))
          _exit(3);
        free(m);
        if (write(p[1], &h.seq, sizeof h.seq) != sizeof h.seq)
          _exit(2);
      }
    }
    close(p[1]);
    usleep(rnd() % 2000);
    mpt_kill_reap(pid);
    uint32_t n = read_acks(p[0], acks, 1 << 16);
    close(p[0]);
    for (uint32_t k = 0; k < n; k++)
      ASSERT_EQ(acks[k], base + k);
    size_t len;
    msg_hdr_t h;
    uint32_t expect = base + n, first = 1;
    while (mp_queue_get_into(q, buf, sizeof buf, &len, 0) == 0) {
      ASSERT(msg_check(buf, len, &h, sizeof buf));
      if (first && h.seq == expect + 1) {
        lost++; /* taken by the killed consumer, never reported */
        expect++;
      }
      first = 0;
      ASSERT_EQ(h.seq, expect);
      expect++;
    }
    ASSERT(expect == total || expect + 1 == total);
    if (expect + 1 == total)
      lost++;
  }
  ASSERT(lost <= 60);
  ASSERT_OK(mp_queue_put(q, "ok", 2, 0));
  char b[4];
  size_t len;
  ASSERT_OK(mp_queue_get_into(q, b, sizeof b, &len, 1000));
  ASSERT_OK(mp_queue_destroy(q));
}

/* Producers and consumers together, several processes, all killed at random
 * moments: the queue never hangs and keeps working. */
static void crash_mixed(bool polled) {
  mp_queue_t *q = mkq(16, 1 << 14, MP_QUEUE_JOINABLE);
  int pfd = -1;
  if (polled)
    ASSERT_OK(mp_queue_fd(q, &pfd));
  for (int round = 0; round < 40; round++) {
    pid_t pid[4];
    for (int k = 0; k < 4; k++) {
      pid[k] = fork();
      if (pid[k] == 0) {
        static unsigned char b[4096];
        if (k < 2) {
          for (uint32_t i = 0;; i++) {
            size_t l = msg_make(b, (uint32_t)k, i, sizeof b);
            struct iovec iov[2] = {{b, l}, {b, l / 2}};
            if (i % 3 == 0)
              mp_queue_put_many(q, iov, 2, 100);
            else
              mp_queue_put(q, b, l, 100);
          }
        }
        for (;;) {
          size_t len;
          struct iovec out[4];
          if (k == 2)
            mp_queue_get_into(q, b, sizeof b, &len, 100);
          else
            mp_queue_get_many(q, b, sizeof b, out, 4, 100);
        }
      }
    }
    usleep(rnd() % 5000);
    for (int k = 0; k < 4; k++)
      kill(pid[k], SIGKILL);
    for (int k = 0; k < 4; k++)
      mpt_wait_exit(pid[k]);
    /* Usable at once: a put and a get each finish. */
    static unsigned char b[4096];
    size_t len;
    while (mp_queue_get_into(q, b, sizeof b, &len, 0) == 0) {
    }
    if (polled)
      ASSERT(!readable(pfd, 0)); /* the FIFO was repaired too */
    ASSERT_OK(mp_queue_put(q, "alive", 5, 2000));
    if (polled)
      ASSERT(readable(pfd, 0));
    ASSERT_OK(mp_queue_get_into(q, b, sizeof b, &len, 2000));
    ASSERT_EQ(len, 5);
    ASSERT(memcmp(b, "alive", 5) == 0);
  }
  ASSERT_OK(mp_queue_destroy(q));
}

TEST(queue_crash_mixed_rounds) {
  crash_mixed(false);
}

TEST(queue_crash_mixed_rounds_polled) {
  crash_mixed(true);
}

/* Large messages keep the lock held for a long copy, so kills land inside
 * the critical section: the next user takes the lock over. */
TEST(queue_crash_inside_large_copies) {
  enum { BIG = 1 << 20 };
  mp_queue_t *q = mkq(0, 4 * BIG, 0);
  unsigned char *b = malloc(BIG);
  ASSERT(b != NULL);
  for (int round = 0; round < 30; round++) {
    pid_t pid[2];
    for (int k = 0; k < 2; k++) {
      pid[k] = fork();
      if (pid[k] == 0) {
        unsigned char *cb = malloc(BIG);
        memset(cb, k, BIG);
        for (;;) {
          size_t len;
          if (k == 0)
            mp_queue_put(q, cb, BIG - (size_t)(rnd() % 64), MP_FOREVER);
          else
            mp_queue_get_into(q, cb, BIG, &len, MP_FOREVER);
        }
      }
    }
    usleep(200 + rnd() % 3000);
    kill(pid[rnd() % 2], SIGKILL);
    usleep(rnd() % 1000);
    for (int k = 0; k < 2; k++)
      kill(pid[k], SIGKILL);
    for (int k = 0; k < 2; k++)
      mpt_wait_exit(pid[k]);
    size_t len, n;
    while (mp_queue_get_into(q, b, BIG, &len, 0) == 0)
      ASSERT(len > BIG - 64 && b[0] == 0 && b[len - 1] == 0);
    ASSERT_OK(mp_queue_qsize(q, &n));
    ASSERT_EQ(n, 0);
    ASSERT_OK(mp_queue_put(q, b, 100, 2000));
    ASSERT_OK(mp_queue_get_into(q, b, BIG, &len, 2000));
    ASSERT_EQ(len, 100);
  }
  free(b);
  ASSERT_OK(mp_queue_destroy(q));
}

/* Sleepers killed while waiting (consumers on an empty queue, producers on
 * a full one, a joiner) leave nothing that slows or blocks the others. */
TEST(queue_crash_sleepers) {
  mp_queue_t *q = mkq(4, 0, MP_QUEUE_JOINABLE);
  for (int round = 0; round < 3; round++) {
    pid_t pid[3];
    for (int k = 0; k < 3; k++) {
      pid[k] = fork();
      if (pid[k] == 0) {
        void *m;
        size_t len;
        mp_queue_get(q, &m, &len, MP_FOREVER);
        _exit(0);
      }
    }
    mpt_sleep_ms(30);
    for (int k = 0; k < 3; k++)
      kill(pid[k], SIGKILL);
    for (int k = 0; k < 3; k++)
      mpt_wait_exit(pid[k]);
    for (int i = 0; i < 4; i++)
      ASSERT_OK(mp_queue_put(q, &i, sizeof i, 0));
    pid_t prod = fork();
    if (prod == 0) {
      mp_queue_put(q, "x", 1, MP_FOREVER); /* full: sleeps */
      _exit(0);
    }
    pid_t joiner = fork();
    if (joiner == 0) {
      mp_queue_join(q, MP_FOREVER);
      _exit(0);
    }
    mpt_sleep_ms(30);
    kill(prod, SIGKILL);
    kill(joiner, SIGKILL);
    mpt_wait_exit(prod);
    mpt_wait_exit(joiner);
    /* Many operations, each would find the dead sleepers counted. */
    for (int i = 0; i < 2000; i++) {
      int v;
      size_t len;
      ASSERT_OK(mp_queue_get_into(q, &v, sizeof v, &len, 1000));
      ASSERT_OK(mp_queue_task_done(q));
      ASSERT_OK(mp_queue_put(q, &i, sizeof i, 1000));
    }
    int v;
    size_t len;
    while (mp_queue_get_into(q, &v, sizeof v, &len, 0) == 0)
      ASSERT_OK(mp_queue_task_done(q));
    size_t n;
    ASSERT_OK(mp_queue_qsize(q, &n));
    ASSERT_EQ(n, 0);
    ASSERT_OK(mp_queue_join(q, 1000));
  }
  ASSERT_OK(mp_queue_destroy(q));
}

TEST(queue_mp_wait) {
  mp_queue_t *a = mkq(0, 0, 0), *b = mkq(0, 0, 0);
  mp_waitable_t w[2] = {mp_queue_waitable(a), mp_queue_waitable(b)};
  uint64_t t0 = mpt_now_ms();
  ASSERT_EQ(mp_wait(w, 2, 80), 0);
  ASSERT(mpt_now_ms() - t0 >= 80);
  ASSERT_EQ(mp_wait(w, 2, 0), 0);
  pid_t pid = fork();
  if (pid == 0) {
    mpt_sleep_ms(60);
    _exit(mp_queue_put(b, "hi", 2, 0) == 0 ? 0 : 1);
  }
  ASSERT_EQ(mp_wait(w, 2, MP_FOREVER), 1);
  ASSERT(!w[0].ready);
  ASSERT(w[1].ready);
  mpt_wait_ok(pid);
  /* Another consumer takes the message: not ready any more. */
  pid = fork();
  if (pid == 0) {
    char buf[4];
    size_t len;
    _exit(mp_queue_get_into(b, buf, sizeof buf, &len, 0) == 0 ? 0 : 1);
  }
  mpt_wait_ok(pid);
  ASSERT_EQ(mp_wait(w, 2, 30), 0);
  ASSERT_OK(mp_queue_close(a));
  ASSERT_EQ(mp_wait(w, 2, MP_FOREVER), 1);
  ASSERT(w[0].ready);
  ASSERT_OK(mp_queue_destroy(a));
  ASSERT_OK(mp_queue_destroy(b));
}

/* Run by queue_open_from_exec in a freshly exec'ed process (nothing
 * inherited but the name); a no-op when run on its own. */
TEST(queue_exec_helper) {
  const char *name = getenv("MPQ_HELPER_QUEUE");
  if (!name)
    return;
  mp_queue_t *q = NULL;
  ASSERT_OK(mp_queue_open(&q, name));
  char buf[16];
  size_t len;
  ASSERT_OK(mp_queue_get_into(q, buf, sizeof buf, &len, 5000));
  ASSERT_EQ(len, 4);
  ASSERT(memcmp(buf, "ping", 4) == 0);
  ASSERT_OK(mp_queue_put(q, "pong", 4, 0));
  ASSERT_OK(mp_queue_destroy(q));
}

TEST(queue_open_from_exec) {
  mp_queue_t *q = mkq(0, 0, 0);
  ASSERT_OK(mp_queue_put(q, "ping", 4, 0));
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  ASSERT(n > 0);
  exe[n] = '\0';
  pid_t pid = fork();
  if (pid == 0) {
    setenv("MPQ_HELPER_QUEUE", mp_queue_name(q), 1);
    execl(exe, exe, "queue_exec_helper", (char *)NULL);
    _exit(127);
  }
  mpt_wait_ok(pid);
  char buf[16];
  size_t len;
  ASSERT_OK(mp_queue_get_into(q, buf, sizeof buf, &len, 0));
  ASSERT(memcmp(buf, "pong", 4) == 0);
  ASSERT_OK(mp_queue_destroy(q));
}

/* Creators killed at random moments, inside create and destroy too: no
 * segment or FIFO is left in /dev/shm (random names are tracked before
 * they exist; the names reported here are those that surely existed). */
TEST(queue_crash_creators_leave_nothing) {
  for (int round = 0; round < 20; round++) {
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    pid_t pid = fork();
    if (pid == 0) {
      close(p[0]);
      for (uint32_t i = 0;; i++) {
        mp_queue_t *q;
        if (mp_queue_create(&q, NULL) != 0)
          _exit(1);
        char name[MP_QUEUE_NAME_MAX + 1] = {0};
        snprintf(name, sizeof name, "%s", mp_queue_name(q));
        if (write(p[1], name, sizeof name) != sizeof name)
          _exit(1);
        if (i % 2 == 0) {
          int fd;
          mp_queue_fd(q, &fd);
        }
        mp_queue_put(q, "x", 1, 0);
        if (i % 3)
          mp_queue_destroy(q);
      }
    }
    close(p[1]);
    usleep(rnd() % 4000);
    mpt_kill_reap(pid);
    char name[MP_QUEUE_NAME_MAX + 1];
    while (read(p[0], name, sizeof name) == (ssize_t)sizeof name) {
      char fifo[80];
      snprintf(fifo, sizeof fifo, "%s.p", name);
      ASSERT(wait_gone(name));
      ASSERT(wait_gone(fifo));
    }
    close(p[0]);
  }
}

/* Waits until /proc shows pid as a zombie (killed, not reaped). */
static void wait_zombie(pid_t pid) {
  char path[64], buf[256];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  for (int i = 0; i < 2000; i++) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ASSERT(fd >= 0);
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    ASSERT(n > 0);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (p && p[1] == ' ' && p[2] == 'Z')
      return;
    mpt_sleep_ms(2);
  }
  ASSERT(!"never a zombie");
}

/* An owner killed inside a put or get and not reaped yet (its parent, the
 * one that would reap it, uses the queue first) is dead all the same. */
TEST(queue_crash_owner_not_reaped) {
  mp_queue_t *q = mkq(0, 1 << 14, 0);
  for (int round = 0; round < 40; round++) {
    pid_t pid = fork();
    if (pid == 0) {
      unsigned char m[64] = {0};
      for (;;) {
        if (mp_queue_put(q, m, sizeof m, MP_FOREVER) != 0)
          _exit(1);
        size_t len;
        if (mp_queue_get_into(q, m, sizeof m, &len, MP_FOREVER) != 0)
          _exit(2);
      }
    }
    usleep(rnd() % 2000);
    kill(pid, SIGKILL);
    wait_zombie(pid);
    ASSERT_OK(mp_queue_put(q, "ok", 2, 1000));
    unsigned char b[64];
    size_t len;
    while (mp_queue_get_into(q, b, sizeof b, &len, 0) == 0) {
    }
    mpt_wait_exit(pid);
  }
  ASSERT_OK(mp_queue_destroy(q));
}

/* ---- trust boundary ---------------------------------------------------------
 * Offsets in the queue header (src/queue.c), as a peer would scribble them. */
enum {
  QH_CAPACITY = 24,
  QH_RING_MAX = 40,
  QH_RESERVE = 48,
  QH_PCUR = 72, /* after the 8-byte lock word */
  QH_PS = 80,   /* {tail, nput} x 2 */
  QH_CCUR = 136,
  QH_CS = 144, /* {head, nget, ndone} x 2 */
  QH_TAIL_PUB = 256,
  QH_RING = 384,
  QH_DATA = 4096
};

static void q_path(mp_queue_t *q, char *path, size_t cap) {
  snprintf(path, cap, "/dev/shm%s", mp_queue_name(q));
}

/* A second mapping of the queue's header and first ring page, as another
 * process has it. */
static unsigned char *q_map_raw(mp_queue_t *q) {
  char path[128];
  q_path(q, path, sizeof path);
  int fd = open(path, O_RDWR);
  ASSERT(fd >= 0);
  void *p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  ASSERT(p != MAP_FAILED);
  return p;
}

TEST(queue_open_refuses_foreign_or_shared_mode) {
  mp_queue_t *q, *q2;
  ASSERT_OK(mp_queue_create(&q, NULL));
  char path[128];
  q_path(q, path, sizeof path);
  ASSERT_EQ(chown(path, 65534, (gid_t)-1), 0);
  ASSERT_ERR(mp_queue_open(&q2, mp_queue_name(q)), MP_EACCES);
  ASSERT_EQ(chown(path, geteuid(), (gid_t)-1), 0);
  ASSERT_EQ(chmod(path, 0666), 0);
  ASSERT_ERR(mp_queue_open(&q2, mp_queue_name(q)), MP_EACCES);
  ASSERT_EQ(chmod(path, 0600), 0);
  ASSERT_OK(mp_queue_open(&q2, mp_queue_name(q)));
  ASSERT_OK(mp_queue_destroy(q2));
  ASSERT_OK(mp_queue_destroy(q));
}

/* Every header field the queue later uses is checked at open: a crafted
 * value gives MP_EPROTO, never a write where the header points. */
TEST(queue_open_rejects_crafted_header) {
  mp_queue_t *q, *q2;
  ASSERT_OK(mp_queue_create(&q, &(mp_queue_opts_t){.capacity = 1 << 20}));
  ASSERT_OK(mp_queue_put(q, "abc", 3, 0));
  unsigned char *raw = q_map_raw(q);
  uint32_t pcur, ccur;
  memcpy(&pcur, raw + QH_PCUR, 4);
  memcpy(&ccur, raw + QH_CCUR, 4);
  ASSERT(pcur <= 1 && ccur <= 1);
  struct {
    size_t off, width;
    uint64_t val;
  } bad[] = {
      {QH_PCUR, 4, 7},                          /* state index out of range */
      {QH_CCUR, 4, 1u << 20},                   /* state index out of range */
      {QH_RING, 8, (uint64_t)1 << 40},          /* ring past the object */
      {QH_RING, 8, 3 << 16},                    /* not a power of two */
      {QH_RING_MAX, 8, (uint64_t)1 << 40},      /* inconsistent with capacity */
      {QH_CAPACITY, 8, (uint64_t)1 << 41},      /* above the largest */
      {QH_RESERVE, 8, 4096 + 64},               /* smaller than the object */
      {QH_PS + 16 * pcur, 8, (uint64_t)1 << 50}, /* tail far past the head */
      {QH_CS + 24 * ccur, 8, 1000},              /* head past the tail */
      {QH_TAIL_PUB, 8, (uint64_t)1 << 50},      /* published tail too */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    uint64_t saved = 0;
    memcpy(&saved, raw + bad[i].off, bad[i].width);
    memcpy(raw + bad[i].off, &bad[i].val, bad[i].width);
    int r = mp_queue_open(&q2, mp_queue_name(q));
    if (r == 0)
      mp_queue_destroy(q2);
    if (r != MP_EPROTO)
      mpt_fail(__FILE__, __LINE__, "field %zu: got %s", i, mp_err_name(r));
    memcpy(raw + bad[i].off, &saved, bad[i].width);
  }
  ASSERT_OK(mp_queue_open(&q2, mp_queue_name(q)));
  char buf[8];
  size_t len;
  ASSERT_OK(mp_queue_get_into(q2, buf, sizeof buf, &len, 0));
  ASSERT_EQ(len, 3);
  ASSERT_OK(mp_queue_destroy(q2));
  munmap(raw, 8192);
  ASSERT_OK(mp_queue_destroy(q));
}

/* A record length is bounded by what the producers published, not only
 * by the capacity: a corrupt one is reported, the head does not move past
 * the tail, and the queue works again once the record is sane. */
TEST(queue_corrupt_record_length) {
  mp_queue_t *q;
  ASSERT_OK(mp_queue_create(&q, &(mp_queue_opts_t){.capacity = 1 << 20}));
  ASSERT_OK(mp_queue_put(q, "hello", 5, 0));
  unsigned char *raw = q_map_raw(q);
  uint64_t len0, bad = 4096; /* within the capacity, past the tail */
  memcpy(&len0, raw + QH_DATA, 8);
  ASSERT_EQ(len0, 5);
  memcpy(raw + QH_DATA, &bad, 8);
  void *m;
  size_t len;
  char buf[8192];
  ASSERT_ERR(mp_queue_get(q, &m, &len, 0), MP_EPROTO);
  ASSERT_ERR(mp_queue_get_into(q, buf, sizeof buf, &len, 0), MP_EPROTO);
  struct iovec iov[2];
  ASSERT_ERR(mp_queue_get_many(q, buf, sizeof buf, iov, 2, 0), MP_EPROTO);
  size_t n;
  ASSERT_OK(mp_queue_qsize(q, &n));
  ASSERT_EQ(n, 1);
  memcpy(raw + QH_DATA, &len0, 8);
  ASSERT_OK(mp_queue_get(q, &m, &len, 0));
  ASSERT_EQ(len, 5);
  ASSERT(memcmp(m, "hello", 5) == 0);
  free(m);
  ASSERT_OK(mp_queue_put(q, "x", 1, 0));
  ASSERT_OK(mp_queue_get_into(q, buf, sizeof buf, &len, 0));
  munmap(raw, 8192);
  ASSERT_OK(mp_queue_destroy(q));
}

/* Header fields changed after open (the ring size, the state index) are
 * bounded at use: MP_EPROTO, no access outside the object. */
TEST(queue_header_corrupted_after_open) {
  mp_queue_t *q, *q2;
  ASSERT_OK(mp_queue_create(&q, &(mp_queue_opts_t){.capacity = 1 << 20}));
  ASSERT_OK(mp_queue_open(&q2, mp_queue_name(q)));
  unsigned char *raw = q_map_raw(q);
  uint64_t ring, huge = (uint64_t)1 << 20; /* the largest allowed... */
  memcpy(&ring, raw + QH_RING, 8);
  memcpy(raw + QH_RING, &huge, 8); /* ...but the object is not that big */
  ASSERT_ERR(mp_queue_put(q2, "abc", 3, 0), MP_EPROTO);
  void *m;
  size_t len;
  ASSERT_ERR(mp_queue_get(q2, &m, &len, 0), MP_EEMPTY);
  memcpy(raw + QH_RING, &ring, 8);
  uint32_t idx = 9;
  memcpy(raw + QH_PCUR, &idx, 4); /* masked: still a valid copy */
  ASSERT_OK(mp_queue_put(q2, "abc", 3, 0));
  munmap(raw, 8192);
  ASSERT_OK(mp_queue_destroy(q2));
  ASSERT_OK(mp_queue_destroy(q));
}

static void queue_fill_small_dev_shm(void) {
  mp_queue_t *q;
  ASSERT_OK(mp_queue_create(&q, &(mp_queue_opts_t){.capacity = 64 << 20}));
  static char msg[1 << 20];
  memset(msg, 3, sizeof msg);
  int r, n = 0;
  while ((r = mp_queue_put(q, msg, sizeof msg, 0)) == 0)
    n++;
  ASSERT_ERR(r, MP_ENOSPC);
  ASSERT(n >= 1);
  for (int i = 0; i < n; i++) {
    void *m;
    size_t len;
    ASSERT_OK(mp_queue_get(q, &m, &len, 0));
    ASSERT_EQ(len, sizeof msg);
    free(m);
  }
  ASSERT_OK(mp_queue_destroy(q));
}

TEST(queue_full_dev_shm_enospc) {
  int st = mpt_with_small_dev_shm((size_t)8 << 20, queue_fill_small_dev_shm);
  ASSERT(WIFEXITED(st));
  ASSERT_EQ(WEXITSTATUS(st), 0);
}
