/* Pool parent side: workers, dispatch, the collector and callback threads,
 * results and lifecycle. The rings are described in pool_internal.h. */
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mproc/process.h"
#include "pool_internal.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

static __thread mp_pool_t *tls_cb_pool;

/* ---- small helpers ------------------------------------------------------ */

/* Layout of the mapping: the parent's words, each worker's words, then each
 * worker's task ring and result ring. Fork-server workers map it themselves,
 * so the layout is computed from the base address and worker count alone. */
static mp__wshm_t *map_wshm(uint8_t *map, int w) {
  return (mp__wshm_t *)(void *)(map + sizeof(mp__pshm_t) +
                                (size_t)w * sizeof(mp__wshm_t));
}

static size_t rings_off(int nw) {
  size_t off = sizeof(mp__pshm_t) + (size_t)nw * sizeof(mp__wshm_t);
  return (off + 4095) & ~(size_t)4095;
}

static uint8_t *map_tring(uint8_t *map, int nw, int w) {
  return map + rings_off(nw) + (size_t)w * 2 * MP__POOL_RING;
}

static mp__wshm_t *wshm(mp_pool_t *p, int w) {
  return map_wshm(p->map, w);
}

mp__wshm_t *mp__pool_slot_words(mp_pool_t *p, int w) {
  return map_wshm(p->map, w);
}

uint8_t *mp__pool_slot_tring(mp_pool_t *p, int w) {
  return map_tring(p->map, p->nw, w);
}

static uint8_t *tring(mp_pool_t *p, int w) {
  return map_tring(p->map, p->nw, w);
}

static uint8_t *rring(mp_pool_t *p, int w) {
  return tring(p, w) + MP__POOL_RING;
}

uint8_t *mp__pool_rring(mp_pool_t *p, int w) {
  return rring(p, w);
}

mp__wshm_t *mp__pool_wshm(mp_pool_t *p, int w) {
  return wshm(p, w);
}

/* Make an eventfd readable (fd < 0: nothing). A full counter is readable
 * anyway, so a failed write loses nothing. */
static void efd_signal(int fd) {
  uint64_t one = 1;
  if (fd >= 0 && write(fd, &one, sizeof one) < 0) {
  }
}

static void ring_doorbell(mp_pool_t *p) {
  efd_signal(p->doorbell);
}

/* The eventfd in *slot, made on first use (racing callers agree on one).
 * Returns it or a negative error. */
static int lazy_eventfd(_Atomic int *slot) {
  int fd = atomic_load(slot);
  if (fd >= 0)
    return fd;
  int nfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (nfd < 0)
    return -errno;
  int expect = -1;
  if (atomic_compare_exchange_strong(slot, &expect, nfd))
    return nfd;
  close(nfd);
  return expect;
}

/* Local pools keep a copy of every task they write into a ring. */
static bool shadow_on(const mp_pool_t *p) {
  return !p->mpi;
}

/* The i-th oldest unanswered task of wp (i < wp->out). */
static mp__tshadow_t *sh_at(const wpar_t *wp, size_t i) {
  return &wp->sh[(wp->sh_first + i) & (wp->sh_cap - 1)];
}

static job_t **job_bucket(mp_pool_t *p, uint64_t id) {
  uint64_t h = (id >> 4) * 0x9e3779b97f4a7c15ull;
  return &p->jhash[h >> (64 - 12)];
}
_Static_assert(MP__POOL_JHASH == 1 << 12, "bucket bits");

job_t *mp__pool_job_find(mp_pool_t *p, uint64_t id) {
  for (job_t *j = *job_bucket(p, id); j; j = j->hnext)
    if ((uint64_t)(uintptr_t)j == id)
      return j;
  return NULL;
}

void mp__pool_live_add(mp_pool_t *p, job_t *j) {
  atomic_fetch_add(&j->refs, 1);
  j->lnext = p->live.lnext;
  j->lprev = &p->live;
  p->live.lnext->lprev = j;
  p->live.lnext = j;
  p->live_count++;
  job_t **b = job_bucket(p, (uint64_t)(uintptr_t)j);
  j->hnext = *b;
  j->hpprev = b;
  if (*b)
    (*b)->hpprev = &j->hnext;
  *b = j;
}

/* Under mu. Drops the pool's reference unless keep_ref. */
void mp__pool_live_remove(mp_pool_t *p, job_t *j) {
  j->lprev->lnext = j->lnext;
  j->lnext->lprev = j->lprev;
  j->lprev = j->lnext = NULL;
  *j->hpprev = j->hnext;
  if (j->hnext)
    j->hnext->hpprev = j->hpprev;
  j->hnext = NULL;
  j->hpprev = NULL;
  if (--p->live_count == 0)
    pthread_cond_broadcast(&p->idle_cv);
}

static bool drain_worker(mp_pool_t *p, int w);
static void drain_backlog(mp_pool_t *p);
static bool any_results(mp_pool_t *p);
static void ring_doorbell(mp_pool_t *p);

/* Collect whatever the workers published, in this thread, and refill the
 * rings from the backlog. Returns true if there was anything. */
bool mp__pool_collect_now(mp_pool_t *p) {
  pthread_mutex_lock(&p->mu);
  bool any = false;
  for (int w = 0; w < p->nw; w++)
    any |= drain_worker(p, w);
  if (any && p->bl_head)
    drain_backlog(p);
  pthread_mutex_unlock(&p->mu);
  return any;
}

static bool result_ready_cond(void *arg) {
  mp_result_t *r = arg;
  return atomic_load_explicit(&r->state, memory_order_acquire) == 2;
}

/* This thread will collect results (a blocking call about to wait): workers
 * then wake it instead of the collector thread. Taken before submitting, so
 * that a fast result does not wake the collector in between. */
void mp__pool_collect_begin(mp_pool_t *p) {
  atomic_fetch_add(&p->ps->ucollect, 1);
}

void mp__pool_collect_end(mp_pool_t *p) {
  atomic_fetch_sub(&p->ps->ucollect, 1);
  /* Results published while workers counted on us go to the collector. */
  atomic_thread_fence(memory_order_seq_cst);
  if (any_results(p))
    ring_doorbell(p);
}

/* Wait until cond(arg), collecting results in this thread meanwhile: a
 * worker that publishes while we sleep wakes us directly (useq), saving the
 * hop through the collector thread. Returns 0 or MP_ETIMEDOUT. */
int mp__pool_wait_until(mp_pool_t *p, bool (*cond)(void *), void *arg,
                        const mp__deadline_t *dl) {
  int rc = 0;
  mp__pool_collect_begin(p);
  for (;;) {
    if (any_results(p))
      mp__pool_collect_now(p);
    if (cond(arg))
      break;
    /* No spinning, as in the workers (see wait_task). */
    uint32_t seq = atomic_load(&p->ps->useq);
    atomic_fetch_add(&p->ps->uwait, 1);
    int r = 0;
    if (!any_results(p) && !cond(arg))
      r = mp__futex_wait(&p->ps->useq, seq, dl);
    atomic_fetch_sub(&p->ps->uwait, 1);
    if (r == MP_ETIMEDOUT && !cond(arg)) {
      rc = MP_ETIMEDOUT;
      break;
    }
  }
  mp__pool_collect_end(p);
  return rc;
}

/* ---- results ------------------------------------------------------------ */

static void result_free(mp_result_t *r) {
  int fd = atomic_load(&r->efd);
  if (fd >= 0)
    close(fd);
  mp_buf_free(&r->data);
  mp_pool_t *p = r->pool;
  free(r);
  mp__pool_unref(p);
}

void mp__pool_job_unref(job_t *j) {
  if (atomic_fetch_sub(&j->refs, 1) != 1)
    return;
  if (j->kind == J_IMAP)
    mp__pool_imap_free((mp_imap_t *)j);
  else
    result_free((mp_result_t *)j);
}

/* Wake parent threads sleeping in a wait (they recheck what they wait for). */
void mp__pool_notify_waiters(mp_pool_t *p) {
  atomic_thread_fence(memory_order_seq_cst);
  if (atomic_load_explicit(&p->ps->uwait, memory_order_relaxed)) {
    atomic_fetch_add(&p->ps->useq, 1);
    mp__futex_wake(&p->ps->useq, INT32_MAX);
  }
}

static void mark_ready(mp_pool_t *p, mp_result_t *r) {
  atomic_store(&r->state, 2);
  mp__pool_notify_waiters(p);
  efd_signal(atomic_load(&r->efd));
  efd_signal(atomic_load(&p->ufd));
}

