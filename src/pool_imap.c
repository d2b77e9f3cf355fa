/* Pool imap and imap_unordered: lazy input with a bound on items in flight,
 * results kept per slot (ordered) or in completion order (unordered). */
#include <stdlib.h>
#include <string.h>

#include "pool_internal.h"

/* Under mu: items [start, start+count) of an imap finished (err: all failed
 * with it; else per-item statuses sts). */
void mp__pool_imap_chunk_done(mp_pool_t *p, mp_imap_t *im, size_t start,
                              size_t count, const uint8_t *res,
                              const int32_t *sts, int err) {
  for (size_t i = 0; i < count; i++) {
    size_t idx = start + i, slot;
    if (im->ordered) {
      slot = idx % im->cap;
    } else {
      slot = im->ftail++ % im->cap;
      im->sindex[slot] = idx;
    }
    im->sstate[slot] = 1;
    int code = sts ? sts[i] : 0;
    im->serr[slot] = err ? err : (code ? MP_ETASK : 0);
    im->scode[slot] = code;
    if (res && im->result_size)
      memcpy(im->sres + slot * im->result_size, res + i * im->result_size,
             im->result_size);
  }
  atomic_fetch_add(&im->seq, 1);
  mp__pool_notify_waiters(p);
  if (--im->pending_chunks == 0) {
    mp__pool_live_remove(p, &im->j);
    mp__pool_job_unref(&im->j);
  }
}

/* ---- imap -----------------------------------------------------------------
 */

void mp__pool_imap_free(mp_imap_t *im) {
  mp_pool_t *p = im->pool;
  free(im->sstate);
  free(im->serr);
  free(im->scode);
  free(im->sindex);
  free(im->sres);
  free(im->stage);
  free(im);
  if (p)
    mp__pool_unref(p);
}

static int imap_create(mp_pool_t *pool, mp_map_fn fn, const void *items,
                       size_t n, size_t isz, size_t rsz,
                       const mp_imap_opts_t *opts, bool ordered,
                       mp_imap_t **it) {
  mp_imap_opts_t o = {0};
  if (opts)
    o = *opts;
  if (!pool || !fn || !it || !isz || (!o.input && !items && n) ||
      isz > UINT32_MAX || rsz > UINT32_MAX)
    return MP_EINVAL;
  if (isz > MP__POOL_MAXPAY || rsz + sizeof(int32_t) > MP__POOL_MAXPAY)
    return MP_EMSGSIZE;
  mp_imap_t *im = calloc(1, sizeof *im);
  if (!im)
    return MP_ENOMEM;
  im->j.kind = J_IMAP;
  atomic_init(&im->j.refs, 1);
  im->pool = pool;
  mp__pool_ref(pool);
  im->fn = fn;
  im->item_size = isz;
  im->result_size = rsz;
  im->chunksize = o.chunksize ? o.chunksize : 1;
  size_t cap = o.max_inflight;
  if (!cap) {
    cap = 4 * (size_t)pool->nw * im->chunksize;
    if (cap < 256)
      cap = 256;
  }
  if (cap < im->chunksize)
    cap = im->chunksize;
  im->cap = cap;
  im->ordered = ordered;
  im->items = items;
  im->n = o.input ? SIZE_MAX : n;
  im->input = o.input;
  im->input_user = o.input_user;
  im->sstate = calloc(cap, 1);
  im->serr = calloc(cap, sizeof(int));
  im->scode = calloc(cap, sizeof(int));
  im->sindex = calloc(cap, sizeof(size_t));
  im->sres = calloc(cap, rsz ? rsz : 1);
  im->stage = o.input ? malloc(cap * isz) : NULL;
  if (!im->sstate || !im->serr || !im->scode || !im->sindex || !im->sres ||
      (o.input && !im->stage)) {
    mp__pool_imap_free(im);
    return MP_ENOMEM;
  }
  pthread_mutex_lock(&pool->mu);
  bool closed = pool->closed;
  pthread_mutex_unlock(&pool->mu);
  if (closed) {
    mp__pool_imap_free(im);
    return MP_ECLOSED;
  }
  *it = im;
  return 0;
}

/* Read ahead and dispatch while below the in-flight bound. Runs the input
 * function outside the pool lock, and not counted as a collecting thread
 * (collecting: this thread counts in mp__pool_collect_begin): input may
 * take long, and meanwhile workers must wake the collector thread for the
 * results of other jobs, not us. */
