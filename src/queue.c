/* Shared-memory queue (Queue, JoinableQueue, SimpleQueue).
 *
 * Layout of the segment: a 4 KiB header, then a ring of byte records. A
 * record is an 8-byte length followed by the payload padded to 8; a payload
 * may wrap around the end of the ring (two copies), a length never does.
 * Positions are monotonic byte counters taken modulo the ring size, a power
 * of two that starts small and doubles as the backlog needs it, up to what
 * the capacity allows: the address space of the largest ring is reserved up
 * front, memory is only used as touched. When the ring doubles, the bytes
 * whose counter has the old size's bit set move to the new upper half,
 * which the old ring never used: until the new size is stored, nothing
 * visible changed.
 *
 * Two locks, one for the producers' side (tail, put count) and one for the
 * consumers' side (head, get count, done count), so a producer and a
 * consumer never wait for each other: they meet only on the published tail
 * and head, as in a single-producer single-consumer ring, and each side
 * caches the other's last value so those lines move only when needed.
 * Operations that need a consistent view of both sides (qsize, close, join,
 * growing the ring, and every operation once somebody polls the queue) take
 * both, producer lock first.
 *
 * A lock word holds its owner's pid (plus a bit for sleepers), so a waiter
 * that finds the owner dead takes the lock over. Crash safety: each side's
 * state is double-buffered. The owner writes payload bytes into free ring
 * space and the new state into the inactive copy, then switches copies with
 * one store: before that store nothing happened, after it the operation is
 * complete. It then publishes the new tail (or head) for the other side; a
 * process killed between the two leaves the publication to whoever takes
 * its lock over, and sleepers wake once a second to look for such a dead
 * owner on the other side.
 *
 * Sleepers wait on events (put_e for consumers, get_e for producers, done_e
 * for join) after spinning on the published counter for as long as recent
 * waits showed the other side running (see q_wait); a consumer that keeps
 * catching up with a stream lets a short gap pass before it looks again
 * (see q_gap), and a put asks for the ring lines ahead for writing; the
 * waking side touches an event only when its waiter count says somebody
 * sleeps, and wakes once per arrival of sleepers, so the hot path makes no
 * system call and writes no shared line besides the ring and its own
 * published counter.
 *
 * Polling: a FIFO beside the segment (/dev/shm/<name>.p) holds one byte
 * exactly while the queue has messages or is closed, once anybody asked for
 * a descriptor (`polled`); from then on operations take both locks and
 * write or drain the byte on the empty <-> non-empty transitions only. */
#include <fcntl.h>
#include <stddef.h>
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
#include "robust.h"

#define Q_MAGIC 0x6d707175u /* "mpqu" */
#define Q_VERSION 3u
#define Q_HDR 4096u
#define Q_RING_MIN ((uint64_t)64 << 10)
/* Up to this size the ring grows as soon as it is full; beyond it, only
 * when the consumers are not draining it (see q_draining), and it shrinks
 * back once they have caught up: a ring that fits in the caches moves a
 * stream several times faster than one that sweeps megabytes. */
#define Q_RING_SOFT ((uint64_t)1 << 20)
/* How long a full put waits for consumers that do not make room before
 * growing the ring past Q_RING_SOFT: this for the first doubling, twice
 * as long for each further one, at most Q_GROW_WAIT_MAX_MS (see
 * q_put_iov). */
#define Q_GROW_WAIT_MS 2
#define Q_GROW_WAIT_MAX_MS 16
#define Q_WANT_GROW 1 /* q_push: full, but the ring may grow */
#define Q_REC 8u
/* How far ahead of the tail a put asks for ring lines (q_prefetch_w). */
#define Q_PREFETCH 512u
#define Q_LOCK_SPIN 200
/* Rounds of busy waiting (mp__cpu_relax, about 40 ns each on x86-64)
 * before a blocked put or get sleeps: adapted per thread between these
 * bounds (see q_wait). A thread whose budget has fallen spins the whole
 * Q_SPIN_MAX once every Q_SPIN_PROBE sleeps, to find out whether the
 * other side is running again. */
#define Q_SPIN_MIN 8
#define Q_SPIN_START 256
#define Q_SPIN_MAX 1024
#define Q_SPIN_PROBE 16
/* A consumer whose look at the producers' tail finds less than
 * Q_GAP_BYTES more lets a gap of this many rounds pass and looks again
 * (see q_gap): between these bounds while a stream runs, or 0. A failed
 * try at Q_GAP_MIN is not repeated for up to Q_GAP_SKIP_MAX such looks. */
#define Q_GAP_BYTES 1024
#define Q_GAP_MIN 16
#define Q_GAP_MAX 128
#define Q_GAP_SKIP_MAX 64
#define Q_FIFO_SUFFIX ".p"

enum { Q_P = 1, Q_C = 2, Q_BOTH = 3 };

typedef struct {
  uint64_t tail; /* byte counter; position = counter & (ring - 1) */
  uint64_t nput; /* messages ever put */
} q_pstate_t;

typedef struct {
  uint64_t head;
  uint64_t nget;  /* messages ever taken */
  uint64_t ndone; /* task_done calls */
} q_cstate_t;

/* Something to sleep on. `woken` says a wake went out since the last
 * sleeper arrived: until another one arrives, signalling is free, however
 * long the woken ones take to run (and a sleeper killed while counted costs
 * one useless wake, not one per operation). */
typedef struct {
  _Atomic uint32_t ev;      /* futex word, moved on every wake */
  _Atomic uint32_t waiters; /* sleeping or about to */
  _Atomic uint32_t woken;
} q_event_t;