/* Under mu: the job has no work left. */
static void result_complete(mp_pool_t *p, mp_result_t *r) {
  mp__pool_live_remove(p, &r->j);
  if (r->err == MP_ETASK) {
    if (r->data.len == 0 || ((char *)r->data.data)[r->data.len - 1] != '\0')
      if (mp_buf_append(&r->data, "", 1) != 0)
        r->data.len = 0;
  }
  if (r->cb.callback || r->cb.error_callback) {
    atomic_store(&r->state, 1);
    pthread_mutex_lock(&p->cbmu);
    r->cb_next = NULL;
    if (p->cbt)
      p->cbt->cb_next = r;
    else
      p->cbh = r;
    p->cbt = r;
    pthread_cond_signal(&p->cbcv);
    pthread_mutex_unlock(&p->cbmu);
    return;
  }
  mark_ready(p, r);
  mp__pool_job_unref(&r->j);
}

static void map_finish_err(mp_result_t *r) {
  if (r->fail_err)
    r->err = r->fail_err;
  else if (r->fail_index != SIZE_MAX)
    r->err = MP_ETASK, r->task_code = r->fail_code;
  else
    r->err = 0;
}

/* Under mu: a task (from a ring or the backlog) ended with err and no
 * result. */
void mp__pool_fail_task(mp_pool_t *p, const mp__trec_t *t, int err) {
  job_t *j = mp__pool_job_find(p, t->id);
  if (!j)
    return; /* a record no dispatch wrote */
  if (j->kind == J_IMAP) {
    mp__pool_imap_chunk_done(p, (mp_imap_t *)j, t->start, t->count, NULL, NULL,
                             err);
    return;
  }
  mp_result_t *r = (mp_result_t *)j;
  if (j->kind == J_APPLY) {
    r->err = err;
    r->data.len = 0;
    result_complete(p, r);
    return;
  }
  if (!r->fail_err)
    r->fail_err = err;
  if (t->count > r->left)
    return; /* more than is due: not a record of ours */
  r->left -= t->count;
  if (r->left == 0) {
    map_finish_err(r);
    result_complete(p, r);
  }
}

int mp__pool_rrec_parse(const uint8_t *ring, uint64_t tail, uint64_t head,
                        const mp__rrec_t **out) {
  uint64_t avail = head - tail, at = tail & MP__POOL_RMASK;
  if (avail > MP__POOL_RING || avail < MP__POOL_REC || (tail % MP__POOL_REC))
    return MP_EPROTO;
  const mp__rrec_t *rr = (const mp__rrec_t *)(const void *)(ring + at);
  uint64_t size = rr->size;
  if (size < MP__POOL_REC || size % MP__POOL_REC || size > avail ||
      at + size > MP__POOL_RING)
    return MP_EPROTO;
  if (rr->kind != MP__K_SKIP &&
      (rr->kind != MP__K_RESULT || rr->len > size - MP__POOL_REC))
    return MP_EPROTO;
  *out = rr;
  return 0;
}

int mp__pool_rrec_fits(const mp__rrec_t *rr, int kind, size_t n, size_t left,
                       size_t result_size) {
  if (kind == J_APPLY)
    return 0;
  if (kind != J_MAP && kind != J_IMAP)
    return MP_EPROTO;
  uint64_t count = rr->count, per = result_size + (kind == J_IMAP ? 4 : 0);
  if (rr->start > n || count > n - rr->start || rr->flags & MP__RF_MORE)
    return MP_EPROTO;
  if (kind == J_MAP && (count > left || (rr->status && rr->fail_index >= count)))
    return MP_EPROTO;
  if (per && count > rr->len / per)
    return MP_EPROTO;
  return 0;
}

/* Local pools: rr must answer the oldest unanswered task of worker w (a
 * worker runs its tasks in order). Under mu. */
static bool answers_oldest(mp_pool_t *p, int w, const mp__rrec_t *rr) {
  const wpar_t *wp = &p->w[w];
  if (!shadow_on(p))
    return true;
  if (!wp->out)
    return false;
  const mp__trec_t *t = &sh_at(wp, 0)->h;
  return rr->seq == t->seq && rr->id == t->id && rr->start == t->start &&
         rr->count == t->count;
}

/* Does rr fit the live job it names? Returns the job or NULL. Under mu. */
static job_t *result_job(mp_pool_t *p, const mp__rrec_t *rr) {
  job_t *j = mp__pool_job_find(p, rr->id);
  if (!j)
    return NULL;
  int r;
  if (j->kind == J_IMAP) {
    const mp_imap_t *im = (const mp_imap_t *)j;
    r = mp__pool_rrec_fits(rr, J_IMAP, im->next_in, 0, im->result_size);
  } else {
    const mp_result_t *res = (const mp_result_t *)j;
    r = mp__pool_rrec_fits(rr, j->kind, res->n, res->left, res->result_size);
  }
  return r == 0 ? j : NULL;
}

/* Under mu. */
static void handle_result(mp_pool_t *p, int w, const mp__rrec_t *rr,
                          job_t *j) {
  wpar_t *wp = &p->w[w];
  bool final = !(rr->flags & MP__RF_MORE);
  if (final) {
    wp->done_seq = rr->seq;
    if (wp->out) {
      wp->out--;
      if (shadow_on(p))
        wp->sh_first = (wp->sh_first + 1) & (wp->sh_cap - 1);
    }
    p->avg_ns = p->avg_ns ? (p->avg_ns * 7 + rr->ns) / 8 : rr->ns + 1;
  }
  if (p->terminated)
    return; /* every job was completed by terminate */
  const uint8_t *pay = (const uint8_t *)rr + MP__POOL_REC;
  if (j->kind == J_IMAP) {
    mp_imap_t *im = (mp_imap_t *)j;
    mp__pool_imap_chunk_done(
        p, im, rr->start, rr->count, pay,
        (const int32_t *)(const void *)(pay + rr->count * im->result_size), 0);
    return;
  }
  mp_result_t *r = (mp_result_t *)j;
  if (j->kind == J_APPLY) {
    if (mp_buf_append(&r->data, pay, rr->len) != 0 && final) {
      r->err = MP_ENOMEM;
      r->data.len = 0;
      result_complete(p, r);
      return;
    }
    if (final) {
      r->err = rr->status ? MP_ETASK : 0;
      r->task_code = rr->status;
      result_complete(p, r);
    }
    return;
  }
  if (r->result_size)
    memcpy(r->results + rr->start * r->result_size, pay,
           (size_t)rr->count * r->result_size);
  if (rr->status && rr->start + rr->fail_index < r->fail_index) {
    r->fail_index = rr->start + rr->fail_index;
    r->fail_code = rr->status;
  }
  r->left -= rr->count;
  if (r->left == 0) {
    map_finish_err(r);
    result_complete(p, r);
  }
}

/* ---- dispatch (under mu) ---------------------------------------------------
 * A task goes to the worker with the fewest unanswered tasks, unless every
 * worker already holds `cap` of them: then it waits in the backlog. The cap
 * keeps about two milliseconds of work queued per worker, so long tasks
 * spread over idle workers while trivial ones stream without stalls. */
static size_t dispatch_cap(mp_pool_t *p) {
  if (!p->avg_ns)
    return 4;
  uint64_t c = 2000000 / p->avg_ns;
  return c < 4 ? 4 : (size_t)c;
}

/* Room for one more copy. */
static bool sh_reserve(wpar_t *wp) {
  if (wp->out < wp->sh_cap)
    return true;
  size_t cap = wp->sh_cap ? wp->sh_cap * 2 : 16;
  mp__tshadow_t *n = malloc(cap * sizeof *n);
  if (!n)
    return false;
  for (size_t i = 0; i < wp->out; i++)
    n[i] = *sh_at(wp, i);
  free(wp->sh);
  wp->sh = n;
  wp->sh_cap = cap;
  wp->sh_first = 0;
  return true;
}

/* The worker's task-ring tail, if it is one the worker can have written:
 * not behind where it was, not past what we wrote, on a record boundary.
 * Else UINT64_MAX. */
static uint64_t worker_tail(mp_pool_t *p, int w) {
  wpar_t *wp = &p->w[w];
  uint64_t tail =
      atomic_load_explicit(&wshm(p, w)->t_tail, memory_order_acquire);
  if (tail < wp->tail_seen || tail > wp->t_head || tail % MP__POOL_REC)
    return UINT64_MAX;
  wp->tail_seen = tail;
  return tail;
}

