/* Shared-memory queue (Queue, JoinableQueue, SimpleQueue).
 *
 * Layout of the segment: a 4 KiB header, then a ring of byte records. A
 * record is an 8-byte length followed by the payload padded to 8; a payload
 * may wrap around the end of the ring (two copies), a length never does.
 * The ring's size is a power of two that starts small and doubles as the
 * backlog needs it, up to what the capacity allows: the address space for
 * the largest ring is reserved up front, memory is only used as touched.
 *
 * One lock word orders every operation. It holds the owner's pid (plus a
 * bit for sleepers), so a waiter that finds the owner dead takes the lock
 * over. Crash safety comes from the state being double-buffered: the owner
 * writes payload bytes into free ring space and the new state into the
 * inactive copy, then publishes both with one store of `cur`. A process
 * killed before that store leaves nothing visible; after it, the operation
 * is complete. Whatever the dead owner did not finish afterwards (bumping
 * the event words, waking sleepers, the poll FIFO) the taker redoes.
 *
 * Sleepers wait on event words (put_ev for consumers, get_ev for producers,
 * done_ev for join) after a short spin; waiter counts let the hot path skip
 * the wake syscall when nobody sleeps. Wakes are issued before the lock is
 * released, so a process killed after publishing cannot leave a sleeper
 * unwoken without also leaving the lock to be taken over; sleepers still
 * wake once a second to look for a dead lock owner.
 *
 * Polling: a FIFO beside the segment (/dev/shm/<name>.p) holds one byte
 * exactly while the queue has messages or is closed, once anybody asked for
 * a descriptor (`polled`); the byte is written and drained under the lock
 * on the empty <-> non-empty transitions only. */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "mproc/queue.h"

#define Q_MAGIC 0x6d707175u /* "mpqu" */
#define Q_VERSION 1u
#define Q_HDR 4096u
#define Q_RING_MIN ((uint64_t)64 << 10)
#define Q_REC 8u
#define Q_LOCK_SLEEPERS 0x80000000u
#define Q_LOCK_SPIN 200
#define Q_EV_SPIN 2000
#define Q_OWNER_RECHECK_MS 50
#define Q_IDLE_RECHECK_MS 1000
#define Q_FIFO_SUFFIX ".p"

typedef struct {
  uint64_t head, tail; /* byte counters; position = counter & (ring-1) */
  uint64_t nput, nget; /* messages ever put / taken */
  uint64_t ndone;      /* task_done calls */
  uint64_t ring;       /* current ring size, a power of two */
  uint64_t closed;
} q_state_t;

typedef struct {
  uint32_t magic, version;
  uint32_t flags, pad0;
  uint64_t maxsize;   /* messages, 0: none */
  uint64_t capacity;  /* largest message */
  uint64_t cap_bytes; /* most ring bytes in use */
  uint64_t ring_max;
  uint64_t reserve; /* mapping length */
  _Alignas(MP__CACHELINE) _Atomic uint32_t lock;
  _Atomic uint32_t cur;
  _Atomic uint32_t polled;
  _Alignas(MP__CACHELINE) q_state_t st[2];
  _Alignas(MP__CACHELINE) _Atomic uint32_t put_ev;
  _Atomic uint32_t get_waiters;
  _Alignas(MP__CACHELINE) _Atomic uint32_t get_ev;
  _Atomic uint32_t put_waiters;
  _Alignas(MP__CACHELINE) _Atomic uint32_t done_ev;
  _Atomic uint32_t join_waiters;
} q_shm_t;

_Static_assert(sizeof(q_shm_t) <= Q_HDR, "queue header too large");
_Static_assert(MP_QUEUE_NAME_MAX + sizeof Q_FIFO_SUFFIX <= MP__SEG_NAME_MAX,
               "no room for the FIFO suffix");

struct mp_queue {
  mp__seg_t seg;
  q_shm_t *h;
  unsigned char *data;
  _Atomic int fifo_fd; /* -1 until first needed */
  pid_t creator;       /* pid that created the queue, 0 if opened */
  char fifo_name[MP__SEG_NAME_MAX];
};

/* ---- own pid, cached (glibc's getpid is a system call) ------------------ */