typedef struct {
  uint32_t magic, version;
  uint32_t flags, pad0;
  uint64_t maxsize;   /* messages, 0: none */
  uint64_t capacity;  /* largest message */
  uint64_t cap_bytes; /* most ring bytes in use */
  uint64_t ring_max;
  uint64_t reserve; /* mapping length */
  /* Producers' side, under plock. The caches hold the last published
   * head and get count seen: lower bounds, refreshed when they say full. */
  _Alignas(MP__CACHELINE) _Atomic uint64_t plock; /* robust.h owner word */
  _Atomic uint32_t pcur;
  q_pstate_t ps[2];
  _Atomic uint64_t head_cache, nget_cache;
  /* Consumers' side, under clock. */
  _Alignas(MP__CACHELINE) _Atomic uint64_t clock;
  _Atomic uint32_t ccur;
  q_cstate_t cs[2];
  _Atomic uint64_t tail_cache;
  /* Published by producers: everything before tail_pub is readable. */
  _Alignas(MP__CACHELINE) _Atomic uint64_t tail_pub;
  /* Published by consumers: everything before head_pub is free. */
  _Alignas(MP__CACHELINE) _Atomic uint64_t head_pub;
  _Atomic uint64_t nget_pub;
  /* Rarely written. ring changes under both locks. */
  _Alignas(MP__CACHELINE) _Atomic uint64_t ring;
  _Atomic uint32_t closed;
  _Atomic uint32_t polled;
  _Atomic uint32_t fifo_dirty; /* a taken-over lock: resync the FIFO */
  /* Consumers sleep on put_e (moved by puts), producers on get_e, joiners
   * on done_e. */
  _Alignas(MP__CACHELINE) q_event_t put_e;
  _Alignas(MP__CACHELINE) q_event_t get_e;
  _Alignas(MP__CACHELINE) q_event_t done_e;
} q_shm_t;

_Static_assert(sizeof(q_shm_t) <= Q_HDR, "queue header too large");
_Static_assert(MP_QUEUE_NAME_MAX + sizeof Q_FIFO_SUFFIX <= MP__SEG_NAME_MAX,
               "no room for the FIFO suffix");

struct mp_queue {
  mp__seg_t seg;
  q_shm_t *h;
  unsigned char *data;
  /* Checked when created or opened, then used instead of the header's
   * copies, which any process that maps the queue could change. */
  uint64_t capacity, ring_max;
  _Atomic uint64_t ring_ok;  /* last ring size found inside the object */
  _Atomic uint64_t size_ok;  /* object bytes known to be backed */
  _Atomic int fifo_fd; /* -1 until first needed */
  pid_t creator;       /* pid that created the queue, 0 if opened */
  char fifo_name[MP__SEG_NAME_MAX];
};

#define LD(p, mo) atomic_load_explicit((p), memory_order_##mo)
#define ST(p, v, mo) atomic_store_explicit((p), (v), memory_order_##mo)

/* ---- locks --------------------------------------------------------------- */

static inline _Atomic uint64_t *q_lockword(mp_queue_t *q, int side) {
  return side == Q_P ? &q->h->plock : &q->h->clock;
}

static void q_wake_all(q_shm_t *h) {
  q_event_t *e[3] = {&h->put_e, &h->get_e, &h->done_e};
  for (int i = 0; i < 3; i++) {
    atomic_fetch_add(&e[i]->ev, 1);
    mp__futex_wake(&e[i]->ev, INT32_MAX);
  }
}

/* After taking a lock from a dead owner. Its side's state is consistent
 * (see the top); what may be missing is the publication for the other side,
 * the wakes and the FIFO byte. */
static void q_recover(mp_queue_t *q, int side) {
  q_shm_t *h = q->h;
  if (side == Q_P) {
    const q_pstate_t *s = &h->ps[LD(&h->pcur, acquire) & 1u];
    ST(&h->tail_pub, s->tail, release);
  } else {
    const q_cstate_t *s = &h->cs[LD(&h->ccur, acquire) & 1u];
    ST(&h->head_pub, s->head, release);
    ST(&h->nget_pub, s->nget, release);
  }
  if (LD(&h->polled, relaxed))
    ST(&h->fifo_dirty, 1, relaxed);
  q_wake_all(h);
}

/* The locks are owner words of the robust core: a dead owner's lock is
 * taken over at once by the next caller, within MP__RB_CHECK_MS by a
 * sleeper, whatever signals do; a live owner's never. */
static void q_lock_one(mp_queue_t *q, int side) {
  if (MP__UNLIKELY(mp__rb_acquire(q_lockword(q, side), 0, Q_LOCK_SPIN,
                                  MP_FOREVER) == MP_EOWNERDEAD))
    q_recover(q, side);
}

static void q_unlock_one(mp_queue_t *q, int side) {
  mp__rb_release(q_lockword(q, side));
}

static void q_lock(mp_queue_t *q, int sides) {
  if (sides & Q_P)
    q_lock_one(q, Q_P);
  if (sides & Q_C)
    q_lock_one(q, Q_C);
}

static void q_unlock(mp_queue_t *q, int sides) {
  if (sides & Q_C)
    q_unlock_one(q, Q_C);
  if (sides & Q_P)
    q_unlock_one(q, Q_P);
}

/* A look at the other side's lock, by sleepers now and then and before
 * reporting empty or full: take it over (and so finish what its dead owner
 * left unpublished) if its owner died. Returns true if it was dead. */
static bool q_check_lock(mp_queue_t *q, int side) {
  uint64_t v = LD(q_lockword(q, side), relaxed);
  if (MP__LIKELY(!(v & MP__RB_ID)) || !mp__rb_owner_dead(v, 0))
    return false;
  q_lock_one(q, side);
  q_unlock_one(q, side);
  return true;
}

/* Live states; only valid under their lock. */
static inline q_pstate_t q_pload(const mp_queue_t *q) {
  return q->h->ps[LD(&q->h->pcur, acquire) & 1u];
}
static inline q_cstate_t q_cload(const mp_queue_t *q) {
  return q->h->cs[LD(&q->h->ccur, acquire) & 1u];
}

/* Switch to the new state: the single store that makes an operation
 * happen. */
static inline void q_pcommit(mp_queue_t *q, const q_pstate_t *s) {
  uint32_t c = (LD(&q->h->pcur, relaxed) & 1u) ^ 1u;
  q->h->ps[c] = *s;
  ST(&q->h->pcur, c, release);
}
static inline void q_ccommit(mp_queue_t *q, const q_cstate_t *s) {
  uint32_t c = (LD(&q->h->ccur, relaxed) & 1u) ^ 1u;
  q->h->cs[c] = *s;
  ST(&q->h->ccur, c, release);
}

/* ---- poll FIFO ------------------------------------------------------------
 */

static int q_shm_path(char *buf, size_t cap, const char *name) {
  int n = snprintf(buf, cap, "/dev/shm%s", name);
  return n < 0 || (size_t)n >= cap ? MP_ENAMETOOLONG : 0;
}

/* Remove a name, then stop tracking it: in the other order a process
 * killed in between would leave the name behind. */
static void q_unlink(const char *name) {
  char path[MP__SEG_NAME_MAX + 16];
  if (q_shm_path(path, sizeof path, name) == 0)
    unlink(path);
  mp__tracker_unregister(name);
}