/* Under mu: worker w wrote where it must not. Nothing more of its result
 * ring is read; the collector stops it, and its unanswered tasks fail.
 * (The MPI backend's slots are written by its own thread from checked
 * messages: a record refused there is only skipped.) */
static void mark_corrupt(mp_pool_t *p, int w) {
  if (shadow_on(p) && !p->w[w].corrupt) {
    p->w[w].corrupt = true;
    ring_doorbell(p);
  }
}

static bool tpush(mp_pool_t *p, int w, const mp__trec_t *h, const void *pay) {
  wpar_t *wp = &p->w[w];
  size_t size = mp__pool_rec_size(h->len);
  uint64_t head = wp->t_head;
  uint64_t tail = shadow_on(p) ? worker_tail(p, w)
                               : atomic_load_explicit(&wshm(p, w)->t_tail,
                                                      memory_order_acquire);
  if (tail == UINT64_MAX) {
    mark_corrupt(p, w);
    return false;
  }
  size_t idx = head & MP__POOL_RMASK;
  size_t skip = idx + size > MP__POOL_RING ? MP__POOL_RING - idx : 0;
  if (head + skip + size - tail > MP__POOL_RING)
    return false;
  if (shadow_on(p) && !sh_reserve(wp))
    return false;
  mp__wshm_t *ws = wshm(p, w);
  uint8_t *base = tring(p, w);
  if (skip) {
    mp__trec_t *s = (mp__trec_t *)(void *)(base + idx);
    s->size = (uint32_t)skip;
    s->kind = MP__K_SKIP;
    s->seq = 0;
    head += skip;
    idx = 0;
  }
  mp__trec_t rec = *h;
  rec.size = (uint32_t)size;
  rec.seq = ++wp->next_seq;
  mp__trec_t *t = (mp__trec_t *)(void *)(base + idx);
  *t = rec;
  if (h->len)
    memcpy((uint8_t *)t + MP__POOL_REC, pay, h->len);
  if (shadow_on(p))
    *sh_at(wp, wp->out) = (mp__tshadow_t){rec, head};
  wp->t_head = head + size;
  wp->out++;
  atomic_store_explicit(&ws->t_head, wp->t_head, memory_order_release);
  atomic_thread_fence(memory_order_seq_cst);
  if (atomic_load_explicit(&ws->t_wait, memory_order_relaxed) &&
      atomic_exchange(&ws->t_wait, 0)) {
    mp__futex_wake(&ws->t_wait, 1);
    if (p->mpi)
      mp__pool_mpi_kick(p);
  }
  return true;
}

static bool try_push(mp_pool_t *p, const mp__trec_t *h, const void *pay) {
  size_t cap = dispatch_cap(p);
  int best = -1;
  for (int k = 0; k < p->nw; k++) {
    int w = (int)((p->rr + (unsigned)k) % (unsigned)p->nw);
    if (!p->w[w].alive || p->w[w].corrupt || p->w[w].out >= cap)
      continue;
    if (best < 0 || p->w[w].out < p->w[best].out)
      best = w;
  }
  if (best < 0)
    return false;
  p->rr++;
  if (tpush(p, best, h, pay))
    return true;
  for (int w = 0; w < p->nw; w++)
    if (w != best && p->w[w].alive && !p->w[w].corrupt && p->w[w].out < cap &&
        tpush(p, w, h, pay))
      return true;
  return false;
}

static int dispatch(mp_pool_t *p, const mp__trec_t *h, const void *pay) {
  if (!p->bl_head && try_push(p, h, pay))
    return 0;
  backlog_t *b = malloc(sizeof *b + h->len);
  if (!b)
    return MP_ENOMEM;
  b->next = NULL;
  b->h = *h;
  if (h->len)
    memcpy(b->payload, pay, h->len);
  if (p->bl_tail)
    p->bl_tail->next = b;
  else
    p->bl_head = b;
  p->bl_tail = b;
  return 0;
}

static void drain_backlog(mp_pool_t *p) {
  while (p->bl_head && try_push(p, &p->bl_head->h, p->bl_head->payload)) {
    backlog_t *b = p->bl_head;
    p->bl_head = b->next;
    if (!p->bl_head)
      p->bl_tail = NULL;
    free(b);
  }
}

/* Items per record for a map piece: the payload limit bounds both the items
 * and the results (with their status words). */
size_t mp__pool_piece_items(size_t isz, size_t rsz) {
  size_t per = isz > rsz + sizeof(int32_t) ? isz : rsz + sizeof(int32_t);
  size_t k = MP__POOL_MAXPAY / per;
  return k ? k : 1;
}

/* Dispatch items [start, start+count) of a map job in pieces. On ENOMEM the
 * pieces already queued stay queued; the caller fails the rest. */
int mp__pool_dispatch_map(mp_pool_t *p, job_t *j, uint32_t kind, mp_map_fn fn,
                          const uint8_t *items, size_t start, size_t count,
                          size_t isz, size_t rsz, size_t *queued) {
  size_t per = mp__pool_piece_items(isz, rsz);
  *queued = 0;
  while (*queued < count) {
    size_t k = count - *queued;
    if (k > per)
      k = per;
    mp__trec_t h = {0};
    h.kind = kind;
    h.id = (uint64_t)(uintptr_t)j;
    h.fn = (uint64_t)(uintptr_t)fn;
    h.start = start + *queued;
    h.count = (uint32_t)k;
    h.item_size = (uint32_t)isz;
    h.result_size = (uint32_t)rsz;
    h.len = (uint32_t)(k * isz);
    int r = dispatch(p, &h, items + *queued * isz);
    if (r)
      return r;
    *queued += k;
  }
  return 0;
}

/* ---- workers ---------------------------------------------------------- */

static void worker_run(mp_pool_t *p, int w) {
  mp__pool_set_worker_index(w);
  if (p->opts.initializer)
    p->opts.initializer(p->opts.initarg);
  mp__pool_worker_loop(wshm(p, w), p->ps, tring(p, w), rring(p, w), p->doorbell,
                       w, p->opts.maxtasksperchild, p->opts.ctx);
}

typedef struct {
  mp_pool_t *p;
  int w;
} warg_t;

static void *worker_thread(void *arg) {
  warg_t a = *(warg_t *)arg;
  free(arg);
  worker_run(a.p, a.w);
  atomic_store(&wshm(a.p, a.w)->exiting, 1);
  ring_doorbell(a.p);
  return NULL;
}

/* ---- fork-server workers ---------------------------------------------------
 * A fork-server worker is a fork of the server, not of us: it has none of
 * our memory made after the server started and none of our close-on-exec
 * descriptors. It gets the rings' memfd and the doorbell passed at their
 * numbers (mp_process_pass_fd) and maps the rings itself; everything else it
 * needs rides in its argument. Function pointers are valid there because
 * the server is a fork of this program. It dies with the server, which ends
 * when we do (also by SIGKILL). */
typedef struct {
  uint64_t map_len, initializer, initarg, ctx;
  int32_t memfd, doorbell, index, nw;
  uint32_t maxtasks;
} fs_worker_arg_t;

static int fs_worker_main(const void *arg, size_t len) {
  fs_worker_arg_t a;
  if (len != sizeof a)
    return 1;
  memcpy(&a, arg, sizeof a);
  uint8_t *map = mmap(NULL, (size_t)a.map_len, PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_NORESERVE, a.memfd, 0);
  close(a.memfd);
  if (map == MAP_FAILED)
    return 1;
  mp__pool_set_worker_index(a.index);
  void (*init)(void *) = (void (*)(void *))(uintptr_t)a.initializer;
  if (init)
    init((void *)(uintptr_t)a.initarg);
  uint8_t *tr = map_tring(map, a.nw, a.index);
  mp__pool_worker_loop(map_wshm(map, a.index), (mp__pshm_t *)(void *)map, tr,
                       tr + MP__POOL_RING, a.doorbell, a.index, a.maxtasks,
                       (void *)(uintptr_t)a.ctx);
  return 0;
}

/* At exit, mp_process's own handler terminates and joins the workers (they
 * are daemon processes of ours) while the collector of a pool the program
 * did not destroy may still reap them: from our handler on, which runs
 * first (registered after mp_process's), the collector leaves its workers'
 * handles alone and starts none. */
static pthread_mutex_t fs_exit_mu = PTHREAD_MUTEX_INITIALIZER;
static bool fs_exiting;
static pid_t fs_exit_pid; /* the process whose handler is registered */