static _Atomic pid_t q_pid;
static pthread_once_t q_pid_once = PTHREAD_ONCE_INIT;
static void q_pid_reset(void) {
  atomic_store(&q_pid, 0);
}
static void q_pid_install(void) {
  pthread_atfork(NULL, NULL, q_pid_reset);
}

static uint32_t q_self(void) {
  pid_t p = atomic_load_explicit(&q_pid, memory_order_relaxed);
  if (MP__UNLIKELY(p == 0)) {
    pthread_once(&q_pid_once, q_pid_install);
    p = getpid();
    atomic_store_explicit(&q_pid, p, memory_order_relaxed);
  }
  return (uint32_t)p;
}

/* ---- lock ---------------------------------------------------------------- */

static bool q_owner_dead(uint32_t word) {
  pid_t owner = (pid_t)(word & ~Q_LOCK_SLEEPERS);
  if (owner == 0 || (uint32_t)owner == q_self())
    return false;
  return kill(owner, 0) < 0 && errno == ESRCH;
}

static void q_fifo_sync(mp_queue_t *q, const q_state_t *s);

/* After taking the lock from a dead owner: the state is consistent (see the
 * top), but its wakes and FIFO update may be missing. */
static void q_recover(mp_queue_t *q) {
  q_shm_t *h = q->h;
  atomic_fetch_add(&h->put_ev, 1);
  atomic_fetch_add(&h->get_ev, 1);
  atomic_fetch_add(&h->done_ev, 1);
  mp__futex_wake(&h->put_ev, INT32_MAX);
  mp__futex_wake(&h->get_ev, INT32_MAX);
  mp__futex_wake(&h->done_ev, INT32_MAX);
  if (atomic_load(&h->polled)) {
    q_state_t s = h->st[atomic_load_explicit(&h->cur, memory_order_acquire)];
    q_fifo_sync(q, &s);
  }
}

static void q_lock(mp_queue_t *q) {
  _Atomic uint32_t *l = &q->h->lock;
  uint32_t me = q_self(), v = 0;
  if (MP__LIKELY(atomic_compare_exchange_strong_explicit(
          l, &v, me, memory_order_acquire, memory_order_relaxed)))
    return;
  for (int i = 0; i < Q_LOCK_SPIN; i++) {
    v = atomic_load_explicit(l, memory_order_relaxed);
    if (v == 0 && atomic_compare_exchange_weak_explicit(
                      l, &v, me, memory_order_acquire, memory_order_relaxed))
      return;
    mp__cpu_relax();
  }
  for (;;) {
    v = atomic_load_explicit(l, memory_order_relaxed);
    if (v == 0) {
      /* Others may sleep: keep the bit so our unlock wakes one. */
      if (atomic_compare_exchange_weak_explicit(l, &v, me | Q_LOCK_SLEEPERS,
                                                memory_order_acquire,
                                                memory_order_relaxed))
        return;
      continue;
    }
    if (q_owner_dead(v)) {
      if (atomic_compare_exchange_strong_explicit(l, &v, me | Q_LOCK_SLEEPERS,
                                                  memory_order_acquire,
                                                  memory_order_relaxed)) {
        q_recover(q);
        return;
      }
      continue;
    }
    if (!(v & Q_LOCK_SLEEPERS) &&
        !atomic_compare_exchange_weak_explicit(l, &v, v | Q_LOCK_SLEEPERS,
                                               memory_order_relaxed,
                                               memory_order_relaxed))
      continue;
    /* Timed: an owner killed between releasing and waking must not leave
     * us asleep, and a dead owner must be noticed. */
    mp__deadline_t d;
    mp__deadline_init(&d, Q_OWNER_RECHECK_MS);
    mp__futex_wait(l, v | Q_LOCK_SLEEPERS, &d);
  }
}

static void q_unlock(mp_queue_t *q) {
  uint32_t v = atomic_exchange_explicit(&q->h->lock, 0, memory_order_release);
  if (MP__UNLIKELY(v & Q_LOCK_SLEEPERS))
    mp__futex_wake(&q->h->lock, 1);
}