static int q_fifo_get(mp_queue_t *q) {
  int fd = atomic_load(&q->fifo_fd);
  if (fd >= 0)
    return fd;
  char path[MP__SEG_NAME_MAX + 16];
  int r = q_shm_path(path, sizeof path, q->fifo_name);
  if (r < 0)
    return r;
  /* O_RDWR: never blocks on open and never sees EOF; one descriptor both
   * signals and is polled. */
  fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0)
    return -errno;
  struct stat st;
  if (fstat(fd, &st) < 0 || !S_ISFIFO(st.st_mode) ||
      (r = mp__seg_check_owner(&st)) < 0) {
    mp__close(fd);
    return MP_EACCES;
  }
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

/* Under both locks. */
static bool q_readable(mp_queue_t *q) {
  return q_pload(q).nput != q_cload(q).nget || LD(&q->h->closed, acquire);
}

/* Make the FIFO hold one byte exactly when the queue is readable. Under
 * both locks. */
static void q_fifo_sync(mp_queue_t *q) {
  ST(&q->h->fifo_dirty, 0, relaxed);
  int fd = q_fifo_get(q);
  if (fd < 0)
    return;
  int n = 0;
  if (ioctl(fd, FIONREAD, &n) < 0)
    return;
  bool want = q_readable(q);
  if (want && n == 1)
    return;
  if (n > 0)
    q_fifo_set(fd, false);
  if (want)
    q_fifo_set(fd, true);
}

/* After an operation that changed readability from `was`; under both
 * locks. */
static void q_fifo_update(mp_queue_t *q, bool was) {
  bool now = q_readable(q);
  if (was == now)
    return;
  int fd = q_fifo_get(q);
  if (fd >= 0)
    q_fifo_set(fd, now);
}

/* Lock what an operation on `side` needs: that side, or both while the queue
 * is polled. polled only changes under both locks, so it is stable once
 * either is held. Returns the sides held. */
static int q_lock_op(mp_queue_t *q, int side) {
  for (;;) {
    int sides = LD(&q->h->polled, relaxed) ? Q_BOTH : side;
    q_lock(q, sides);
    if (sides == Q_BOTH) {
      if (LD(&q->h->fifo_dirty, relaxed))
        q_fifo_sync(q);
      return sides;
    }
    if (!LD(&q->h->polled, relaxed))
      return sides;
    q_unlock(q, sides);
  }
}

/* ---- ring ---------------------------------------------------------------- */

static inline uint64_t q_rec_size(uint64_t len) {
  return Q_REC + ((len + 7) & ~(uint64_t)7);
}

/* The ring size in the header, once checked: a power of two no larger
 * than the reservation, whose pages the object really has (a page past
 * the object's end would be a SIGBUS). 0 when it is none of these: the
 * header was corrupted, the caller returns MP_EPROTO. The check runs once
 * per size seen, so the fast path is one compare. */
static uint64_t q_ring_check(mp_queue_t *q, uint64_t r) {
  if (r < 2 * Q_REC || (r & (r - 1)) || r > q->ring_max)
    return 0;
  if (Q_HDR + r > LD(&q->size_ok, relaxed)) {
    struct stat st;
    if (fstat(q->seg.fd, &st) < 0 || (uint64_t)st.st_size < Q_HDR + r)
      return 0;
    ST(&q->size_ok, Q_HDR + r, relaxed);
  }
  ST(&q->ring_ok, r, relaxed);
  return r;
}