static void fs_atexit(void) {
  if (getpid() != fs_exit_pid)
    return; /* a fork child's copy: its own registration acts */
  pthread_mutex_lock(&fs_exit_mu);
  fs_exiting = true;
  pthread_mutex_unlock(&fs_exit_mu);
}

static void fs_atfork_child(void) {
  pthread_mutex_init(&fs_exit_mu, NULL);
  fs_exiting = false;
}

/* Under fs_exit_mu, after a first mp_process_create. */
static void fs_register_exit(void) {
  static bool atfork_done;
  if (fs_exit_pid == getpid())
    return;
  if (!atfork_done && pthread_atfork(NULL, NULL, fs_atfork_child) == 0)
    atfork_done = true;
  if (atexit(fs_atexit) == 0)
    fs_exit_pid = getpid();
}

static int spawn_fs_worker(mp_pool_t *p, int w) {
  fs_worker_arg_t a = {
      .map_len = p->map_len,
      .initializer = (uint64_t)(uintptr_t)p->opts.initializer,
      .initarg = (uint64_t)(uintptr_t)p->opts.initarg,
      .ctx = (uint64_t)(uintptr_t)p->opts.ctx,
      .memfd = p->memfd,
      .doorbell = p->doorbell,
      .index = w,
      .nw = p->nw,
      .maxtasks = p->opts.maxtasksperchild,
  };
  char name[48];
  snprintf(name, sizeof name, "ForkServerPoolWorker-%d", w + 1);
  mp_process_opts_t po = {
      .name = name, .daemon = true, .start_method = MP_START_FORKSERVER};
  mp_process_t *proc;
  int r = mp_process_create(&proc, fs_worker_main, &a, sizeof a, &po);
  if (r)
    return r;
  pthread_mutex_lock(&fs_exit_mu);
  fs_register_exit();
  if (fs_exiting)
    r = MP_ECLOSED;
  if (r || (r = mp_process_pass_fd(proc, p->memfd)) != 0 ||
      (r = mp_process_pass_fd(proc, p->doorbell)) != 0 ||
      (r = mp_process_start(proc)) != 0) {
    pthread_mutex_unlock(&fs_exit_mu);
    mp_process_destroy(proc);
    return r;
  }
  pthread_mutex_unlock(&fs_exit_mu);
  p->w[w].proc = proc;
  p->w[w].pid = mp_process_pid(proc);
  /* Readable once the worker ended (the server reports its exit). */
  p->w[w].pidfd = mp_process_waitable(proc).fd;
  return 0;
}

/* Called by the collector thread only, so that PR_SET_PDEATHSIG (tied to the
 * forking thread) lasts exactly as long as the pool. The caller marks the
 * slot alive (worker_started). */
_Atomic int mp__test_pool_fork_failures;

static int spawn_worker(mp_pool_t *p, int w) {
  wpar_t *wp = &p->w[w];
  mp__wshm_t *ws = wshm(p, w);
  atomic_store(&ws->stop, 0);
  atomic_store(&ws->exiting, 0);
  atomic_store(&ws->cur_seq, 0);
  pthread_mutex_lock(&p->mu); /* done_seq is written under mu */
  wp->spawned_ns = mp__now_ns();
  wp->spawned_done = wp->done_seq;
  pthread_mutex_unlock(&p->mu);
  if (p->opts.backend == MP_POOL_MPI) /* a virtual slot (pool_mpi.c) */
    return 0;
  if (p->opts.backend == MP_POOL_THREADS) {
    warg_t *a = malloc(sizeof *a);
    if (!a)
      return MP_ENOMEM;
    a->p = p;
    a->w = w;
    int e = pthread_create(&wp->th, NULL, worker_thread, a);
    if (e) {
      free(a);
      return -e;
    }
    return 0;
  }
  if (p->memfd >= 0)
    return spawn_fs_worker(p, w);
  if (atomic_load(&mp__test_pool_fork_failures) > 0) {
    atomic_fetch_sub(&mp__test_pool_fork_failures, 1);
    return MP_EAGAIN; /* test-only: fork failing for a while */
  }
  /* Buffered output of the parent must not be written twice: flushed, and
   * kept locked until the fork is made, so another thread's printf cannot
   * put bytes in the buffer the child inherits (glibc makes the child's
   * stdio locks new; the parent unlocks its own). */
  flockfile(stdout);
  flockfile(stderr);
  fflush_unlocked(stdout);
  fflush_unlocked(stderr);
  pid_t pid = fork();
  if (pid != 0) {
    int e = errno;
    funlockfile(stderr);
    funlockfile(stdout);
    errno = e;
  }
  if (pid < 0)
    return -errno;
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != p->parent_pid)
      _exit(1);
    pthread_sigmask(SIG_SETMASK, &p->child_mask, NULL);
    worker_run(p, w);
    /* _exit skips atexit handlers of the parent's image; what tasks printed
     * must still come out. */
    fflush(stdout);
    fflush(stderr);
    _exit(0);
  }
  int fd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (fd < 0) {
    int e = -errno;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return e;
  }
  wp->pid = pid;
  wp->pidfd = fd;
  return 0;
}

/* Under mu. */
static bool drain_worker(mp_pool_t *p, int w) {
  wpar_t *wp = &p->w[w];
  mp__wshm_t *ws = wshm(p, w);
  uint64_t head = atomic_load_explicit(&ws->r_head, memory_order_acquire);
  uint64_t tail = atomic_load_explicit(&wp->r_tail, memory_order_relaxed);
  if (head == tail)
    return false;
  uint8_t *base = rring(p, w);
  if (wp->corrupt)
    tail = head; /* nothing of a corrupt worker is read */
  while (tail != head) {
    const mp__rrec_t *rr;
    job_t *j = NULL;
    if (mp__pool_rrec_parse(base, tail, head, &rr) < 0 ||
        (rr->kind != MP__K_SKIP &&
         (!answers_oldest(p, w, rr) ||
          (!p->terminated && !(j = result_job(p, rr)))))) {
      /* Written by no worker of ours: this worker is corrupt. */
      tail = head;
      mark_corrupt(p, w);
      break;
    }
    if (rr->kind != MP__K_SKIP)
      handle_result(p, w, rr, j);
    tail += rr->size;
  }
  atomic_store_explicit(&wp->r_tail, tail, memory_order_relaxed);
  atomic_store_explicit(&ws->r_tail, tail, memory_order_release);
  atomic_thread_fence(memory_order_seq_cst);
  if (atomic_load_explicit(&ws->r_wait, memory_order_relaxed) &&
      atomic_exchange(&ws->r_wait, 0))
    mp__futex_wake(&ws->r_wait, 1);
  return true;
}

/* Under mu: do the unanswered tasks at or after the worker's task-ring
 * tail (a checked one) still read as the parent wrote them? (Records
 * before the tail are done with: their results are published, and their
 * room may hold newer tasks already.) */
static bool ring_intact(mp_pool_t *p, int w, uint64_t tail) {
  const wpar_t *wp = &p->w[w];
  const uint8_t *base = tring(p, w);
  for (size_t i = 0; i < wp->out; i++) {
    const mp__tshadow_t *s = sh_at(wp, i);
    if (s->pos >= tail &&
        memcmp(base + (s->pos & MP__POOL_RMASK), &s->h, sizeof s->h) != 0)
      return false;
  }
  return true;
}

/* Under mu: put worker w's unanswered tasks from index `from` on back at
 * the front of the backlog, in order (their arguments are read back from
 * the ring, their headers from the parent's copies). */
static void requeue(mp_pool_t *p, int w, size_t from) {
  wpar_t *wp = &p->w[w];
  const uint8_t *base = tring(p, w);
  backlog_t *first = NULL, *last = NULL;
  for (size_t i = from; i < wp->out; i++) {
    const mp__tshadow_t *s = sh_at(wp, i);
    backlog_t *b = malloc(sizeof *b + s->h.len);
    if (!b) {
      mp__pool_fail_task(p, &s->h, MP_ENOMEM);
      continue;
    }
    b->next = NULL;
    b->h = s->h;
    if (s->h.len)
      memcpy(b->payload, base + (s->pos & MP__POOL_RMASK) + MP__POOL_REC,
             s->h.len);
    if (last)
      last->next = b;
    else
      first = b;
    last = b;
  }
  if (!first)
    return;
  last->next = p->bl_head;
  p->bl_head = first;
  if (!p->bl_tail)
    p->bl_tail = last;
}