/* The live state; only valid under the lock. */
static inline q_state_t q_load(const mp_queue_t *q) {
  return q->h->st[atomic_load_explicit(&q->h->cur, memory_order_acquire)];
}

/* Publish s: the single store that makes an operation happen. */
static inline void q_commit(mp_queue_t *q, const q_state_t *s) {
  uint32_t c = atomic_load_explicit(&q->h->cur, memory_order_relaxed) ^ 1u;
  q->h->st[c] = *s;
  atomic_store_explicit(&q->h->cur, c, memory_order_release);
}

/* ---- poll FIFO ------------------------------------------------------------
 */

static int q_fifo_path(char *buf, size_t cap, const char *name) {
  int n = snprintf(buf, cap, "/dev/shm%s", name);
  return n < 0 || (size_t)n >= cap ? MP_ENAMETOOLONG : 0;
}

static int q_fifo_get(mp_queue_t *q) {
  int fd = atomic_load(&q->fifo_fd);
  if (fd >= 0)
    return fd;
  char path[MP__SEG_NAME_MAX + 16];
  int r = q_fifo_path(path, sizeof path, q->fifo_name);
  if (r < 0)
    return r;
  /* O_RDWR: never blocks on open and never sees EOF; one descriptor both
   * signals and is polled. */
  fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  int expect = -1;
  if (!atomic_compare_exchange_strong(&q->fifo_fd, &expect, fd)) {
    mp__close(fd);
    fd = expect;
  }
  return fd;
}

static void q_fifo_set(int fd, bool want) {
  if (want) {
    char b = 1;
    while (write(fd, &b, 1) < 0 && errno == EINTR) {
    }
  } else {
    char buf[64];
    while (read(fd, buf, sizeof buf) > 0) {
    }
  }
}

static inline bool q_readable(const q_state_t *s) {
  return s->nput != s->nget || s->closed;
}

/* Make the FIFO hold one byte exactly when the queue is readable. Called
 * under the lock. */
static void q_fifo_sync(mp_queue_t *q, const q_state_t *s) {
  int fd = q_fifo_get(q);
  if (fd < 0)
    return;
  int n = 0;
  if (ioctl(fd, FIONREAD, &n) < 0)
    return;
  bool want = q_readable(s);
  if (want && n == 1)
    return;
  if (n > 0)
    q_fifo_set(fd, false);
  if (want)
    q_fifo_set(fd, true);
}

/* On a transition between readable and not, under the lock. */
static inline void q_fifo_update(mp_queue_t *q, const q_state_t *before,
                                 const q_state_t *after) {
  if (MP__LIKELY(!atomic_load_explicit(&q->h->polled, memory_order_relaxed)))
    return;
  bool was = q_readable(before), now = q_readable(after);
  if (was == now)
    return;
  int fd = q_fifo_get(q);
  if (fd >= 0)
    q_fifo_set(fd, now);
}

/* ---- ring ---------------------------------------------------------------- */

static inline uint64_t q_rec_size(uint64_t len) {
  return Q_REC + ((len + 7) & ~(uint64_t)7);
}

static void q_ring_write(mp_queue_t *q, uint64_t ring, uint64_t at,
                         const void *src, size_t len) {
  uint64_t p = at & (ring - 1);
  size_t first = len < ring - p ? len : (size_t)(ring - p);
  memcpy(q->data + p, src, first);
  if (len > first)
    memcpy(q->data, (const unsigned char *)src + first, len - first);
}

static void q_ring_read(const mp_queue_t *q, uint64_t ring, uint64_t at,
                        void *dst, size_t len) {
  uint64_t p = at & (ring - 1);
  size_t first = len < ring - p ? len : (size_t)(ring - p);
  memcpy(dst, q->data + p, first);
  if (len > first)
    memcpy((unsigned char *)dst + first, q->data, len - first);
}

static inline uint64_t q_peek_len(const mp_queue_t *q, const q_state_t *s) {
  uint64_t len;
  memcpy(&len, q->data + (s->head & (s->ring - 1)), sizeof len);
  return len;
}

/* Double the ring until `need` bytes fit. The bytes that wrapped past the
 * old end move to just after it, a region the old state never uses, so a
 * crash half-way changes nothing visible. */
