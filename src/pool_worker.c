/* Pool worker side: the loop a worker process or thread runs over its task
 * ring, writing results into its result ring (see pool_internal.h). */
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "pool_internal.h"

static __thread int tls_worker_index = -1;

void mp__pool_set_worker_index(int index) {
  tls_worker_index = index;
}

int mp_pool_worker_index(void) {
  return tls_worker_index >= 0 ? tls_worker_index : MP_EINVAL;
}

static size_t rec_size(size_t paylen) {
  return MP__POOL_REC +
         ((paylen + MP__POOL_REC - 1) & ~(size_t)(MP__POOL_REC - 1));
}

size_t mp__pool_rec_size(size_t paylen) {
  return rec_size(paylen);
}

/* Wait for a task at `tail`. Returns false when told to stop. No spinning:
 * on a machine with more runnable threads than cores (the normal case for a
 * pool next to other work) a spinning worker steals the core its producer
 * needs, and a woken sleeper is scheduled sooner than a spinner; bench/
 * measured round trips and throughput both better without it. */
static bool wait_task(mp__wshm_t *ws, uint64_t tail) {
  for (;;) {
    if (atomic_load_explicit(&ws->t_head, memory_order_acquire) != tail)
      return true;
    if (atomic_load_explicit(&ws->stop, memory_order_relaxed))
      return false;
    atomic_store(&ws->t_wait, 1);
    if (atomic_load(&ws->t_head) != tail || atomic_load(&ws->stop)) {
      atomic_store(&ws->t_wait, 0);
      continue;
    }
    mp__futex_wait(&ws->t_wait, 1, NULL);
  }
}

/* Room for a record of `size` bytes at the writer's head (after a skip record
 * when it would cross the end). Waits for the parent to drain. */
static uint8_t *rreserve(rwriter_t *rw, size_t size) {
  size_t idx = rw->head & MP__POOL_RMASK;
  size_t skip = idx + size > MP__POOL_RING ? MP__POOL_RING - idx : 0;
  for (unsigned i = 0;; i++) {
    uint64_t tail = atomic_load_explicit(&rw->ws->r_tail, memory_order_acquire);
    if (rw->head + skip + size - tail <= MP__POOL_RING)
      break;
    if (i < 1000) {
      mp__cpu_relax();
      continue;
    }
    atomic_store(&rw->ws->r_wait, 1);
    if (rw->head + skip + size - atomic_load(&rw->ws->r_tail) <=
        MP__POOL_RING) {
      atomic_store(&rw->ws->r_wait, 0);
      break;
    }
    mp__deadline_t dl;
    mp__deadline_init(&dl, 100);
    mp__futex_wait(&rw->ws->r_wait, 1, &dl);
  }
  if (skip) {
    mp__rrec_t *s = (mp__rrec_t *)(void *)(rw->base + idx);
    s->size = (uint32_t)skip;
    s->kind = MP__K_SKIP;
    rw->head += skip;
  }
  return rw->base + (rw->head & MP__POOL_RMASK);
}

static void rpublish(rwriter_t *rw, size_t size) {
  rw->head += size;
  atomic_store_explicit(&rw->ws->r_head, rw->head, memory_order_release);
  atomic_thread_fence(memory_order_seq_cst);
  if (atomic_load_explicit(&rw->ps->ucollect, memory_order_relaxed)) {
    /* A waiting parent thread collects; it hands over to the collector
     * (doorbell) if it leaves with results still unread. */
    if (atomic_load_explicit(&rw->ps->uwait, memory_order_relaxed)) {
      atomic_fetch_add(&rw->ps->useq, 1);
      mp__futex_wake(&rw->ps->useq, INT32_MAX);
    }
    return;
  }
  if (atomic_load_explicit(&rw->ps->parent_wait, memory_order_relaxed) &&
      atomic_exchange(&rw->ps->parent_wait, 0)) {
    uint64_t one = 1;
    ssize_t r = write(rw->doorbell, &one, sizeof one);
    (void)r;
  }
}