/* Under mu: worker w is gone (crash, maxtasksperchild, stop, or stopped
 * for corruption). Everything it published is collected first. Then its
 * unanswered tasks, by the parent's copies: the oldest fails with
 * MP_EWORKERDIED if the worker was running it, the others go back to the
 * backlog for any live worker. A worker whose rings or words do not read as
 * a worker of ours leaves them (tail behind what it had or past a task it
 * did not answer, a running task that is not its oldest, a task record
 * changed): then all its unanswered tasks fail with MP_EWORKERDIED, since
 * their arguments lay in memory it wrote. The slot's rings start empty for
 * the replacement. Returns whether a task died with the worker. */
static bool settle_dead(mp_pool_t *p, int w) {
  wpar_t *wp = &p->w[w];
  mp__wshm_t *ws = wshm(p, w);
  drain_worker(p, w);
  bool task_died = false;
  if (shadow_on(p)) {
    uint64_t first = wp->out ? sh_at(wp, 0)->pos : wp->t_head;
    uint64_t tail = worker_tail(p, w), cur = atomic_load(&ws->cur_seq);
    bool running = wp->out && cur == sh_at(wp, 0)->h.seq;
    if (tail == UINT64_MAX || tail > first ||
        (cur && cur != wp->done_seq && !running) || !ring_intact(p, w, tail))
      wp->corrupt = true;
    if (wp->corrupt)
      running = false;
    size_t from = 0;
    if (running || (wp->corrupt && wp->out)) {
      task_died = true;
      for (; from < (wp->corrupt ? wp->out : 1); from++)
        if (!p->terminated)
          mp__pool_fail_task(p, &sh_at(wp, from)->h, MP_EWORKERDIED);
    }
    if (!p->terminated)
      requeue(p, w, from);
    wp->out = 0;
    wp->sh_first = 0;
    /* Both rings empty, at positions of ours (the worker's words may hold
     * anything). */
    uint64_t rt = atomic_load(&wp->r_tail) & ~(uint64_t)(MP__POOL_REC - 1);
    atomic_store(&wp->r_tail, rt);
    atomic_store(&ws->r_tail, rt);
    atomic_store(&ws->r_head, rt);
    atomic_store(&ws->t_head, wp->t_head);
    atomic_store(&ws->t_tail, wp->t_head);
    wp->tail_seen = wp->t_head;
  }
  atomic_store(&ws->cur_seq, 0);
  atomic_store(&ws->t_wait, 0);
  atomic_store(&ws->r_wait, 0);
  wp->alive = false;
  wp->corrupt = false;
  wp->killed = false;
  return task_died;
}

static void reap_process(wpar_t *wp) {
  if (wp->proc) {
    /* Its status fd is readable: the server reaped it, or the server died
     * (then the join waits on the pidfd; the worker dies with the server).
     */
    pthread_mutex_lock(&fs_exit_mu);
    if (!fs_exiting) {
      mp_process_join(wp->proc, MP_FOREVER);
      mp_process_destroy(wp->proc);
      wp->proc = NULL;
    } /* else kept: the exit handler may be joining it */
    pthread_mutex_unlock(&fs_exit_mu);
    wp->pidfd = -1;
    wp->pid = 0;
    return;
  }
  siginfo_t si;
  while (waitid((idtype_t)P_PIDFD, (id_t)wp->pidfd, &si, WEXITED) < 0 &&
         errno == EINTR) {
  }
  close(wp->pidfd);
  wp->pidfd = -1;
  wp->pid = 0;
}

/* Ask worker w to leave after its current task. */
static void stop_worker(mp_pool_t *p, int w) {
  mp__wshm_t *ws = wshm(p, w);
  atomic_store(&ws->stop, 1);
  atomic_thread_fence(memory_order_seq_cst);
  if (atomic_exchange(&ws->t_wait, 0))
    mp__futex_wake(&ws->t_wait, 1);
  if (atomic_exchange(&ws->r_wait, 0))
    mp__futex_wake(&ws->r_wait, 1);
}

/* Collector thread: end worker w now (a thread: after its current task). */
static void kill_worker(mp_pool_t *p, int w) {
  wpar_t *wp = &p->w[w];
  if (p->opts.backend != MP_POOL_PROCESSES)
    stop_worker(p, w);
  else if (wp->proc)
    mp_process_kill(wp->proc);
  else
    syscall(SYS_pidfd_send_signal, wp->pidfd, SIGKILL, NULL, 0);
}

static void signal_stop(mp_pool_t *p, int how) {
  for (int w = 0; w < p->nw; w++) {
    if (!p->w[w].alive)
      continue;
    if (how == 2 && p->opts.backend == MP_POOL_PROCESSES)
      kill_worker(p, w);
    else
      stop_worker(p, w);
  }
}

/* Collector thread, under mu: stop the workers found corrupt, and now and
 * then check the words and task rings of the live ones (a worker that
 * wrote over its ring and then blocks for good is found here). */
static void police_workers(mp_pool_t *p, uint64_t now) {
  for (int w = 0; w < p->nw; w++) {
    wpar_t *wp = &p->w[w];
    if (!wp->alive)
      continue;
    if (!wp->corrupt && shadow_on(p) &&
        now - wp->ring_checked_ns >= 100000000ull) {
      wp->ring_checked_ns = now;
      uint64_t tail = worker_tail(p, w);
      if (tail == UINT64_MAX ||
          atomic_load(&wshm(p, w)->cur_seq) > wp->next_seq ||
          !ring_intact(p, w, tail))
        wp->corrupt = true;
    }
    if (wp->corrupt && !wp->killed) {
      wp->killed = true;
      kill_worker(p, w);
    }
  }
}

/* Collector thread: worker w's spawn succeeded; route tasks to it. */
static void worker_started(mp_pool_t *p, int w) {
  pthread_mutex_lock(&p->mu);
  p->w[w].alive = true;
  p->w[w].need_spawn = false;
  drain_backlog(p);
  pthread_mutex_unlock(&p->mu);
}

/* A worker exited: settle it, and unless stopping, schedule its
 * replacement (respawn_due starts it). */
static void worker_gone(mp_pool_t *p, int w) {
  wpar_t *wp = &p->w[w];
  if (p->opts.backend == MP_POOL_PROCESSES)
    reap_process(wp);
  else if (p->opts.backend == MP_POOL_THREADS)
    pthread_join(wp->th, NULL);
  pthread_mutex_lock(&p->mu);
  bool task_died = settle_dead(p, w);
  drain_backlog(p);
  /* A worker that keeps dying before finishing a task (a crashing
   * initializer) is replaced ever more slowly instead of in a tight loop. */
  uint64_t now = mp__now_ns();
  bool early_death = !task_died && wp->done_seq == wp->spawned_done &&
                     now - wp->spawned_ns < 1000000000ull;
  pthread_mutex_unlock(&p->mu);
  if (atomic_load(&p->stopping))
    return;
  if (early_death) {
    if (wp->fail_streak < 20)
      wp->fail_streak++;
  } else {
    wp->fail_streak = 0;
  }
  wp->need_spawn = true;
  wp->respawn_tries = 0;
  wp->respawn_delay_us = 10000;
  wp->respawn_at =
      now + (wp->fail_streak > 2 ? 50000000ull * wp->fail_streak : 0);
}

/* Collector thread: start the replacements that are due. fork may fail for
 * a while (RLIMIT_NPROC, memory pressure): a slot is retried every 10 ms
 * for a second, then ever more slowly up to once a second, until it works
 * or the pool stops; meanwhile nothing is routed to it and the collector
 * goes on. Returns when the next try is due (UINT64_MAX: none). */
static uint64_t respawn_due(mp_pool_t *p) {
  uint64_t next = UINT64_MAX;
  for (int w = 0; w < p->nw; w++) {
    wpar_t *wp = &p->w[w];
    if (!wp->need_spawn)
      continue;
    if (atomic_load(&p->stopping)) {
      wp->need_spawn = false;
      continue;
    }
    uint64_t now = mp__now_ns();
    if (now >= wp->respawn_at) {
      int r = spawn_worker(p, w);
      if (r == 0) {
        worker_started(p, w);
        continue;
      }
      if (r == MP_ECLOSED) { /* the program exits */
        wp->need_spawn = false;
        continue;
      }
      if (++wp->respawn_tries >= 100 && wp->respawn_delay_us < 1000000u) {
        unsigned d = wp->respawn_delay_us * 3 / 2;
        wp->respawn_delay_us = d > 1000000u ? 1000000u : d;
      }
      wp->respawn_at = now + wp->respawn_delay_us * 1000ull;
    }
    if (wp->respawn_at < next)
      next = wp->respawn_at;
  }
  return next;
}