static int q_grow(mp_queue_t *q, q_state_t *s, uint64_t need) {
  uint64_t old = s->ring, n = old;
  while (n < need)
    n *= 2;
  if (n > q->h->ring_max)
    return MP_EMSGSIZE;
  int r = mp__seg_grow(&q->seg, Q_HDR + n);
  if (r < 0)
    return r;
  uint64_t used = s->tail - s->head, hp = s->head & (old - 1);
  if (hp + used > old)
    memcpy(q->data + old, q->data, hp + used - old);
  s->head = hp;
  s->tail = hp + used;
  s->ring = n;
  return 0;
}

/* Append one message to s (not yet committed). MP_EAGAIN when full. */
static int q_push(mp_queue_t *q, q_state_t *s, const void *msg, size_t len) {
  const q_shm_t *h = q->h;
  if (h->maxsize && s->nput - s->nget >= h->maxsize)
    return MP_EAGAIN;
  uint64_t rec = q_rec_size(len), used = s->tail - s->head;
  if (used + rec > h->cap_bytes)
    return MP_EAGAIN;
  if (used + rec > s->ring) {
    int r = q_grow(q, s, used + rec);
    if (r < 0)
      return r;
  }
  uint64_t l = len;
  memcpy(q->data + (s->tail & (s->ring - 1)), &l, sizeof l);
  if (len)
    q_ring_write(q, s->ring, s->tail + Q_REC, msg, len);
  s->tail += rec;
  s->nput++;
  return 0;
}

static inline void q_pop(const mp_queue_t *q, q_state_t *s, void *dst,
                         uint64_t len) {
  if (len)
    q_ring_read(q, s->ring, s->head + Q_REC, dst, (size_t)len);
  s->head += q_rec_size(len);
  s->nget++;
}

/* ---- waiting ------------------------------------------------------------- */

/* Sleep until *ev moves from v, the deadline, or the periodic recheck.
 * Called without the lock; v was read under it. */
static void q_wait_ev(_Atomic uint32_t *ev, _Atomic uint32_t *waiters,
                      uint32_t v, const mp__deadline_t *dl) {
  if (mp__spin_while_eq(ev, v, Q_EV_SPIN))
    return;
  mp__deadline_t d;
  mp__deadline_init(&d, Q_IDLE_RECHECK_MS);
  if (!dl->forever &&
      (dl->ts.tv_sec < d.ts.tv_sec ||
       (dl->ts.tv_sec == d.ts.tv_sec && dl->ts.tv_nsec < d.ts.tv_nsec)))
    d = *dl;
  atomic_fetch_add(waiters, 1);
  mp__futex_wait(ev, v, &d);
  atomic_fetch_sub(waiters, 1);
}

/* After a commit that added messages; under the lock. */
static inline void q_after_put(mp_queue_t *q, const q_state_t *before,
                               const q_state_t *after, int n) {
  q_shm_t *h = q->h;
  atomic_fetch_add(&h->put_ev, 1);
  if (atomic_load(&h->get_waiters))
    mp__futex_wake(&h->put_ev, n);
  q_fifo_update(q, before, after);
}

/* After a commit that took messages; under the lock. Producers wait for
 * different amounts of space: wake them all. */
static inline void q_after_get(mp_queue_t *q, const q_state_t *before,
                               const q_state_t *after) {
  q_shm_t *h = q->h;
  atomic_fetch_add(&h->get_ev, 1);
  if (atomic_load(&h->put_waiters))
    mp__futex_wake(&h->get_ev, INT32_MAX);
  q_fifo_update(q, before, after);
}

static inline bool q_valid(const mp_queue_t *q) {
  return q && q->h && q->h->magic == Q_MAGIC;
}

/* ---- put ----------------------------------------------------------------- */