static void run_apply(rwriter_t *rw, const mp__trec_t *t, mp_buf_t *buf,
                      void *ctx) {
  mp_task_fn fn = (mp_task_fn)(uintptr_t)t->fn;
  buf->len = 0;
  uint64_t t0 = mp__now_ns();
  int st = fn((const uint8_t *)t + MP__POOL_REC, t->len, buf, ctx);
  uint64_t ns = mp__now_ns() - t0;
  size_t off = 0;
  do {
    size_t part = buf->len - off;
    if (part > MP__POOL_MAXPAY)
      part = MP__POOL_MAXPAY;
    size_t size = rec_size(part);
    mp__rrec_t *r = (mp__rrec_t *)(void *)rreserve(rw, size);
    r->size = (uint32_t)size;
    r->kind = MP__K_RESULT;
    r->id = t->id;
    r->seq = t->seq;
    r->start = t->start;
    r->count = 1;
    r->flags = off + part < buf->len ? MP__RF_MORE : 0;
    r->status = st;
    r->fail_index = 0;
    r->len = (uint32_t)part;
    r->ns = ns;
    if (part)
      memcpy((uint8_t *)r + MP__POOL_REC, (const uint8_t *)buf->data + off,
             part);
    rpublish(rw, size);
    off += part;
  } while (off < buf->len);
}

static void run_map(rwriter_t *rw, const mp__trec_t *t, void *ctx) {
  mp_map_fn fn = (mp_map_fn)(uintptr_t)t->fn;
  bool with_status = t->kind == MP__K_IMAP;
  size_t n = t->count, isz = t->item_size, rsz = t->result_size;
  size_t len = n * rsz + (with_status ? n * sizeof(int32_t) : 0);
  size_t size = rec_size(len);
  mp__rrec_t *r = (mp__rrec_t *)(void *)rreserve(rw, size);
  uint8_t *out = (uint8_t *)r + MP__POOL_REC;
  int32_t *sts = (int32_t *)(void *)(out + n * rsz);
  const uint8_t *in = (const uint8_t *)t + MP__POOL_REC;
  int status = 0;
  uint32_t fail = 0;
  uint64_t t0 = mp__now_ns();
  for (size_t i = 0; i < n; i++) {
    int st = fn(in + i * isz, rsz ? out + i * rsz : NULL, ctx);
    if (st && !status) {
      status = st;
      fail = (uint32_t)i;
    }
    if (with_status)
      sts[i] = st;
  }
  r->size = (uint32_t)size;
  r->kind = MP__K_RESULT;
  r->id = t->id;
  r->seq = t->seq;
  r->start = t->start;
  r->count = t->count;
  r->flags = 0;
  r->status = status;
  r->fail_index = fail;
  r->len = (uint32_t)len;
  r->ns = mp__now_ns() - t0;
  rpublish(rw, size);
}

void mp__pool_worker_loop(mp__wshm_t *ws, mp__pshm_t *ps, uint8_t *tring,
                          uint8_t *rring, int doorbell, int index,
                          unsigned maxtasks, void *ctx) {
  tls_worker_index = index;
  rwriter_t rw = {ws, ps, rring, atomic_load(&ws->r_head), doorbell};
  uint64_t tail = atomic_load(&ws->t_tail);
  mp_buf_t buf = MP_BUF_INIT;
  unsigned done = 0;
  while (wait_task(ws, tail)) {
    const mp__trec_t *t =
        (const mp__trec_t *)(const void *)(tring + (tail & MP__POOL_RMASK));
    if (t->kind != MP__K_SKIP) {
      atomic_store(&ws->cur_seq, t->seq);
      if (t->kind == MP__K_APPLY)
        run_apply(&rw, t, &buf, ctx);
      else
        run_map(&rw, t, ctx);
      done++;
    }
    tail += t->size;
    atomic_store_explicit(&ws->t_tail, tail, memory_order_release);
    atomic_store(&ws->cur_seq, 0);
    if (maxtasks && done >= maxtasks)
      break;
  }
  mp_buf_free(&buf);
  tls_worker_index = -1;
}

/* The result-ring writer for other producers of results (the MPI backend's
 * communication thread writes what remote ranks sent into the slot rings). */
uint8_t *mp__pool_rreserve(rwriter_t *rw, size_t size) {
  return rreserve(rw, size);
}

void mp__pool_rpublish(rwriter_t *rw, size_t size) {
  rpublish(rw, size);
}