static bool any_results(mp_pool_t *p) {
  for (int w = 0; w < p->nw; w++)
    if (atomic_load_explicit(&wshm(p, w)->r_head, memory_order_acquire) !=
        atomic_load_explicit(&p->w[w].r_tail, memory_order_relaxed))
      return true;
  return false;
}

static int alive_count(mp_pool_t *p) {
  int n = 0;
  for (int w = 0; w < p->nw; w++)
    n += p->w[w].alive;
  return n;
}

/* Test-only: results the collector found only when its idle wait timed out
 * (nobody woke it although results were due). */
_Atomic long mp__test_pool_late_collects;

static void *collector_main(void *arg) {
  mp_pool_t *p = arg;
  bool timed_out = false;
  int err = 0;
  for (int w = 0; w < p->nw && !err; w++)
    if ((err = spawn_worker(p, w)) == 0)
      worker_started(p, w);
  if (err)
    atomic_store(&p->stopping, 2);
  p->start_err = err;
  atomic_store(&p->started, 1);
  mp__futex_wake(&p->started, INT32_MAX);
  struct pollfd *pfd = p->pfd;
  int *pw = p->pw;
  uint64_t last_check = mp__now_ns();
  int sent = 0;
  for (;;) {
    bool any = mp__pool_collect_now(p);
    if (any && timed_out)
      atomic_fetch_add(&mp__test_pool_late_collects, 1);
    timed_out = false;

    int stopping = atomic_load(&p->stopping);
    if (stopping > sent) {
      signal_stop(p, stopping);
      sent = stopping;
    }
    if (p->opts.backend != MP_POOL_PROCESSES) {
      for (int w = 0; w < p->nw; w++)
        if (p->w[w].alive && atomic_load(&wshm(p, w)->exiting))
          worker_gone(p, w);
    }
    uint64_t next_spawn = respawn_due(p);
    if (stopping && alive_count(p) == 0)
      break;

    uint64_t now = mp__now_ns();
    int timeout = -2; /* no sleep this round */
    if (!any) {
      if (!any_results(p)) {
        atomic_store(&p->ps->parent_wait, 1);
        if (any_results(p))
          atomic_store(&p->ps->parent_wait, 0);
        else
          timeout = 1000;
      }
    }
    if (timeout == -2 && now - last_check < 100000000ull)
      continue;
    last_check = now;
    pthread_mutex_lock(&p->mu);
    police_workers(p, now);
    pthread_mutex_unlock(&p->mu);
    bool idle = timeout > 0;
    if (idle && next_spawn != UINT64_MAX) {
      uint64_t ms = next_spawn > now ? (next_spawn - now + 999999) / 1000000 : 0;
      if (ms < (uint64_t)timeout) {
        timeout = (int)ms;
        idle = false;
      }
    }
    int n = 0;
    pfd[n].fd = p->doorbell;
    pfd[n].events = POLLIN;
    pw[n++] = -1;
    if (p->opts.backend == MP_POOL_PROCESSES)
      for (int w = 0; w < p->nw; w++)
        if (p->w[w].alive) {
          pfd[n].fd = p->w[w].pidfd;
          pfd[n].events = POLLIN;
          pw[n++] = w;
        }
    int r = poll(pfd, (nfds_t)n, timeout < 0 ? 0 : timeout);
    atomic_store(&p->ps->parent_wait, 0);
    timed_out = r == 0 && idle;
    if (r <= 0)
      continue;
    if (pfd[0].revents) {
      uint64_t v;
      ssize_t rd = read(p->doorbell, &v, sizeof v);
      (void)rd;
    }
    for (int i = 1; i < n; i++)
      if (pfd[i].revents)
        worker_gone(p, pw[i]);
  }
  /* Everything that arrived late belongs to completed or terminated jobs. */
  pthread_mutex_lock(&p->mu);
  for (int w = 0; w < p->nw; w++)
    drain_worker(p, w);
  pthread_mutex_unlock(&p->mu);
  atomic_store(&p->collector_done, 1);
  mp__futex_wake(&p->collector_done, INT32_MAX);
  return NULL;
}

static void *callback_main(void *arg) {
  mp_pool_t *p = arg;
  tls_cb_pool = p;
  pthread_mutex_lock(&p->cbmu);
  for (;;) {
    while (!p->cbh && !p->cbquit)
      pthread_cond_wait(&p->cbcv, &p->cbmu);
    mp_result_t *r = p->cbh;
    if (!r)
      break;
    p->cbh = r->cb_next;
    if (!p->cbh)
      p->cbt = NULL;
    pthread_mutex_unlock(&p->cbmu);
    if (r->err == 0) {
      if (r->cb.callback) {
        if (r->j.kind == J_MAP)
          r->cb.callback(r->results, r->n * r->result_size, r->cb.user);
        else
          r->cb.callback(r->data.data, r->data.len, r->cb.user);
      }
    } else if (r->cb.error_callback) {
      const char *msg = r->err == MP_ETASK && r->data.len ? r->data.data : "";
      r->cb.error_callback(r->err, r->task_code, msg, r->cb.user);
    }
    mark_ready(p, r);
    mp__pool_job_unref(&r->j);
    pthread_mutex_lock(&p->cbmu);
  }
  pthread_mutex_unlock(&p->cbmu);
  return NULL;
}

/* ---- lifecycle ------------------------------------------------------------
 */

void mp__pool_ref(mp_pool_t *p) {
  atomic_fetch_add(&p->refs, 1);
}

void mp__pool_unref(mp_pool_t *p) {
  if (atomic_fetch_sub(&p->refs, 1) == 1)
    free(p);
}

bool mp__pool_enter(mp_pool_t *p) {
  atomic_fetch_add(&p->users, 1);
  if (!atomic_load(&p->gone))
    return true;
  mp__pool_leave(p);
  return false;
}

void mp__pool_leave(mp_pool_t *p) {
  if (atomic_fetch_sub(&p->users, 1) == 1 && atomic_load(&p->gone))
    mp__futex_wake(&p->users, INT32_MAX);
}

/* Everything but the struct, which the last reference frees. */
static void pool_release(mp_pool_t *p) {
  if (p->mpi)
    mp__pool_mpi_free(p);
  if (p->map)
    munmap(p->map, p->map_len);
  if (p->doorbell >= 0)
    close(p->doorbell);
  if (p->memfd >= 0)
    close(p->memfd);
  int fd = atomic_load(&p->ufd);
  if (fd >= 0)
    close(fd);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->idle_cv);
  pthread_mutex_destroy(&p->cbmu);
  pthread_cond_destroy(&p->cbcv);
  for (int w = 0; p->w && w < p->nw; w++)
    free(p->w[w].sh);
  free(p->w);
  free(p->pfd);
  free(p->pw);
  free(p->jhash);
}

static void pool_free(mp_pool_t *p) {
  pool_release(p);
  mp__pool_unref(p);
}

static int start_thread(pthread_t *th, void *(*fn)(void *), void *arg) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int e = pthread_create(th, NULL, fn, arg);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return -e;
}

/* Ask the callback thread to finish what it has queued and end; wait. */
static void stop_callback_thread(mp_pool_t *p) {
  pthread_mutex_lock(&p->cbmu);
  p->cbquit = true;
  pthread_cond_signal(&p->cbcv);
  pthread_mutex_unlock(&p->cbmu);
  pthread_join(p->cbthread, NULL);
}