static int q_put_iov(mp_queue_t *q, const struct iovec *msgs, size_t n,
                     int timeout_ms) {
  mp__deadline_t dl;
  size_t done = 0;
  bool dl_set = false;
  for (;;) {
    q_lock(q);
    q_state_t before = q_load(q), s = before;
    int r = 0;
    if (s.closed) {
      r = MP_ECLOSED;
    } else {
      while (done < n &&
             (r = q_push(q, &s, msgs[done].iov_base, msgs[done].iov_len)) == 0)
        done++;
    }
    if (s.nput != before.nput) {
      q_commit(q, &s);
      q_after_put(q, &before, &s, (int)(s.nput - before.nput));
    }
    uint32_t v = atomic_load_explicit(&q->h->get_ev, memory_order_relaxed);
    q_unlock(q);
    if (done == n)
      return (int)n;
    if (r != MP_EAGAIN)
      return done ? (int)done : r;
    if (timeout_ms == 0)
      return done ? (int)done : MP_EFULL;
    if (!dl_set) {
      mp__deadline_init(&dl, timeout_ms);
      dl_set = true;
    } else if (mp__deadline_passed(&dl)) {
      return done ? (int)done : MP_EFULL;
    }
    q_wait_ev(&q->h->get_ev, &q->h->put_waiters, v, &dl);
  }
}

int mp_queue_put(mp_queue_t *q, const void *msg, size_t len, int timeout_ms) {
  if (!q_valid(q) || (!msg && len) || mp__check_timeout(timeout_ms) < 0)
    return MP_EINVAL;
  if (len > q->h->capacity)
    return MP_EMSGSIZE;
  struct iovec iov = {.iov_base = (void *)msg, .iov_len = len};
  int r = q_put_iov(q, &iov, 1, timeout_ms);
  return r == 1 ? 0 : r;
}

int mp_queue_put_many(mp_queue_t *q, const struct iovec *msgs, size_t n,
                      int timeout_ms) {
  if (!q_valid(q) || !msgs || n == 0 || n > INT32_MAX ||
      mp__check_timeout(timeout_ms) < 0)
    return MP_EINVAL;
  for (size_t i = 0; i < n; i++) {
    if (!msgs[i].iov_base && msgs[i].iov_len)
      return MP_EINVAL;
    if (msgs[i].iov_len > q->h->capacity)
      return MP_EMSGSIZE;
  }
  return q_put_iov(q, msgs, n, timeout_ms);
}

/* ---- get ----------------------------------------------------------------- */

enum { Q_GET_MALLOC, Q_GET_INTO, Q_GET_MANY };

typedef struct {
  int mode;
  void *buf;          /* INTO, MANY */
  size_t cap;         /* INTO, MANY */
  void **out;         /* MALLOC */
  size_t *len;        /* MALLOC, INTO */
  struct iovec *msgs; /* MANY */
  size_t n;           /* MANY */
} q_get_t;

/* Take what g asks for from s; MP_EAGAIN when empty. */
static int q_take(mp_queue_t *q, q_state_t *s, const q_get_t *g) {
  if (s->nput == s->nget)
    return s->closed ? MP_ECLOSED : MP_EAGAIN;
  uint64_t len = q_peek_len(q, s);
  if (MP__UNLIKELY(len > q->h->capacity))
    return MP_EIO; /* not written by us: the segment was tampered with */
  switch (g->mode) {
  case Q_GET_MALLOC: {
    void *m = malloc(len ? (size_t)len : 1);
    if (!m)
      return MP_ENOMEM;
    q_pop(q, s, m, len);
    *g->out = m;
    *g->len = (size_t)len;
    return 0;
  }
  case Q_GET_INTO:
    *g->len = (size_t)len;
    if (len > g->cap)
      return MP_ETOOSHORT;
    q_pop(q, s, g->buf, len);
    return 0;
  default: {
    size_t off = 0, i = 0;
    unsigned char *b = g->buf;
    for (; i < g->n && s->nput != s->nget; i++) {
      len = q_peek_len(q, s);
      if (MP__UNLIKELY(len > q->h->capacity))
        break;
      if (len > g->cap - off) {
        if (i == 0) {
          g->msgs[0].iov_len = (size_t)len;
          return MP_ETOOSHORT;
        }
        break;
      }
      q_pop(q, s, b + off, len);
      g->msgs[i].iov_base = b + off;
      g->msgs[i].iov_len = (size_t)len;
      off += (size_t)len;
      off = (off + 7) & ~(size_t)7;
      if (off > g->cap)
        off = g->cap;
    }
    return i ? (int)i : MP_EIO;
  }
  }
}