static inline uint64_t q_ring(mp_queue_t *q) {
  uint64_t r = LD(&q->h->ring, acquire);
  return MP__LIKELY(r == LD(&q->ring_ok, relaxed)) ? r : q_ring_check(q, r);
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

static inline uint64_t q_peek_len(const mp_queue_t *q, uint64_t ring,
                                  uint64_t head) {
  uint64_t len;
  memcpy(&len, q->data + (head & (ring - 1)), sizeof len);
  return len;
}

/* Allocate the pages of [off, off+len) now: on a full /dev/shm the
 * operation fails with MP_ENOSPC instead of a later SIGBUS on touching
 * them. */
static int q_back(mp_queue_t *q, uint64_t off, uint64_t len) {
  int r;
  while ((r = posix_fallocate(q->seg.fd, (off_t)off, (off_t)len)) == EINTR) {
  }
  return r == 0 || r == EOPNOTSUPP ? 0 : -r;
}

/* Under both locks: double the ring until `need` bytes fit. Counters stay;
 * a byte at counter c lives at c mod size, so when the size doubles from S
 * the bytes with c & S set move up by S, into space the old ring never
 * used. The new size is stored last. */
static int q_grow(mp_queue_t *q, uint64_t head, uint64_t tail, uint64_t need) {
  uint64_t old = q_ring(q), n = old;
  if (!old || tail - head > old)
    return MP_EPROTO;
  while (n < need)
    n *= 2;
  if (n > q->ring_max)
    return MP_EMSGSIZE;
  int r = mp__seg_grow(&q->seg, Q_HDR + n);
  if (r < 0 || (r = q_back(q, Q_HDR + old, n - old)) < 0)
    return r;
  ST(&q->size_ok, Q_HDR + n, relaxed);
  for (uint64_t size = old; size < n; size *= 2) {
    for (uint64_t c = head; c < tail;) {
      uint64_t end = (c | (size - 1)) + 1; /* next multiple of size */
      if (end > tail)
        end = tail;
      if (c & size)
        memcpy(q->data + (c & (size - 1)) + size, q->data + (c & (size - 1)),
               end - c);
      c = end;
    }
  }
  ST(&q->h->ring, n, release);
  return 0;
}

/* Under both locks: halve the ring while the backlog fits in a quarter of
 * the result, down to Q_RING_SOFT. The reverse of q_grow: the bytes whose
 * counter has the new size's bit set move down by it, into positions that
 * hold no live byte under the old size; the new size is stored after each
 * halving, so a process killed in the middle leaves a consistent ring. */
static void q_shrink(mp_queue_t *q, uint64_t head, uint64_t tail) {
  uint64_t size = q_ring(q);
  if (!size || tail - head > size)
    return; /* corrupted: the next operation reports it */
  while (size > Q_RING_SOFT && (tail - head) * 4 <= size / 2) {
    uint64_t half = size / 2;
    for (uint64_t c = head; c < tail;) {
      uint64_t end = (c | (half - 1)) + 1; /* next multiple of half */
      if (end > tail)
        end = tail;
      if (c & half)
        memcpy(q->data + (c & (half - 1)), q->data + (c & (size - 1)),
               end - c);
      c = end;
    }
    size = half;
    ST(&q->h->ring, size, release);
  }
}

/* A consumer that has nearly caught up with a ring grown past Q_RING_SOFT
 * gives the space back, so the stream moves through cached memory again.
 * Called without locks. */
static void q_maybe_shrink(mp_queue_t *q) {
  q_lock(q, Q_BOTH);
  q_shrink(q, q_cload(q).head, q_pload(q).tail);
  q_unlock(q, Q_BOTH);
}

/* ---- waiting ------------------------------------------------------------- */

/* When this thread next looks at the other side's lock while it sleeps:
 * an absolute schedule across calls, so signals that end sleeps early
 * cannot postpone the look. */
static _Thread_local uint64_t q_next_check_ns;

/* How this thread waits, for producers ([0]) and for consumers ([1]).
 *
 * `spin`: busy-wait rounds before sleeping. Spinning pays only while the
 * other side is running: a wait that saw the other side move in time
 * doubles it, one that saw nothing move halves it, so on a loaded machine,
 * where the side we wait for is often not scheduled at all, a waiter soon
 * goes to sleep at once instead of burning the CPU time that side needs.
 * Once both sides of a request and its reply sleep, though, each waits
 * for the other's wake-up and neither would ever see a move in time: so
 * every Q_SPIN_PROBE sleeps a waiter spins the whole Q_SPIN_MAX again
 * (`probe` counts them down), which finds a partner that runs.
 *
 * `gap` (consumers): rounds to let pass once the consumer has caught up
 * with the producers, before it looks at their tail again. A consumer
 * that keeps up with a stream catches up after nearly every message, and
 * its looks pull the published tail and the ring line the producer is
 * writing into its own cache, once per message: on two CPUs that costs
 * the producer two cache-line transfers per message, several times its
 * own work. Letting a few microseconds pass lets a batch build up, taken
 * at one transfer per line. Whether it pays shows at once: more came
 * meanwhile (a stream) or nothing did (a request and reply, where waiting
 * only adds latency), see q_gap. `skip` and `left` space out the tries
 * that failed. */
typedef struct {
  int spin, probe;
  int gap, skip, left; /* consumers */
} q_adapt_t;

static _Thread_local q_adapt_t q_ad[2] = {{.spin = Q_SPIN_START},
                                          {.spin = Q_SPIN_START}};

static void q_pause(int rounds) {
  for (int i = 0; i < rounds; i++)
    mp__cpu_relax();
}

/* Wait until *word moves from `seen`, the queue closes, the deadline, or the
 * periodic recheck (which also repairs a dead owner of `other`'s lock).
 * While spinning, waits for *word to move by `want` (a batch of room for a
 * producer, so that it refills in bursts instead of in step with every
 * get); any move ends a sleep. Called without locks. */
static void q_wait(mp_queue_t *q, _Atomic uint64_t *word, uint64_t seen,
                   uint64_t want, q_event_t *e, int other,
                   const mp__deadline_t *dl) {
  q_shm_t *h = q->h;
  q_adapt_t *ad = &q_ad[other == Q_P];
  int n = ad->spin;
  if (n < Q_SPIN_MAX && ad->probe == 0)
    n = Q_SPIN_MAX;
  for (int i = 0;; i++) {
    uint64_t v = LD(word, acquire);
    if (v - seen >= want || LD(&h->closed, relaxed)) {
      if (i > 0)
        ad->spin = n * 2 > Q_SPIN_MAX ? Q_SPIN_MAX : n * 2;
      return;
    }
    if (i == n) {
      if (v != seen)
        return; /* moving, not by want yet: the other side runs */
      ad->spin = ad->spin / 2 < Q_SPIN_MIN ? Q_SPIN_MIN : ad->spin / 2;
      ad->probe = ad->probe > 0 ? ad->probe - 1 : Q_SPIN_PROBE;
      break;
    }
    mp__cpu_relax();
  }
  /* Counted before looking again: a publisher that stores first and reads
   * the count second either sees us or is seen by us. */
  atomic_fetch_add(&e->waiters, 1);
  atomic_store(&e->woken, 0);
  uint32_t v = atomic_load(&e->ev);
  if (atomic_load(word) == seen && !atomic_load(&h->closed)) {
    /* Bounded: a publisher killed before its wake costs one period. */
    mp__rb_sleep(&e->ev, v, dl);
    /* Nothing moved: look at the other side's lock now and then, which
     * also finishes what a killed owner committed but left unpublished. */
    uint64_t now = mp__now_ns();
    if (atomic_load(word) == seen && now >= q_next_check_ns) {
      q_next_check_ns = now + MP__RB_CHECK_MS * 1000000ull;
      q_check_lock(q, other);
    }
  }
  atomic_fetch_sub(&e->waiters, 1);
}

/* After publishing: wake whoever sleeps on e, unless a wake already went
 * out since the last sleeper arrived. All of them: each looks again and
 * goes back to sleep if there is nothing for it. */
static inline void q_signal(q_event_t *e) {
  atomic_thread_fence(memory_order_seq_cst);
  if (MP__LIKELY(LD(&e->waiters, relaxed) == 0))
    return;
  if (LD(&e->woken, relaxed) || atomic_exchange(&e->woken, 1))
    return;
  atomic_fetch_add(&e->ev, 1);
  mp__futex_wake(&e->ev, INT32_MAX);
}

/* Take the two cache lines at p for writing, without waiting. The ring
 * lines a producer writes were last read by a consumer (a lap earlier, or
 * just now by its hardware prefetcher), so each write must first take the
 * line back from the consumer's CPU: 80-250 ns on a machine such as a VM
 * whose two CPUs sit apart. The commit's fence waits for every pending
 * store, so without this each put waits for one or two such transfers in
 * turn; asked for Q_PREFETCH bytes ahead, they overlap with the puts
 * before (the 64-byte stream ran about 3x faster on two CPUs). x86-64 needs
 * the PREFETCHW instruction itself: GCC turns a write prefetch into a read
 * one unless built for a CPU that has it, and every x86-64 CPU either
 * does or runs it as a no-op. */
static inline void q_prefetch_w(const void *p) {
#if defined(__x86_64__)
  __asm__ volatile("prefetchw (%0)\n\tprefetchw %c1(%0)"
                   :
                   : "r"(p), "i"(MP__CACHELINE));
#else
  __builtin_prefetch(p, 1, 3);
  __builtin_prefetch((const char *)p + MP__CACHELINE, 1, 3);
#endif
}

static inline bool q_valid(const mp_queue_t *q) {
  return q && q->h && q->h->magic == Q_MAGIC;
}

/* ---- put ----------------------------------------------------------------- */

/* Append one message to s (not yet committed), under the producers' lock
 * (and the consumers' one when *held says so; taken here to grow the ring).
 * MP_EAGAIN when full. */
static int q_push(mp_queue_t *q, q_pstate_t *s, int *held, const void *msg,
                  size_t len, bool may_grow) {
  q_shm_t *h = q->h;
  uint64_t rec = q_rec_size(len);
  uint64_t head = LD(&h->head_cache, relaxed);
  uint64_t nget = LD(&h->nget_cache, relaxed);
  uint64_t ring = q_ring(q);
  if (MP__UNLIKELY(!ring || s->tail - head > ring)) {
    /* The cache may lag: only the published head counts. */
    head = LD(&h->head_pub, acquire);
    if (!ring || s->tail - head > ring)
      return MP_EPROTO;
  }
  uint64_t cap_bytes = q_rec_size(q->capacity);
  uint64_t lim = ring < cap_bytes ? ring : cap_bytes;
  if ((h->maxsize && s->nput - nget >= h->maxsize) ||
      s->tail - head + rec > lim) {
    /* The caches say full: look at what the consumers published. */
    nget = LD(&h->nget_pub, acquire);
    head = LD(&h->head_pub, acquire);
    ST(&h->nget_cache, nget, relaxed);
    ST(&h->head_cache, head, relaxed);
    if (h->maxsize && s->nput - nget >= h->maxsize)
      return MP_EAGAIN;
    if (s->tail - head > ring)
      return MP_EPROTO; /* a head that is not behind the tail */
    if (s->tail - head + rec > cap_bytes)
      return MP_EAGAIN;
    if (s->tail - head + rec > ring) {
      if (!may_grow && ring >= Q_RING_SOFT)
        return Q_WANT_GROW;
      if (!(*held & Q_C)) {
        q_lock_one(q, Q_C);
        *held |= Q_C;
      }
      /* Consumers may have moved on while we waited for their lock. */
      head = q_cload(q).head;
      if (s->tail - head + rec > ring) {
        int r = q_grow(q, head, s->tail, s->tail - head + rec);
        if (r < 0)
          return r;
        ring = q_ring(q);
        if (!ring)
          return MP_EPROTO;
      }
    }
  }
  /* Ask for the lines a few records on for writing now, while they are
   * free: see q_prefetch_w. */
  if (s->tail - head + rec + Q_PREFETCH + 2 * MP__CACHELINE <= ring)
    q_prefetch_w(q->data + ((s->tail + Q_PREFETCH) & (ring - 1)));
  uint64_t l = len;
  memcpy(q->data + (s->tail & (ring - 1)), &l, sizeof l);
  if (len)
    q_ring_write(q, ring, s->tail + Q_REC, msg, len);
  s->tail += rec;
  s->nput++;
  return 0;
}

static int q_put_iov(mp_queue_t *q, const struct iovec *msgs, size_t n,
                     int timeout_ms) {
  q_shm_t *h = q->h;
  mp__deadline_t dl;
  size_t done = 0;
  bool dl_set = false, rechecked = false;
  /* A put that may not wait grows a full ring at once; others first give
   * the consumers a moment to make room. */
  bool may_grow = timeout_ms == 0;
  for (;;) {
    int held = q_lock_op(q, Q_P);
    bool was = held == Q_BOTH && q_readable(q);
    q_pstate_t before = q_pload(q), s = before;
    int r = 0;
    if (LD(&h->closed, acquire)) {
      r = MP_ECLOSED;
    } else {
      while (done < n && (r = q_push(q, &s, &held, msgs[done].iov_base,
                                     msgs[done].iov_len, may_grow)) == 0)
        done++;
    }
    if (s.nput != before.nput) {
      q_pcommit(q, &s);
      ST(&h->tail_pub, s.tail, release);
      q_signal(&h->put_e);
      if (held == Q_BOTH && LD(&h->polled, relaxed))
        q_fifo_update(q, was);
    }
    uint64_t seen = LD(&h->head_cache, relaxed);
    q_unlock(q, held);
    if (done == n)
      return (int)n;
    if (r != MP_EAGAIN && r != Q_WANT_GROW)
      return done ? (int)done : r;
    if (r == Q_WANT_GROW && dl_set && mp__deadline_passed(&dl)) {
      may_grow = true; /* out of time to wait: the capacity is there */
      continue;
    }
    if (timeout_ms == 0 || (dl_set && mp__deadline_passed(&dl))) {
      if (!rechecked && q_check_lock(q, Q_C)) {
        rechecked = true;
        continue;
      }
      return done ? (int)done : MP_EFULL;
    }
    if (!dl_set) {
      mp__deadline_init(&dl, timeout_ms);
      dl_set = true;
    }
    /* Wait for a quarter of the ring to come free, or for any room once
     * asleep. */
    uint64_t want = LD(&h->ring, relaxed) / 4;
    if (r == Q_WANT_GROW) {
      /* The ring could grow: first give consumers Q_GROW_WAIT_MS to make
       * room (a descheduled consumer is back soon, and a ring that grows
       * for it leaves the caches), then grow it. */
      int ms = Q_GROW_WAIT_MS;
      for (uint64_t sz = Q_RING_SOFT; sz < want * 4 && ms < Q_GROW_WAIT_MAX_MS;
           sz *= 2)
        ms *= 2;
      mp__deadline_t gdl;
      mp__deadline_init(&gdl, ms);
      bool caller_first = timeout_ms != MP_FOREVER &&
                          mp__deadline_remaining_ms(&dl) < ms;
      q_wait(q, &h->head_pub, seen, want, &h->get_e, Q_C,
             caller_first ? &dl : &gdl);
      may_grow = LD(&h->head_pub, acquire) == seen;
      continue;
    }
    q_wait(q, &h->head_pub, seen, want, &h->get_e, Q_C, &dl);
  }
}

int mp_queue_put(mp_queue_t *q, const void *msg, size_t len, int timeout_ms) {
  if (!q_valid(q) || (!msg && len) || mp__check_timeout(timeout_ms) < 0)
    return MP_EINVAL;
  if (len > q->capacity)
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
    if (msgs[i].iov_len > q->capacity)
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

/* The consumers' tail cache ran out and the published tail shows only a
 * little more (under Q_GAP_BYTES): the producers are either streaming
 * just ahead of us or answering one message at a time. Let this thread's
 * gap pass and look again: if more came meanwhile (a stream), the gap
 * doubles, up to Q_GAP_MAX; if nothing did (a reply, which waiting only
 * delays), it halves, and below Q_GAP_MIN / 8 it ends. With no gap, the
 * next such look tries Q_GAP_MIN again, unless recent tries failed: each
 * failure doubles the number of looks before the next try, up to
 * Q_GAP_SKIP_MAX. Returns the tail seen last. Under the consumers'
 * lock. */
static uint64_t q_gap(mp_queue_t *q, uint64_t t) {
  q_adapt_t *ad = &q_ad[1];
  if (!ad->gap) {
    if (ad->left > 0) {
      ad->left--;
      return t;
    }
    ad->gap = Q_GAP_MIN;
  }
  q_pause(ad->gap);
  uint64_t t2 = LD(&q->h->tail_pub, acquire);
  if (t2 != t) {
    ad->gap = ad->gap * 2 > Q_GAP_MAX ? Q_GAP_MAX : ad->gap * 2;
    ad->skip = 0;
  } else if ((ad->gap /= 2) < Q_GAP_MIN / 8) {
    ad->gap = 0;
    ad->skip = ad->skip * 2 + 1 > Q_GAP_SKIP_MAX ? Q_GAP_SKIP_MAX
                                                  : ad->skip * 2 + 1;
    ad->left = ad->skip;
  }
  return t2;
}

/* Is a message readable at s->head? Refreshes the tail cache when it says
 * no. Under the consumers' lock. */
static inline bool q_has(mp_queue_t *q, const q_cstate_t *s) {
  if (s->head != LD(&q->h->tail_cache, relaxed))
    return true;
  uint64_t t = LD(&q->h->tail_pub, acquire);
  if (t != s->head && t - s->head < Q_GAP_BYTES)
    t = q_gap(q, t);
  ST(&q->h->tail_cache, t, relaxed);
  return s->head != t;
}

/* A record of len payload bytes at head lies between head and the tail
 * the consumers know of, inside a ring that holds no more than ring bytes:
 * anything else was not written by a producer. Under the consumers' lock,
 * after q_has said a record is there. */
static inline bool q_rec_fits(const mp_queue_t *q, uint64_t ring,
                              uint64_t head, uint64_t len) {
  uint64_t avail = LD(&q->h->tail_cache, relaxed) - head;
  return avail <= ring && len <= q->capacity && q_rec_size(len) <= avail;
}

static inline void q_pop(const mp_queue_t *q, uint64_t ring, q_cstate_t *s,
                         void *dst, uint64_t len) {
  if (len)
    q_ring_read(q, ring, s->head + Q_REC, dst, (size_t)len);
  s->head += q_rec_size(len);
  s->nget++;
}

/* Take what g asks for into s (not yet committed); MP_EAGAIN when empty. */
static int q_take(mp_queue_t *q, q_cstate_t *s, const q_get_t *g) {
  bool closed = LD(&q->h->closed, acquire); /* before looking at the tail */
  if (!q_has(q, s))
    return closed ? MP_ECLOSED : MP_EAGAIN;
  uint64_t ring = q_ring(q);
  if (MP__UNLIKELY(!ring))
    return MP_EPROTO;
  uint64_t len = q_peek_len(q, ring, s->head);
  if (MP__UNLIKELY(!q_rec_fits(q, ring, s->head, len)))
    return MP_EPROTO; /* not written by us: the segment was tampered with */
  switch (g->mode) {
  case Q_GET_MALLOC: {
    void *m = malloc(len ? (size_t)len : 1);
    if (!m)
      return MP_ENOMEM;
    q_pop(q, ring, s, m, len);
    *g->out = m;
    *g->len = (size_t)len;
    return 0;
  }
  case Q_GET_INTO:
    *g->len = (size_t)len;
    if (len > g->cap)
      return MP_ETOOSHORT;
    q_pop(q, ring, s, g->buf, len);
    return 0;
  default: {
    size_t off = 0, i = 0;
    unsigned char *b = g->buf;
    for (; i < g->n && q_has(q, s); i++) {
      len = q_peek_len(q, ring, s->head);
      if (MP__UNLIKELY(!q_rec_fits(q, ring, s->head, len)))
        break;
      if (len > g->cap - off) {
        if (i == 0) {
          g->msgs[0].iov_len = (size_t)len;
          return MP_ETOOSHORT;
        }
        break;
      }
      q_pop(q, ring, s, b ? b + off : NULL, len);
      g->msgs[i].iov_base = b ? b + off : NULL;
      g->msgs[i].iov_len = (size_t)len;
      off += (size_t)len;
      off = (off + 7) & ~(size_t)7;
      if (off > g->cap)
        off = g->cap;
    }
    return i ? (int)i : MP_EPROTO;
  }
  }
}

static int q_get(mp_queue_t *q, const q_get_t *g, int timeout_ms) {
  q_shm_t *h = q->h;
  mp__deadline_t dl;
  bool dl_set = false, rechecked = false;
  for (;;) {
    int held = q_lock_op(q, Q_C);
    bool was = held == Q_BOTH && q_readable(q);
    q_cstate_t before = q_cload(q), s = before;
    int r = q_take(q, &s, g);
    if (s.nget != before.nget) {
      q_ccommit(q, &s);
      ST(&h->head_pub, s.head, release);
      ST(&h->nget_pub, s.nget, release);
      q_signal(&h->get_e);
      if (held == Q_BOTH)
        q_fifo_update(q, was);
    } else if (r == MP_ETOOSHORT) {
      /* We may have been the one woken for this message: pass it on. */
      if (LD(&h->put_e.waiters, relaxed)) {
        atomic_fetch_add(&h->put_e.ev, 1);
        mp__futex_wake(&h->put_e.ev, INT32_MAX);
      }
    }
    q_unlock(q, held);
    if (r >= 0) {
      uint64_t ring = LD(&h->ring, relaxed);
      if (ring > Q_RING_SOFT &&
          (LD(&h->tail_cache, relaxed) - s.head) * 8 <= ring)
        q_maybe_shrink(q);
    }
    if (r != MP_EAGAIN)
      return r;
    if (timeout_ms == 0 || (dl_set && mp__deadline_passed(&dl))) {
      /* A producer killed between its commit and publishing it. */
      if (!rechecked && q_check_lock(q, Q_P)) {
        rechecked = true;
        continue;
      }
      return MP_EEMPTY;
    }
    if (!dl_set) {
      mp__deadline_init(&dl, timeout_ms);
      dl_set = true;
    }
    q_wait(q, &h->tail_pub, before.head, 1, &h->put_e, Q_P, &dl);
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
  q_lock(q, Q_BOTH);
  uint64_t c = q_pload(q).nput - q_cload(q).nget;
  q_unlock(q, Q_BOTH);
  *n = (size_t)c;
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
  q_lock(q, Q_BOTH);
  if (!LD(&h->closed, relaxed)) {
    bool was = q_readable(q);
    ST(&h->closed, 1, release);
    if (LD(&h->polled, relaxed))
      q_fifo_update(q, was);
  }
  q_wake_all(h);
  q_unlock(q, Q_BOTH);
  return 0;
}

int mp_queue_task_done(mp_queue_t *q) {
  if (!q_valid(q))
    return MP_EINVAL;
  if (!(q->h->flags & MP_QUEUE_JOINABLE))
    return MP_ENOTSUP;
  q_shm_t *h = q->h;
  q_lock_one(q, Q_C);
  q_cstate_t s = q_cload(q);
  if (s.ndone >= s.nget) {
    q_unlock_one(q, Q_C);
    return MP_EINVAL;
  }
  s.ndone++;
  q_ccommit(q, &s);
  q_signal(&h->done_e);
  q_unlock_one(q, Q_C);
  return 0;
}

int mp_queue_join(mp_queue_t *q, int timeout_ms) {
  if (!q_valid(q) || mp__check_timeout(timeout_ms) < 0)
    return MP_EINVAL;
  if (!(q->h->flags & MP_QUEUE_JOINABLE))
    return MP_ENOTSUP;
  q_shm_t *h = q->h;
  mp__deadline_t dl;
  mp__deadline_init(&dl, timeout_ms);
  int r = 0;
  /* Counted before checking, so a task_done after the check wakes us. */
  atomic_fetch_add(&h->done_e.waiters, 1);
  for (;;) {
    /* The event is read before `woken` is cleared: a task_done that finds
     * `woken` set by another one after our clear moves the event after
     * this read, so the sleep below returns at once. */
    uint32_t v = atomic_load(&h->done_e.ev);
    atomic_store(&h->done_e.woken, 0);
    q_lock(q, Q_BOTH);
    bool done = q_pload(q).nput == q_cload(q).ndone;
    q_unlock(q, Q_BOTH);
    if (done)
      break;
    if (timeout_ms == 0 || mp__deadline_passed(&dl)) {
      r = MP_ETIMEDOUT;
      break;
    }
    mp__rb_sleep(&h->done_e.ev, v, &dl);
  }
  atomic_fetch_sub(&h->done_e.waiters, 1);
  return r;
}

/* ---- polling ------------------------------------------------------------- */

int mp_queue_fd(mp_queue_t *q, int *fd) {
  if (!q_valid(q) || !fd)
    return MP_EINVAL;
  int f = q_fifo_get(q);
  if (f < 0)
    return f;
  q_lock(q, Q_BOTH);
  ST(&q->h->polled, 1, relaxed);
  q_fifo_sync(q);
  q_unlock(q, Q_BOTH);
  *fd = f;
  return 0;
}

static bool q_waitable_check(void *obj) {
  mp_queue_t *q = obj;
  q_lock(q, Q_BOTH);
  bool r = q_readable(q);
  q_unlock(q, Q_BOTH);
  return r;
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
  int r = q_shm_path(path, sizeof path, fifo_name);
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

/* The segment, tracked for removal at our exit. A random name is tracked
 * before the object exists, so a creator killed at any point leaves
 * nothing behind. A caller's name is tracked just after it was created
 * exclusively: tracking it first could remove another process's queue of
 * that name. */
static int q_create_seg(mp_queue_t *q, const char *name, size_t size,
                        size_t reserve) {
  if (name)
    return mp__seg_create(&q->seg, name, size, reserve, true);
  for (int tries = 0;; tries++) {
    char rnd[MP__SEG_NAME_MAX];
    int r = mp__random_name(rnd, sizeof rnd, "/mp-");
    if (r < 0 || (r = mp__tracker_register(rnd)) < 0)
      return r;
    r = mp__seg_create(&q->seg, rnd, size, reserve, false);
    if (r == 0)
      return 0;
    mp__tracker_unregister(rnd);
    if (r != MP_EEXIST || tries == 3)
      return r;
  }
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
  char canon[MP__SEG_NAME_MAX];
  if (o.name && ((r = mp__seg_canon(canon, sizeof canon, o.name)) < 0 ||
                 (r = q_check_name(canon)) < 0))
    return r;
  if (o.name)
    o.name = canon;
  uint64_t cap_bytes = q_rec_size(o.capacity), ring_max = Q_REC;
  while (ring_max < cap_bytes)
    ring_max *= 2;
  uint64_t ring0 = ring_max < Q_RING_MIN ? ring_max : Q_RING_MIN;
  mp_queue_t *q = q_alloc();
  if (!q)
    return MP_ENOMEM;
  if ((r = q_create_seg(q, o.name, Q_HDR + ring0, Q_HDR + ring_max)) < 0) {
    free(q);
    return r;
  }
  q_set_ptrs(q);
  if ((r = q_back(q, 0, Q_HDR + ring0)) < 0)
    goto fail;
  /* Tracked before it exists: killed in between, nothing is left over. */
  if ((r = mp__tracker_register(q->fifo_name)) < 0)
    goto fail;
  if ((r = q_make_fifo(q->fifo_name)) < 0) {
    mp__tracker_unregister(q->fifo_name);
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
  ST(&h->ring, ring0, relaxed);
  q->capacity = o.capacity;
  q->ring_max = ring_max;
  ST(&q->size_ok, Q_HDR + ring0, relaxed);
  q->creator = (pid_t)mp__self_pid();
  /* Openers wait for the magic: it says the header is complete. */
  atomic_thread_fence(memory_order_release);
  __atomic_store_n(&h->magic, Q_MAGIC, __ATOMIC_RELEASE);
  *qp = q;
  return 0;
fail:
  mp__seg_close(&q->seg);
  q_unlink(q->seg.name);
  free(q);
  return r;
}

/* The ring the capacity calls for: what mp_queue_create computes. */
static uint64_t q_ring_max_for(uint64_t capacity) {
  uint64_t cap_bytes = q_rec_size(capacity), ring_max = Q_REC;
  while (ring_max < cap_bytes)
    ring_max *= 2;
  return ring_max;
}

/* What mp__queue_check judges, read in this order: consumers' state before
 * producers', the ring last. */
typedef struct {
  uint32_t cc, pc;
  q_cstate_t cs;
  uint64_t head_pub;
  q_pstate_t ps;
  uint64_t tail_pub, ring;
} q_snap_t;

#define Q_SNAP_TRIES 64

static void q_snap(const q_shm_t *h, q_snap_t *s) {
  memset(s, 0, sizeof *s); /* padding, for memcmp */
  s->cc = atomic_load(&h->ccur);
  s->cs = h->cs[s->cc & 1u];
  s->head_pub = atomic_load(&h->head_pub);
  s->pc = atomic_load(&h->pcur);
  s->ps = h->ps[s->pc & 1u];
  s->tail_pub = atomic_load(&h->tail_pub);
  s->ring = atomic_load(&h->ring);
}

/* moving: the snapshot may mix moments; then only the checks that hold
 * whatever happened between its reads (each counter read is a value it had
 * at some point, and the consumers' ones were read first). */
static int q_snap_check(const q_shm_t *h, const q_snap_t *s, size_t obj_size,
                        bool moving) {
  uint64_t ring0 = h->ring_max < Q_RING_MIN ? h->ring_max : Q_RING_MIN;
  if (s->cc > 1 || s->pc > 1 || s->ring < ring0 || s->ring > h->ring_max ||
      (s->ring & (s->ring - 1)) || s->cs.nget > s->ps.nput ||
      s->cs.head > s->ps.tail || (s->ps.tail - s->cs.head) % 8)
    return MP_EPROTO;
  if (moving)
    return 0;
  if (Q_HDR + s->ring > obj_size || s->ps.tail - s->cs.head > s->ring ||
      s->tail_pub - s->head_pub > s->ring || s->cs.ndone > s->cs.nget ||
      s->ps.nput - s->cs.nget > (s->ps.tail - s->cs.head) / Q_REC)
    return MP_EPROTO;
  return 0;
}

int mp__queue_check(const void *base, size_t obj_size, size_t mapped) {
  if (!base || obj_size < Q_HDR || mapped < obj_size)
    return MP_EPROTO;
  const q_shm_t *h = base;
  if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != Q_MAGIC ||
      h->version != Q_VERSION)
    return MP_EINVAL; /* not a queue */
  if ((h->flags & ~(uint32_t)MP_QUEUE_JOINABLE) || h->capacity == 0 ||
      h->capacity > MP_QUEUE_MAX_CAPACITY ||
      h->cap_bytes != q_rec_size(h->capacity) ||
      h->ring_max != q_ring_max_for(h->capacity) ||
      h->reserve != Q_HDR + h->ring_max || h->reserve > mapped)
    return MP_EPROTO;
  /* A live queue moves between our reads: the state is judged only from
   * two snapshots in a row that agree. Every counter only moves forward
   * and every ring change comes with one (a grow inside a put) or changes
   * the size (a shrink), so two equal snapshots saw nothing move. */
  q_snap_t a, b;
  q_snap(h, &a);
  for (int tries = 0; tries < Q_SNAP_TRIES; tries++) {
    q_snap(h, &b);
    if (memcmp(&a, &b, sizeof a) == 0)
      return q_snap_check(h, &a, obj_size, false);
    a = b;
    mp__cpu_relax();
  }
  /* Always moving: only what no operation in flight can make look
   * wrong. Everything else is bounded where it is used. */
  return q_snap_check(h, &a, obj_size, true);
}

void mp__queue_fuzz_prepare(void *base) {
  q_shm_t *h = base;
  h->magic = Q_MAGIC;
  h->version = Q_VERSION;
  atomic_store(&h->plock, 0);
  atomic_store(&h->clock, 0);
}

int mp_queue_open(mp_queue_t **qp, const char *name) {
  int r;
  char canon[MP__SEG_NAME_MAX];
  if (!qp || !name)
    return MP_EINVAL;
  if ((r = mp__seg_canon(canon, sizeof canon, name)) < 0 ||
      (r = q_check_name(canon)) < 0)
    return r;
  name = canon;
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
  if (reserve == 0)
    return MP_EINVAL;
  if (reserve < Q_HDR + Q_REC * 2 ||
      reserve > Q_HDR + 2 * MP_QUEUE_MAX_CAPACITY)
    return MP_EPROTO;
  mp_queue_t *q = q_alloc();
  if (!q)
    return MP_ENOMEM;
  if ((r = mp__seg_open(&q->seg, name, (size_t)reserve)) < 0) {
    free(q);
    return r == MP_EINVAL ? MP_EPROTO : r; /* object beyond the reserve */
  }
  /* Checked on the mapping we keep; again while the object is found to
   * have grown since its size was read (a ring that grew meanwhile). */
  struct stat st;
  for (int tries = 0;
       (r = mp__queue_check(q->seg.base, q->seg.size, q->seg.reserve)) ==
           MP_EPROTO &&
       tries < 8 && fstat(q->seg.fd, &st) == 0 &&
       (uint64_t)st.st_size > q->seg.size &&
       (uint64_t)st.st_size <= q->seg.reserve;
       tries++)
    q->seg.size = (size_t)st.st_size;
  if (r < 0) {
    mp__seg_close(&q->seg);
    free(q);
    return r;
  }
  q_set_ptrs(q);
  q->capacity = q->h->capacity;
  q->ring_max = q->h->ring_max;
  ST(&q->size_ok, q->seg.size, relaxed);
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
  bool unlink_names = q->creator != 0 && (uint32_t)q->creator == mp__self_pid();
  mp__seg_close(&q->seg);
  if (unlink_names) {
    q_unlink(q->seg.name);
    q_unlink(q->fifo_name);
  }
  free(q);
  return 0;
}