static void imap_topup(mp_imap_t *im, bool collecting) {
  mp_pool_t *p = im->pool;
  /* Refill in batches, once half the bound came back: one lock and one
   * worker wake-up per batch instead of per item. */
  if (im->input_done || im->unreturned > im->cap / 2)
    return;
  size_t want = im->cap - im->unreturned;
  const uint8_t *src;
  size_t k = 0;
  if (im->input) {
    if (collecting)
      mp__pool_collect_end(p);
    while (k < want) {
      int r = im->input(im->stage + k * im->item_size, im->input_user);
      if (r <= 0) {
        im->input_done = true;
        if (r < 0)
          im->input_err = r;
        break;
      }
      k++;
    }
    if (collecting)
      mp__pool_collect_begin(p);
    src = im->stage;
  } else {
    k = im->n - im->next_in < want ? im->n - im->next_in : want;
    src = im->items + im->next_in * im->item_size;
    if (im->next_in + k >= im->n)
      im->input_done = true;
  }
  if (!k)
    return;
  pthread_mutex_lock(&p->mu);
  size_t start = im->next_in;
  im->next_in += k;
  im->unreturned += k;
  if (p->terminated || atomic_load(&p->stopping)) {
    im->input_done = true;
    im->terminated = true;
    pthread_mutex_unlock(&p->mu);
    return;
  }
  size_t per = mp__pool_piece_items(im->item_size, im->result_size);
  for (size_t off = 0; off < k; off += im->chunksize) {
    size_t c = k - off < im->chunksize ? k - off : im->chunksize;
    if (im->pending_chunks == 0)
      mp__pool_live_add(p, &im->j);
    size_t queued;
    mp__pool_dispatch_map(p, &im->j, MP__K_IMAP, im->fn,
                          src + off * im->item_size, start + off, c,
                          im->item_size, im->result_size, &queued);
    /* One completion per queued piece, plus one for a failed remainder. */
    im->pending_chunks += (queued + per - 1) / per + (queued < c);
    if (queued < c) {
      mp__trec_t t = {0};
      t.id = (uint64_t)(uintptr_t)im;
      t.start = start + off + queued;
      t.count = (uint32_t)(c - queued);
      mp__pool_fail_task(p, &t, MP_ENOMEM);
    }
  }
  pthread_mutex_unlock(&p->mu);
}

int mp_pool_imap(mp_pool_t *pool, mp_map_fn fn, const void *items, size_t n,
                 size_t item_size, size_t result_size,
                 const mp_imap_opts_t *opts, mp_imap_t **it) {
  int e =
      imap_create(pool, fn, items, n, item_size, result_size, opts, true, it);
  if (!e)
    imap_topup(*it, false);
  return e;
}

int mp_pool_imap_unordered(mp_pool_t *pool, mp_map_fn fn, const void *items,
                           size_t n, size_t item_size, size_t result_size,
                           const mp_imap_opts_t *opts, mp_imap_t **it) {
  int e =
      imap_create(pool, fn, items, n, item_size, result_size, opts, false, it);
  if (!e)
    imap_topup(*it, false);
  return e;
}

typedef struct {
  mp_imap_t *im;
  uint32_t seq;
} imap_wait_t;

static bool imap_cond(void *arg) {
  imap_wait_t *c = arg;
  return atomic_load(&c->im->seq) != c->seq;
}

static int imap_next(mp_imap_t *im, void *result, size_t *index,
                     int timeout_ms) {
  mp_pool_t *p = im->pool;
  mp__deadline_t dl;
  mp__deadline_init(&dl, timeout_ms);
  for (;;) {
    imap_topup(im, true);
    pthread_mutex_lock(&p->mu);
    size_t slot = SIZE_MAX, idx = 0;
    if (im->ordered) {
      size_t s = im->next_out % im->cap;
      if (im->next_out < im->next_in && im->sstate[s]) {
        slot = s;
        idx = im->next_out++;
      }
    } else if (im->fhead != im->ftail) {
      slot = im->fhead++ % im->cap;
      idx = im->sindex[slot];
    }
    if (slot != SIZE_MAX) {
      im->sstate[slot] = 0;
      im->unreturned--;
      int err = im->serr[slot];
      if (result && im->result_size && !err)
        memcpy(result, im->sres + slot * im->result_size, im->result_size);
      pthread_mutex_unlock(&p->mu);
      if (index)
        *index = idx;
      return err;
    }
    if ((im->input_done && im->unreturned == 0) || im->terminated) {
      int e = im->input_err ? im->input_err : MP_ECLOSED;
      im->input_err = 0;
      if (im->terminated)
        e = MP_ECLOSED;
      pthread_mutex_unlock(&p->mu);
      return e;
    }
    imap_wait_t c = {im, atomic_load(&im->seq)};
    pthread_mutex_unlock(&p->mu);
    if (timeout_ms == 0) {
      mp__pool_collect_now(p);
      if (imap_cond(&c))
        continue;
      return MP_ETIMEDOUT;
    }
    if (mp__pool_wait_until(p, imap_cond, &c, &dl) == MP_ETIMEDOUT)
      return MP_ETIMEDOUT;
  }
}

int mp_imap_next(mp_imap_t *im, void *result, size_t *index, int timeout_ms) {
  if (!im || mp__check_timeout(timeout_ms))
    return MP_EINVAL;
  if (!mp__pool_enter(im->pool))
    return MP_ECLOSED; /* destroyed: every item was completed or dropped */
  /* Collect here from the start: results of the items this call dispatches
   * need not wake the collector thread. */
  mp__pool_collect_begin(im->pool);
  int e = imap_next(im, result, index, timeout_ms);
  mp__pool_collect_end(im->pool);
  mp__pool_leave(im->pool);
  return e;
}

int mp_imap_destroy(mp_imap_t *im) {
  if (!im)
    return MP_EINVAL;
  mp__pool_job_unref(&im->j);
  return 0;
}