static int q_get(mp_queue_t *q, const q_get_t *g, int timeout_ms) {
  mp__deadline_t dl;
  bool dl_set = false;
  for (;;) {
    q_lock(q);
    q_state_t before = q_load(q), s = before;
    int r = q_take(q, &s, g);
    if (s.nget != before.nget) {
      q_commit(q, &s);
      q_after_get(q, &before, &s);
    } else if (r == MP_ETOOSHORT && atomic_load(&q->h->get_waiters)) {
      /* We may have been the one woken for this message: pass it on. */
      mp__futex_wake(&q->h->put_ev, 1);
    }
    uint32_t v = atomic_load_explicit(&q->h->put_ev, memory_order_relaxed);
    q_unlock(q);
    if (r != MP_EAGAIN)
      return r;
    if (timeout_ms == 0)
      return MP_EEMPTY;
    if (!dl_set) {
      mp__deadline_init(&dl, timeout_ms);
      dl_set = true;
    } else if (mp__deadline_passed(&dl)) {
      return MP_EEMPTY;
    }
    q_wait_ev(&q->h->put_ev, &q->h->get_waiters, v, &dl);
  }
}

int mp_queue_get(mp_queue_t *q, void **msg, size_t *len, int timeout_ms) {
  if (!q_valid(q) || !msg || !len || mp__check_timeout(timeout_ms) < 0)
    return MP_EINVAL;
  q_get_t g = {.mode = Q_GET_MALLOC, .out = msg, .len = len};
  return q_get(q, &g, timeout_ms);
}

int mp_queue_get_into(mp_queue_t *q, void *buf, size_t cap, size_t *len,
                      int timeout_ms) {
  if (!q_valid(q) || (!buf && cap) || !len || mp__check_timeout(timeout_ms) < 0)
    return MP_EINVAL;
  q_get_t g = {.mode = Q_GET_INTO, .buf = buf, .cap = cap, .len = len};
  return q_get(q, &g, timeout_ms);
}

int mp_queue_get_many(mp_queue_t *q, void *buf, size_t cap, struct iovec *msgs,
                      size_t n, int timeout_ms) {
  if (!q_valid(q) || (!buf && cap) || !msgs || n == 0 || n > INT32_MAX ||
      mp__check_timeout(timeout_ms) < 0)
    return MP_EINVAL;
  q_get_t g = {
      .mode = Q_GET_MANY, .buf = buf, .cap = cap, .msgs = msgs, .n = n};
  return q_get(q, &g, timeout_ms);
}

/* ---- state queries, close, join ------------------------------------------ */

int mp_queue_qsize(mp_queue_t *q, size_t *n) {
  if (!q_valid(q) || !n)
    return MP_EINVAL;
  q_lock(q);
  q_state_t s = q_load(q);
  q_unlock(q);
  *n = (size_t)(s.nput - s.nget);
  return 0;
}

int mp_queue_empty(mp_queue_t *q) {
  size_t n;
  int r = mp_queue_qsize(q, &n);
  return r < 0 ? r : n == 0;
}

int mp_queue_full(mp_queue_t *q) {
  size_t n;
  int r = mp_queue_qsize(q, &n);
  if (r < 0)
    return r;
  return q->h->maxsize != 0 && n >= q->h->maxsize;
}

int mp_queue_close(mp_queue_t *q) {
  if (!q_valid(q))
    return MP_EINVAL;
  q_shm_t *h = q->h;
  q_lock(q);
  q_state_t before = q_load(q), s = before;
  if (!s.closed) {
    s.closed = 1;
    q_commit(q, &s);
    q_fifo_update(q, &before, &s);
  }
  atomic_fetch_add(&h->put_ev, 1);
  atomic_fetch_add(&h->get_ev, 1);
  mp__futex_wake(&h->put_ev, INT32_MAX);
  mp__futex_wake(&h->get_ev, INT32_MAX);
  q_unlock(q);
  return 0;
}