int mp_pool_create(mp_pool_t **pool, const mp_pool_opts_t *opts) {
  mp_pool_opts_t o = {0};
  if (opts)
    o = *opts;
  if (!pool || o.workers < 0 || o.maxtasksperchild > INT_MAX ||
      (o.backend != MP_POOL_PROCESSES && o.backend != MP_POOL_THREADS &&
       o.backend != MP_POOL_MPI) ||
      (o.start_method != MP_START_FORK &&
       o.start_method != MP_START_FORKSERVER))
    return MP_EINVAL;
  if (o.workers == 0 && o.backend != MP_POOL_MPI)
    o.workers = mp_cpu_count();
  if (o.workers > 4096)
    return MP_EINVAL;
  mp_pool_t *p = calloc(1, sizeof *p);
  if (!p)
    return MP_ENOMEM;
  atomic_init(&p->refs, 1);
  p->nw = o.workers;
  p->opts = o;
  p->doorbell = -1;
  p->memfd = -1;
  atomic_init(&p->ufd, -1);
  p->live.lnext = p->live.lprev = &p->live;
  p->jhash = calloc(MP__POOL_JHASH, sizeof *p->jhash);
  pthread_mutex_init(&p->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&p->idle_cv, &ca);
  pthread_condattr_destroy(&ca);
  pthread_mutex_init(&p->cbmu, NULL);
  pthread_cond_init(&p->cbcv, NULL);
  p->parent_pid = getpid();
  pthread_sigmask(SIG_SETMASK, NULL, &p->child_mask);
  int err = MP_ENOMEM;
  if (o.backend == MP_POOL_MPI) {
    /* Worker ranks serve inside and return MP_EWORKERRANK. */
    err = mp__pool_mpi_open(&o, &p->mpi, &p->nw);
    if (err)
      goto fail;
    p->opts.workers = p->nw;
  }
  p->w = calloc((size_t)p->nw, sizeof *p->w);
  p->pfd = calloc((size_t)p->nw + 1, sizeof *p->pfd);
  p->pw = calloc((size_t)p->nw + 1, sizeof *p->pw);
  if (!p->w || !p->pfd || !p->pw || !p->jhash)
    goto fail;
  for (int w = 0; w < p->nw; w++)
    p->w[w].pidfd = -1;
  p->map_len = rings_off(p->nw) + (size_t)p->nw * 2 * MP__POOL_RING;
  int mflags = MAP_SHARED | MAP_NORESERVE | MAP_ANONYMOUS;
  if (o.backend == MP_POOL_PROCESSES && o.start_method == MP_START_FORKSERVER) {
    /* Started here, not by the first worker from the collector thread: the
     * server is then a fork of the caller, without the pool's threads. */
    err = mp_forkserver_start();
    if (err)
      goto fail;
    /* Workers are not our forks, so the rings need a file they can map:
     * a memfd handed to each worker has no name, so nothing can be left in
     * /dev/shm and no other process can open it. */
    p->memfd = memfd_create("mp-pool", MFD_CLOEXEC);
    if (p->memfd < 0 || ftruncate(p->memfd, (off_t)p->map_len) < 0) {
      err = -errno;
      goto fail;
    }
    mflags &= ~MAP_ANONYMOUS;
  }
  /* Anonymous shared memory for forked workers: inherited, no name to leak.
   */
  p->map = mmap(NULL, p->map_len, PROT_READ | PROT_WRITE, mflags, p->memfd, 0);
  if (p->map == MAP_FAILED) {
    p->map = NULL;
    err = -errno;
    goto fail;
  }
  p->ps = (mp__pshm_t *)(void *)p->map;
  p->doorbell = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (p->doorbell < 0) {
    err = -errno;
    goto fail;
  }
  if (p->mpi && (err = mp__pool_mpi_start(p)) != 0)
    goto fail;
  err = start_thread(&p->cbthread, callback_main, p);
  if (err)
    goto fail;
  err = start_thread(&p->collector, collector_main, p);
  if (err) {
    stop_callback_thread(p);
    goto fail;
  }
  while (!atomic_load(&p->started))
    mp__futex_wait(&p->started, 0, NULL);
  if (p->start_err) {
    err = p->start_err;
    pthread_join(p->collector, NULL);
    stop_callback_thread(p);
    goto fail;
  }
  *pool = p;
  return 0;
fail:
  pool_free(p);
  return err;
}

int mp_pool_size(mp_pool_t *pool) {
  return pool ? pool->nw : MP_EINVAL;
}

int mp_pool_fd(mp_pool_t *pool) {
  if (!pool)
    return MP_EINVAL;
  return lazy_eventfd(&pool->ufd);
}

int mp_pool_close(mp_pool_t *pool) {
  if (!pool)
    return MP_EINVAL;
  pthread_mutex_lock(&pool->mu);
  pool->closed = true;
  pthread_mutex_unlock(&pool->mu);
  return 0;
}

int mp_pool_terminate(mp_pool_t *pool) {
  if (!pool)
    return MP_EINVAL;
  pthread_mutex_lock(&pool->mu);
  if (pool->terminated) {
    pthread_mutex_unlock(&pool->mu);
    return 0;
  }
  pool->closed = pool->terminated = true;
  while (pool->bl_head) {
    backlog_t *b = pool->bl_head;
    pool->bl_head = b->next;
    free(b);
  }
  pool->bl_tail = NULL;
  while (pool->live.lnext != &pool->live) {
    job_t *j = pool->live.lnext;
    if (j->kind == J_IMAP) {
      mp_imap_t *im = (mp_imap_t *)j;
      im->terminated = true;
      im->pending_chunks = 0;
      atomic_fetch_add(&im->seq, 1);
      mp__pool_notify_waiters(pool);
      mp__pool_live_remove(pool, j);
      mp__pool_job_unref(j);
    } else {
      mp_result_t *r = (mp_result_t *)j;
      r->err = MP_ECLOSED;
      r->data.len = 0;
      result_complete(pool, r);
    }
  }
  pthread_mutex_unlock(&pool->mu);
  atomic_store(&pool->stopping, 2);
  ring_doorbell(pool);
  return 0;
}

int mp_pool_join(mp_pool_t *pool, int timeout_ms) {
  if (!pool || mp__check_timeout(timeout_ms) || tls_cb_pool)
    return MP_EINVAL;
  mp__deadline_t dl;
  mp__deadline_init(&dl, timeout_ms);
  pthread_mutex_lock(&pool->mu);
  if (!pool->closed) {
    pthread_mutex_unlock(&pool->mu);
    return MP_EINVAL;
  }
  if (pool->joined) {
    pthread_mutex_unlock(&pool->mu);
    return 0;
  }
  while (pool->live_count > 0 || pool->bl_head) {
    if (dl.forever) {
      pthread_cond_wait(&pool->idle_cv, &pool->mu);
    } else if (pthread_cond_timedwait(&pool->idle_cv, &pool->mu, &dl.ts) ==
               ETIMEDOUT) {
      pthread_mutex_unlock(&pool->mu);
      return MP_ETIMEDOUT;
    }
  }
  pthread_mutex_unlock(&pool->mu);
  int expect = 0;
  atomic_compare_exchange_strong(&pool->stopping, &expect, 1);
  ring_doorbell(pool);
  while (!atomic_load(&pool->collector_done))
    if (mp__futex_wait(&pool->collector_done, 0, &dl) == MP_ETIMEDOUT)
      return MP_ETIMEDOUT;
  pthread_mutex_lock(&pool->mu);
  if (!pool->joined) {
    pool->joined = true;
    pthread_mutex_unlock(&pool->mu);
    pthread_join(pool->collector, NULL);
    stop_callback_thread(pool);
  } else {
    pthread_mutex_unlock(&pool->mu);
  }
  return 0;
}

int mp_pool_destroy(mp_pool_t *pool) {
  if (!pool || tls_cb_pool)
    return MP_EINVAL;
  if (!pool->joined) {
    mp_pool_terminate(pool);
    mp_pool_join(pool, MP_FOREVER);
  }
  /* Every job is complete now. Threads still inside a wait on a result or
   * iterator of ours (woken by the completion) leave before anything is
   * freed; later calls on them see the pool gone. The struct stays while
   * they hold references. */
  atomic_store(&pool->gone, 1);
  mp__pool_notify_waiters(pool);
  for (uint32_t u; (u = atomic_load(&pool->users)) != 0;)
    mp__futex_wait(&pool->users, u, NULL);
  pool_free(pool);
  return 0;
}

/* ---- apply ----------------------------------------------------------------
 */

static mp_result_t *result_new(mp_pool_t *p, int kind,
                               const mp_async_opts_t *cb) {
  mp_result_t *r = calloc(1, sizeof *r);
  if (!r)
    return NULL;
  r->j.kind = kind;
  atomic_init(&r->j.refs, 1);
  atomic_init(&r->efd, -1);
  r->pool = p;
  mp__pool_ref(p);
  if (cb)
    r->cb = *cb;
  r->fail_index = SIZE_MAX;
  return r;
}