int mp_queue_task_done(mp_queue_t *q) {
  if (!q_valid(q))
    return MP_EINVAL;
  if (!(q->h->flags & MP_QUEUE_JOINABLE))
    return MP_ENOTSUP;
  q_shm_t *h = q->h;
  q_lock(q);
  q_state_t s = q_load(q);
  if (s.ndone >= s.nget) {
    q_unlock(q);
    return MP_EINVAL;
  }
  s.ndone++;
  q_commit(q, &s);
  if (s.ndone == s.nput) {
    atomic_fetch_add(&h->done_ev, 1);
    if (atomic_load(&h->join_waiters))
      mp__futex_wake(&h->done_ev, INT32_MAX);
  }
  q_unlock(q);
  return 0;
}

int mp_queue_join(mp_queue_t *q, int timeout_ms) {
  if (!q_valid(q) || mp__check_timeout(timeout_ms) < 0)
    return MP_EINVAL;
  if (!(q->h->flags & MP_QUEUE_JOINABLE))
    return MP_ENOTSUP;
  mp__deadline_t dl;
  mp__deadline_init(&dl, timeout_ms);
  for (;;) {
    q_lock(q);
    q_state_t s = q_load(q);
    uint32_t v = atomic_load_explicit(&q->h->done_ev, memory_order_relaxed);
    q_unlock(q);
    if (s.ndone == s.nput)
      return 0;
    if (timeout_ms == 0 || mp__deadline_passed(&dl))
      return MP_ETIMEDOUT;
    q_wait_ev(&q->h->done_ev, &q->h->join_waiters, v, &dl);
  }
}

/* ---- polling ------------------------------------------------------------- */

int mp_queue_fd(mp_queue_t *q, int *fd) {
  if (!q_valid(q) || !fd)
    return MP_EINVAL;
  int f = q_fifo_get(q);
  if (f < 0)
    return f;
  q_lock(q);
  atomic_store(&q->h->polled, 1);
  q_state_t s = q_load(q);
  q_fifo_sync(q, &s);
  q_unlock(q);
  *fd = f;
  return 0;
}

static bool q_waitable_check(void *obj) {
  mp_queue_t *q = obj;
  q_lock(q);
  q_state_t s = q_load(q);
  q_unlock(q);
  return q_readable(&s);
}

mp_waitable_t mp_queue_waitable(mp_queue_t *q) {
  mp_waitable_t w = {.fd = -1, .check = q_waitable_check, .obj = q};
  int fd;
  if (mp_queue_fd(q, &fd) == 0)
    w.fd = fd;
  return w;
}

/* ---- life cycle ---------------------------------------------------------- */

static int q_check_name(const char *name) {
  size_t n = strlen(name);
  if (n < 2 || name[0] != '/' || strchr(name + 1, '/'))
    return MP_EINVAL;
  return n > MP_QUEUE_NAME_MAX ? MP_ENAMETOOLONG : 0;
}

static mp_queue_t *q_alloc(void) {
  mp_queue_t *q = calloc(1, sizeof *q);
  if (q)
    atomic_init(&q->fifo_fd, -1);
  return q;
}

static void q_set_ptrs(mp_queue_t *q) {
  q->h = q->seg.base;
  q->data = (unsigned char *)q->seg.base + Q_HDR;
  /* Names were checked to leave room for the suffix. */
  size_t n = strnlen(q->seg.name, MP_QUEUE_NAME_MAX);
  memcpy(q->fifo_name, q->seg.name, n);
  memcpy(q->fifo_name + n, Q_FIFO_SUFFIX, sizeof Q_FIFO_SUFFIX);
}

static int q_make_fifo(const char *fifo_name) {
  char path[MP__SEG_NAME_MAX + 16];
  int r = q_fifo_path(path, sizeof path, fifo_name);
  if (r < 0)
    return r;
  if (mkfifo(path, 0600) < 0) {
    if (errno != EEXIST)
      return -errno;
    /* The segment name was free, so this is a leftover: replace it. */
    unlink(path);
    if (mkfifo(path, 0600) < 0)
      return -errno;
  }
  chmod(path, 0600); /* mkfifo applies the umask */
  return 0;
}

int mp_queue_create(mp_queue_t **qp, const mp_queue_opts_t *opts) {
  mp_queue_opts_t o = {0};
  int r;
  if (!qp)
    return MP_EINVAL;
  if (opts)
    o = *opts;
  if (o.flags & ~(unsigned)MP_QUEUE_JOINABLE)
    return MP_EINVAL;
  if (o.capacity == 0)
    o.capacity = MP_QUEUE_DEFAULT_CAPACITY;
  if (o.capacity > MP_QUEUE_MAX_CAPACITY)
    return MP_EINVAL;
  if (o.name && (r = q_check_name(o.name)) < 0)
    return r;
  uint64_t cap_bytes = q_rec_size(o.capacity), ring_max = Q_REC;
  while (ring_max < cap_bytes)
    ring_max *= 2;
  uint64_t ring0 = ring_max < Q_RING_MIN ? ring_max : Q_RING_MIN;
  mp_queue_t *q = q_alloc();
  if (!q)
    return MP_ENOMEM;
  r = mp__seg_create(&q->seg, o.name, Q_HDR + ring0, Q_HDR + ring_max, true);
  if (r < 0) {
    free(q);
    return r;
  }
  q_set_ptrs(q);
  if ((r = q_make_fifo(q->fifo_name)) < 0)
    goto fail;
  if ((r = mp__tracker_register(q->fifo_name)) < 0) {
    char path[MP__SEG_NAME_MAX + 16];
    if (q_fifo_path(path, sizeof path, q->fifo_name) == 0)
      unlink(path);
    goto fail;
  }
  q_shm_t *h = q->h;
  h->version = Q_VERSION;
  h->flags = o.flags;
  h->maxsize = o.maxsize;
  h->capacity = o.capacity;
  h->cap_bytes = cap_bytes;
  h->ring_max = ring_max;
  h->reserve = Q_HDR + ring_max;
  h->st[0].ring = h->st[1].ring = ring0;
  q->creator = (pid_t)q_self();
  /* Openers wait for the magic: it says the header is complete. */
  atomic_thread_fence(memory_order_release);
  __atomic_store_n(&h->magic, Q_MAGIC, __ATOMIC_RELEASE);
  *qp = q;
  return 0;
fail:
  mp__seg_close(&q->seg);
  mp__seg_unlink(q->seg.name);
  free(q);
  return r;
}

int mp_queue_open(mp_queue_t **qp, const char *name) {
  int r;
  if (!qp || !name)
    return MP_EINVAL;
  if ((r = q_check_name(name)) < 0)
    return r;
  mp__seg_t probe;
  if ((r = mp__seg_open(&probe, name, 0)) < 0)
    return r;
  uint64_t reserve = 0;
  if (probe.size >= Q_HDR) {
    const q_shm_t *h = probe.base;
    /* A creator still filling the header: give it a moment. */
    for (int i = 0;
         i < 1000 && __atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != Q_MAGIC;
         i++)
      usleep(1000);
    if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) == Q_MAGIC &&
        h->version == Q_VERSION)
      reserve = h->reserve;
  }
  mp__seg_close(&probe);
  if (reserve < Q_HDR + Q_REC * 2 ||
      reserve > Q_HDR + 2 * MP_QUEUE_MAX_CAPACITY)
    return MP_EINVAL;
  mp_queue_t *q = q_alloc();
  if (!q)
    return MP_ENOMEM;
  if ((r = mp__seg_open(&q->seg, name, (size_t)reserve)) < 0) {
    free(q);
    return r;
  }
  q_set_ptrs(q);
  *qp = q;
  return 0;
}

const char *mp_queue_name(const mp_queue_t *q) {
  return q ? q->seg.name : NULL;
}

int mp_queue_destroy(mp_queue_t *q) {
  if (!q)
    return MP_EINVAL;
  int fd = atomic_load(&q->fifo_fd);
  if (fd >= 0)
    mp__close(fd);
  bool unlink_names = q->creator != 0 && (uint32_t)q->creator == q_self();
  mp__seg_close(&q->seg);
  if (unlink_names) {
    mp__seg_unlink(q->seg.name);
    mp__seg_unlink(q->fifo_name);
  }
  free(q);
  return 0;
}