int mp_pool_apply_async(mp_pool_t *pool, mp_task_fn fn, const void *arg,
                        size_t len, const mp_async_opts_t *opts,
                        mp_result_t **out) {
  if (!pool || !fn || (!arg && len))
    return MP_EINVAL;
  if (len > MP__POOL_MAXPAY)
    return MP_EMSGSIZE;
  mp_result_t *r = result_new(pool, J_APPLY, opts);
  if (!r)
    return MP_ENOMEM;
  pthread_mutex_lock(&pool->mu);
  if (pool->closed) {
    pthread_mutex_unlock(&pool->mu);
    result_free(r);
    return MP_ECLOSED;
  }
  mp__trec_t h = {0};
  h.kind = MP__K_APPLY;
  h.id = (uint64_t)(uintptr_t)r;
  h.fn = (uint64_t)(uintptr_t)fn;
  h.count = 1;
  h.len = (uint32_t)len;
  mp__pool_live_add(pool, &r->j);
  int e = dispatch(pool, &h, arg);
  if (e) {
    mp__pool_live_remove(pool, &r->j);
    pthread_mutex_unlock(&pool->mu);
    result_free(r);
    return e;
  }
  if (!out)
    mp__pool_job_unref(
        &r->j); /* the pool's reference frees it after the callback */
  pthread_mutex_unlock(&pool->mu);
  if (out)
    *out = r;
  return 0;
}

int mp_pool_apply(mp_pool_t *pool, mp_task_fn fn, const void *arg, size_t len,
                  mp_buf_t *result, int *task_code) {
  if (tls_cb_pool && tls_cb_pool == pool)
    return MP_EDEADLK;
  if (!pool)
    return MP_EINVAL;
  mp_result_t *r;
  mp__pool_collect_begin(pool);
  int e = mp_pool_apply_async(pool, fn, arg, len, NULL, &r);
  if (e) {
    mp__pool_collect_end(pool);
    return e;
  }
  const void *data;
  size_t dlen;
  e = mp_result_get(r, MP_FOREVER, &data, &dlen);
  if (e == MP_ETASK) {
    if (task_code)
      *task_code = r->task_code;
    if (result && mp_buf_set(result, r->data.data, r->data.len) != 0)
      result->len = 0;
  } else if (e == 0 && result) {
    if (mp_buf_set(result, data, dlen) != 0)
      e = MP_ENOMEM;
  }
  mp_result_destroy(r);
  mp__pool_collect_end(pool);
  return e;
}

/* ---- map -------------------------------------------------------------- */

static size_t default_chunksize(mp_pool_t *p, size_t n) {
  size_t d = 4 * (size_t)p->nw;
  size_t c = (n + d - 1) / d;
  return c ? c : 1;
}

static int map_submit(mp_pool_t *pool, mp_map_fn fn, const void *items,
                      size_t n, size_t isz, void *results, size_t rsz,
                      size_t chunksize, const mp_async_opts_t *opts,
                      mp_result_t **out) {
  if (!pool || !fn || (!items && n) || !isz || (!results && rsz && n) ||
      isz > UINT32_MAX || rsz > UINT32_MAX)
    return MP_EINVAL;
  if (isz > MP__POOL_MAXPAY || rsz + sizeof(int32_t) > MP__POOL_MAXPAY)
    return MP_EMSGSIZE;
  mp_result_t *r = result_new(pool, J_MAP, opts);
  if (!r)
    return MP_ENOMEM;
  r->results = results;
  r->result_size = rsz;
  r->n = n;
  r->left = n;
  if (!chunksize)
    chunksize = default_chunksize(pool, n);
  pthread_mutex_lock(&pool->mu);
  if (pool->closed) {
    pthread_mutex_unlock(&pool->mu);
    result_free(r);
    return MP_ECLOSED;
  }
  mp__pool_live_add(pool, &r->j);
  if (n == 0) {
    r->err = 0;
    result_complete(pool, r);
  }
  for (size_t start = 0; start < n; start += chunksize) {
    size_t count = n - start < chunksize ? n - start : chunksize;
    size_t queued;
    int e = mp__pool_dispatch_map(pool, &r->j, MP__K_MAP, fn,
                                  (const uint8_t *)items + start * isz, start,
                                  count, isz, rsz, &queued);
    (void)e;
    if (queued < count) {
      /* Out of memory: fail what could not be queued. */
      mp__trec_t t = {0};
      t.id = (uint64_t)(uintptr_t)r;
      t.start = start + queued;
      size_t rest = n - t.start;
      t.count = (uint32_t)rest;
      mp__pool_fail_task(pool, &t, MP_ENOMEM);
      break;
    }
  }
  if (!out)
    mp__pool_job_unref(&r->j);
  pthread_mutex_unlock(&pool->mu);
  if (out)
    *out = r;
  return 0;
}

int mp_pool_map_async(mp_pool_t *pool, mp_map_fn fn, const void *items,
                      size_t n, size_t item_size, void *results,
                      size_t result_size, size_t chunksize,
                      const mp_async_opts_t *opts, mp_result_t **out) {
  return map_submit(pool, fn, items, n, item_size, results, result_size,
                    chunksize, opts, out);
}

int mp_pool_map(mp_pool_t *pool, mp_map_fn fn, const void *items, size_t n,
                size_t item_size, void *results, size_t result_size,
                size_t chunksize) {
  if (tls_cb_pool && tls_cb_pool == pool)
    return MP_EDEADLK;
  if (!pool)
    return MP_EINVAL;
  mp_result_t *r;
  mp__pool_collect_begin(pool);
  int e = map_submit(pool, fn, items, n, item_size, results, result_size,
                     chunksize, NULL, &r);
  if (!e) {
    e = mp_result_get(r, MP_FOREVER, NULL, NULL);
    mp_result_destroy(r);
  }
  mp__pool_collect_end(pool);
  return e;
}

int mp_pool_starmap(mp_pool_t *pool, mp_map_fn fn, const void *args, size_t n,
                    size_t arg_size, void *results, size_t result_size,
                    size_t chunksize) {
  return mp_pool_map(pool, fn, args, n, arg_size, results, result_size,
                     chunksize);
}

int mp_pool_starmap_async(mp_pool_t *pool, mp_map_fn fn, const void *args,
                          size_t n, size_t arg_size, void *results,
                          size_t result_size, size_t chunksize,
                          const mp_async_opts_t *opts, mp_result_t **out) {
  return map_submit(pool, fn, args, n, arg_size, results, result_size,
                    chunksize, opts, out);
}

/* ---- results --------------------------------------------------------------
 */

int mp_result_wait(mp_result_t *r, int timeout_ms) {
  if (!r || mp__check_timeout(timeout_ms))
    return MP_EINVAL;
  if (atomic_load_explicit(&r->state, memory_order_acquire) == 2)
    return 0;
  if (timeout_ms == 0)
    return MP_ETIMEDOUT;
  mp__deadline_t dl;
  mp__deadline_init(&dl, timeout_ms);
  mp_pool_t *p = r->pool;
  /* A destroyed pool completed every job it had. */
  if (!mp__pool_enter(p))
    return 0;
  int e = mp__pool_wait_until(p, result_ready_cond, r, &dl);
  mp__pool_leave(p);
  return e;
}

int mp_result_get(mp_result_t *r, int timeout_ms, const void **data,
                  size_t *len) {
  int e = mp_result_wait(r, timeout_ms);
  if (e)
    return e;
  if (r->err)
    return r->err;
  if (data)
    *data = r->j.kind == J_MAP ? NULL : r->data.data;
  if (len)
    *len = r->j.kind == J_MAP ? 0 : r->data.len;
  return 0;
}

int mp_result_ready(mp_result_t *r) {
  if (!r)
    return MP_EINVAL;
  return atomic_load_explicit(&r->state, memory_order_acquire) == 2;
}

int mp_result_successful(mp_result_t *r) {
  if (!r || atomic_load_explicit(&r->state, memory_order_acquire) != 2)
    return MP_EINVAL;
  return r->err == 0;
}

int mp_result_task_error(mp_result_t *r, int *task_code, const char **msg) {
  if (!r || atomic_load_explicit(&r->state, memory_order_acquire) != 2 ||
      r->err != MP_ETASK)
    return MP_EINVAL;
  if (task_code)
    *task_code = r->task_code;
  if (msg)
    *msg = r->data.len ? r->data.data : "";
  return 0;
}

mp_waitable_t mp_result_waitable(mp_result_t *r) {
  mp_waitable_t wt = {-1, NULL, r, false};
  if (!r)
    return wt;
  int fd = lazy_eventfd(&r->efd);
  if (fd < 0)
    return wt;
  if (atomic_load(&r->state) == 2)
    efd_signal(fd);
  wt.fd = fd;
  return wt;
}

int mp_result_destroy(mp_result_t *r) {
  if (!r)
    return MP_EINVAL;
  mp__pool_job_unref(&r->j);
  return 0;
}
