/* Shared list: an array of values in an arena. Appends write past the
 * length (unreachable) and publish by storing the new length; operations
 * that shift items (insert, pop or remove in the middle) build the new array
 * aside and publish it, so every operation logs only a few words. */
#include <stdlib.h>
#include <string.h>

#include "manager_redis.h"

typedef struct {
  mgr_obj_t head;
  uint64_t items_off; /* sval_t[cap] */
  uint64_t cap;
  uint64_t len;
} list_shm_t;

static int list_handle_check(const mp_list_t *l) {
  return l && l->h.m && l->h.kind == MGR_KIND_LIST ? 0 : MP_EINVAL;
}

/* A list in shared memory (a call without a Redis hook refuses others). */
static int list_check(const mp_list_t *l) {
  int r = list_handle_check(l);
  return r == 0 && l->h.m->redis ? MP_ENOTSUP : r;
}

static list_shm_t *list_of(mop_t *op) {
  return (list_shm_t *)op->o;
}

int mp__list_shm_check(mop_t *op) {
  const list_shm_t *L = list_of(op);
  if (!mp__arena_span_ok(op->a, (uint64_t)((char *)L - (char *)op->a->seg.base),
                         sizeof *L))
    return MP_EPROTO;
  if (L->len > L->cap || L->cap > ((uint64_t)1 << 40) ||
      (L->cap && !mp__arena_span_ok(op->a, L->items_off,
                                    L->cap * sizeof(sval_t))))
    return MP_EPROTO;
  return 0;
}

static sval_t *list_items(mop_t *op) {
  list_shm_t *L = list_of(op);
  return L->items_off ? mgr_ptr(op->a, L->items_off) : NULL;
}

static int list_index(mop_t *op, int64_t i, uint64_t *out) {
  uint64_t len = list_of(op)->len;
  if (i < 0)
    i += (int64_t)len;
  if (i < 0 || (uint64_t)i >= len)
    return MP_ERANGE;
  *out = (uint64_t)i;
  return 0;
}

/* Publish a new items array (already filled) of ncap slots holding nlen. */
static int list_publish(mop_t *op, uint64_t noff, uint64_t ncap,
                        uint64_t nlen) {
  list_shm_t *L = list_of(op);
  int r;
  if ((L->items_off && (r = mp__mop_defer_free(op, L->items_off)) < 0) ||
      (r = mp__mop_reserve(op, 3)) < 0)
    return r;
  mp__mop_w(op, &L->items_off, noff);
  mp__mop_w(op, &L->cap, ncap);
  mp__mop_w(op, &L->len, nlen);
  return 0;
}

/* Room for `more` items past len, growing geometrically. */
static int list_room(mop_t *op, uint64_t more) {
  list_shm_t *L = list_of(op);
  if (L->len + more <= L->cap)
    return 0;
  uint64_t ncap = L->cap ? L->cap * 2 : 8, noff;
  if (ncap < L->len + more)
    ncap = L->len + more;
  int r = mp__mop_alloc(op, ncap * sizeof(sval_t), &noff);
  if (r < 0)
    return r;
  mp__arena_prefault(op->a, noff, ncap * sizeof(sval_t));
  if (L->len)
    memcpy(mgr_ptr(op->a, noff), list_items(op), L->len * sizeof(sval_t));
  return list_publish(op, noff, ncap, L->len);
}

static int list_append_locked(mop_t *op, const mp_val_t *vals, size_t n) {
  list_shm_t *L = list_of(op);
  int r;
  if ((r = list_room(op, n)) < 0)
    return r;
  sval_t *items = list_items(op);
  for (size_t i = 0; i < n; i++) {
    /* Past len: unreachable until the length is published. */
    if ((r = mp__sval_make(op, &vals[i], &items[L->len + i])) < 0)
      return r;
  }
  if ((r = mp__mop_reserve(op, 1)) < 0)
    return r;
  mp__mop_w(op, &L->len, L->len + n);
  return 0;
}

/* Remove item i (copied into *out first when out is set). */
static int list_remove_at(mop_t *op, uint64_t i, mp_val_t *out) {
  list_shm_t *L = list_of(op);
  sval_t *items = list_items(op);
  mp_val_t v = mp_val_nil();
  int r;
  if ((out && (r = mp__sval_load(op->a, &items[i], &v)) < 0) ||
      (r = mp__sval_release(op, &items[i])) < 0)
    goto fail;
  if (i == L->len - 1) {
    if ((r = mp__mop_reserve(op, 1)) < 0)
      goto fail;
    mp__mop_w(op, &L->len, L->len - 1);
  } else {
    uint64_t noff;
    if ((r = mp__mop_alloc(op, L->cap * sizeof(sval_t), &noff)) < 0)
      goto fail;
    sval_t *ni = mgr_ptr(op->a, noff);
    memcpy(ni, items, i * sizeof(sval_t));
    memcpy(ni + i, items + i + 1, (L->len - i - 1) * sizeof(sval_t));
    if ((r = list_publish(op, noff, L->cap, L->len - 1)) < 0)
      goto fail;
  }
  if (out)
    *out = v;
  return 0;
fail:
  mp_val_free(&v);
  return r;
}

/* ---- handles ----------------------------------------------------------------
 */

int mp_list_create(mp_list_t **l, mp_manager_t *m, const mp_list_opts_t *opts) {
  return mp__mgr_handle_make(m, MGR_KIND_LIST, sizeof(list_shm_t),
                             opts ? opts->name : NULL, MGR_CREATE, 0,
                             (mgr_handle_t **)l);
}

int mp_list_open(mp_list_t **l, mp_manager_t *m, const char *name) {
  return mp__mgr_handle_make(m, MGR_KIND_LIST, 0, name, MGR_BY_NAME, 0,
                             (mgr_handle_t **)l);
}

int mp_list_open_id(mp_list_t **l, mp_manager_t *m, uint32_t id) {
  return mp__mgr_handle_make(m, MGR_KIND_LIST, 0, NULL, MGR_BY_ID, id,
                             (mgr_handle_t **)l);
}

int mp_list_id(const mp_list_t *l, uint32_t *id) {
  if (list_handle_check(l) < 0 || !id)
    return MP_EINVAL;
  *id = l->h.id;
  return 0;
}

int mp_list_close(mp_list_t *l) {
  if (list_handle_check(l) < 0)
    return MP_EINVAL;
  free(l);
  return 0;
}

/* ---- operations
 * --------------------------------------------------------------- */

static int list_begin(mp_list_t *l, mop_t *op) {
  if (list_check(l) < 0)
    return MP_EINVAL;
  return mp__mop_begin(op, l->h.m, l->h.off);
}

int mp_list_append(mp_list_t *l, const mp_val_t *v) {
  MGR_REDIS_CALL(l, mp__rlist_append(l, v, 1));
  mop_t op;
  int r = MVAL_CHECK(l, v);
  if (r < 0 || (r = list_begin(l, &op)) < 0)
    return r;
  return mp__mop_end(&op, list_append_locked(&op, v, 1));
}

int mp_list_extend(mp_list_t *l, const mp_val_t *vals, size_t n) {
  MGR_REDIS_CALL(l, mp__rlist_append(l, vals, n));
  mop_t op;
  int r;
  if (list_check(l) < 0 || (n && !vals) || n > (1ull << 40))
    return MP_EINVAL;
  for (size_t i = 0; i < n; i++)
    if ((r = MVAL_CHECK(l, &vals[i])) < 0)
      return r;
  if (n == 0)
    return 0;
  if ((r = list_begin(l, &op)) < 0)
    return r;
  return mp__mop_end(&op, list_append_locked(&op, vals, n));
}

int mp_list_get(mp_list_t *l, int64_t i, mp_val_t *out) {
  MGR_REDIS_CALL(l, mp__rlist_get(l, i, out));
  mop_t op;
  uint64_t k;
  int r;
  if (!out)
    return MP_EINVAL;
  if ((r = list_begin(l, &op)) < 0)
    return r;
  if ((r = list_index(&op, i, &k)) == 0)
    r = mp__sval_load(op.a, &list_items(&op)[k], out);
  return mp__mop_commit(&op, r);
}

int mp_list_set(mp_list_t *l, int64_t i, const mp_val_t *v) {
  MGR_REDIS_CALL(l, mp__rlist_set(l, i, v));
  mop_t op;
  uint64_t k;
  sval_t nv;
  int r = MVAL_CHECK(l, v);
  if (r < 0 || (r = list_begin(l, &op)) < 0)
    return r;
  if ((r = list_index(&op, i, &k)) < 0 ||
      (r = mp__sval_make(&op, v, &nv)) < 0 ||
      (r = mp__mop_reserve(&op, 2)) < 0 ||
      (r = mp__sval_release(&op, &list_items(&op)[k])) < 0)
    return mp__mop_abort(&op, r);
  sval_t *it = &list_items(&op)[k];
  mp__mop_w(&op, &it->tl, nv.tl);
  mp__mop_w(&op, &it->pay, nv.pay);
  return mp__mop_commit(&op, 0);
}

int mp_list_insert(mp_list_t *l, int64_t i, const mp_val_t *v) {
  MGR_REDIS_CALL(l, mp__rlist_insert(l, i, v));
  mop_t op;
  int r = MVAL_CHECK(l, v);
  if (r < 0 || (r = list_begin(l, &op)) < 0)
    return r;
  list_shm_t *L = list_of(&op);
  uint64_t len = L->len, k;
  if (i < 0)
    i += (int64_t)len;
  k = i < 0 ? 0 : (uint64_t)i > len ? len : (uint64_t)i;
  if (k == len)
    return mp__mop_end(&op, list_append_locked(&op, v, 1));
  uint64_t ncap = len + 1 > L->cap ? L->cap * 2 : L->cap, noff;
  if ((r = mp__mop_alloc(&op, ncap * sizeof(sval_t), &noff)) < 0)
    return mp__mop_abort(&op, r);
  sval_t *ni = mgr_ptr(op.a, noff), *items = list_items(&op);
  memcpy(ni, items, k * sizeof(sval_t));
  memcpy(ni + k + 1, items + k, (len - k) * sizeof(sval_t));
  if ((r = mp__sval_make(&op, v, &ni[k])) < 0)
    return mp__mop_abort(&op, r);
  return mp__mop_end(&op, list_publish(&op, noff, ncap, len + 1));
}

int mp_list_pop(mp_list_t *l, int64_t i, mp_val_t *out) {
  MGR_REDIS_CALL(l, mp__rlist_pop(l, i, out));
  mop_t op;
  uint64_t k;
  int r;
  if ((r = list_begin(l, &op)) < 0)
    return r;
  if ((r = list_index(&op, i, &k)) < 0)
    return mp__mop_abort(&op, r);
  return mp__mop_end(&op, list_remove_at(&op, k, out));
}

int mp_list_remove(mp_list_t *l, const mp_val_t *v) {
  MGR_REDIS_CALL(l, mp__rlist_remove(l, v));
  mop_t op;
  int r = MVAL_CHECK(l, v);
  if (r < 0 || (r = list_begin(l, &op)) < 0)
    return r;
  list_shm_t *L = list_of(&op);
  sval_t *items = list_items(&op);
  for (uint64_t k = 0; k < L->len; k++)
    if (mp__sval_eq(op.a, &items[k], v))
      return mp__mop_end(&op, list_remove_at(&op, k, NULL));
  return mp__mop_abort(&op, MP_ENOENT);
}

int mp_list_len(mp_list_t *l, size_t *n) {
  MGR_REDIS_CALL(l, mp__rlist_len(l, n));
  mop_t op;
  int r;
  if (!n)
    return MP_EINVAL;
  if ((r = list_begin(l, &op)) < 0)
    return r;
  *n = (size_t)list_of(&op)->len;
  return mp__mop_commit(&op, 0);
}

static int list_clear_locked(mop_t *op) {
  list_shm_t *L = list_of(op);
  sval_t *items = list_items(op);
  int r = 0;
  for (uint64_t k = 0; k < L->len && r == 0; k++)
    r = mp__sval_release(op, &items[k]);
  if (r == 0 && L->items_off)
    r = list_publish(op, 0, 0, 0);
  return r;
}

int mp_list_clear(mp_list_t *l) {
  MGR_REDIS_CALL(l, mp__rlist_clear(l));
  mop_t op;
  int r = list_begin(l, &op);
  if (r < 0)
    return r;
  return mp__mop_end(&op, list_clear_locked(&op));
}

int mp_list_items(mp_list_t *l, mp_val_t **vals, size_t *n) {
  MGR_REDIS_CALL(l, mp__rlist_items(l, vals, n));
  mop_t op;
  int r = 0;
  if (!vals || !n)
    return MP_EINVAL;
  if ((r = list_begin(l, &op)) < 0)
    return r;
  size_t len = (size_t)list_of(&op)->len;
  mp_val_t *vs = len ? calloc(len, sizeof *vs) : NULL;
  if (len && !vs)
    r = MP_ENOMEM;
  sval_t *items = list_items(&op);
  for (size_t k = 0; k < len && r == 0; k++)
    r = mp__sval_load(op.a, &items[k], &vs[k]);
  mp__mop_commit(&op, 0);
  if (r < 0) {
    mp_vals_free(vs, len);
    return r;
  }
  *vals = vs;
  *n = len;
  return 0;
}

int mp_list_repr(mp_list_t *l, char **out) {
  MGR_REDIS_CALL(l, mp__rlist_repr(l, out));
  mop_t op;
  sbuf_t b = {0};
  int r;
  if (!out)
    return MP_EINVAL;
  if ((r = list_begin(l, &op)) < 0)
    return r;
  list_shm_t *L = list_of(&op);
  sval_t *items = list_items(&op);
  mp__sb_put(&b, "[", 1);
  for (uint64_t k = 0; k < L->len && !b.err; k++) {
    if (k)
      mp__sb_put(&b, ", ", 2);
    mp__sb_repr_sval(&b, op.a, &items[k]);
  }
  mp__sb_put(&b, "]", 1);
  mp__mop_commit(&op, 0);
  return mp__sb_finish(&b, out);
}

/* ---- Python's other list methods ------------------------------------------
 * Each is one atomic operation under the list's lock; the ones that reorder
 * or resize build the new items array aside and publish it (list_publish),
 * so a crash leaves the list as it was. */

/* Python's PySlice_AdjustIndices: clamp start/stop for a list of len items
 * and return the slice's length. */
static uint64_t slice_adjust(uint64_t len, int64_t *start, int64_t *stop,
                             int64_t step) {
  int64_t n = (int64_t)len;
  int64_t *ends[2] = {start, stop};
  for (int k = 0; k < 2; k++) {
    int64_t *e = ends[k];
    if (*e < 0) {
      *e += n;
      if (*e < 0)
        *e = step < 0 ? -1 : 0;
    } else if (*e >= n) {
      *e = step < 0 ? n - 1 : n;
    }
  }
  if (step < 0)
    return *stop < *start ? (uint64_t)((*start - *stop - 1) / -step) + 1 : 0;
  return *start < *stop ? (uint64_t)((*stop - *start - 1) / step) + 1 : 0;
}

static int slice_check(int64_t step) {
  /* -INT64_MIN overflows: Python caps steps at -PY_SSIZE_T_MAX too. */
  return step == 0 || step == INT64_MIN ? MP_EINVAL : 0;
}

int mp_list_count(mp_list_t *l, const mp_val_t *v, size_t *count) {
  MGR_REDIS_CALL(l, mp__rlist_count(l, v, count));
  mop_t op;
  int r = MVAL_CHECK(l, v);
  if (r < 0 || !count)
    return MP_EINVAL;
  if ((r = list_begin(l, &op)) < 0)
    return r;
  list_shm_t *L = list_of(&op);
  sval_t *items = list_items(&op);
  size_t c = 0;
  for (uint64_t k = 0; k < L->len; k++)
    c += mp__sval_eq(op.a, &items[k], v);
  *count = c;
  return mp__mop_commit(&op, 0);
}

int mp_list_index(mp_list_t *l, const mp_val_t *v, int64_t start,
                  int64_t stop, size_t *index) {
  MGR_REDIS_CALL(l, mp__rlist_index(l, v, start, stop, index));
  mop_t op;
  int r = MVAL_CHECK(l, v);
  if (r < 0 || !index)
    return MP_EINVAL;
  if ((r = list_begin(l, &op)) < 0)
    return r;
  list_shm_t *L = list_of(&op);
  sval_t *items = list_items(&op);
  slice_adjust(L->len, &start, &stop, 1);
  for (int64_t k = start; k < stop; k++) {
    if (mp__sval_eq(op.a, &items[k], v)) {
      *index = (size_t)k;
      return mp__mop_commit(&op, 0);
    }
  }
  return mp__mop_commit(&op, MP_ENOENT);
}

int mp_list_reverse(mp_list_t *l) {
  MGR_REDIS_CALL(l, mp__rlist_reverse(l));
  mop_t op;
  int r;
  if ((r = list_begin(l, &op)) < 0)
    return r;
  list_shm_t *L = list_of(&op);
  uint64_t len = L->len, noff;
  if (len < 2)
    return mp__mop_commit(&op, 0);
  if ((r = mp__mop_alloc(&op, L->cap * sizeof(sval_t), &noff)) < 0)
    return mp__mop_abort(&op, r);
  sval_t *ni = mgr_ptr(op.a, noff), *items = list_items(&op);
  for (uint64_t k = 0; k < len; k++)
    ni[k] = items[len - 1 - k];
  return mp__mop_end(&op, list_publish(&op, noff, L->cap, len));
}

/* Python's order: numbers (bool, int, float) among themselves, str among
 * str, bytes among bytes (both by their bytes: code point order for UTF-8);
 * anything else (None, or mixed kinds) is not ordered: TypeError there,
 * MP_EINVAL here. */
static int val_kind(const mp_val_t *v) {
  switch (v->type) {
  case MP_BOOL:
  case MP_INT:
  case MP_DOUBLE:
    return 1;
  case MP_STR:
    return 2;
  case MP_BYTES:
    return 3;
  default:
    return 0;
  }
}

static long double val_num(const mp_val_t *v) {
  return v->type == MP_BOOL  ? (long double)v->u.b
         : v->type == MP_INT ? (long double)v->u.i
                             : (long double)v->u.d;
}

static int val_cmp(const mp_val_t *a, const mp_val_t *b) {
  if (val_kind(a) == 1) {
    if (a->type == MP_INT && b->type == MP_INT)
      return (a->u.i > b->u.i) - (a->u.i < b->u.i);
    long double x = val_num(a), y = val_num(b);
    return (x > y) - (x < y); /* NaN compares equal: stays in place */
  }
  size_t n = a->len < b->len ? a->len : b->len;
  int c = n ? memcmp(a->u.p, b->u.p, n) : 0;
  return c ? c : (a->len > b->len) - (a->len < b->len);
}

/* Stable merge sort of views (Python's sort is stable), descending when
 * rev (still stable: equal items keep their order, as Python's reverse=True).
 */
static void sort_views(mp_val_t *v, uint64_t *ix, mp_val_t *tv, uint64_t *tix,
                       size_t n, bool rev) {
  for (size_t w = 1; w < n; w *= 2) {
    for (size_t lo = 0; lo < n; lo += 2 * w) {
      size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
      size_t i = lo, j = mid, k = lo;
      while (i < mid && j < hi) {
        int c = val_cmp(&v[j], &v[i]);
        bool take_right = rev ? c > 0 : c < 0;
        size_t s = take_right ? j++ : i++;
        tv[k] = v[s];
        tix[k++] = ix[s];
      }
      while (i < mid) {
        tv[k] = v[i];
        tix[k++] = ix[i++];
      }
      while (j < hi) {
        tv[k] = v[j];
        tix[k++] = ix[j++];
      }
    }
    memcpy(v, tv, n * sizeof *v);
    memcpy(ix, tix, n * sizeof *ix);
  }
}

int mp_list_sort(mp_list_t *l, bool reverse) {
  MGR_REDIS_CALL(l, mp__rlist_sort(l, reverse));
  mop_t op;
  int r;
  if ((r = list_begin(l, &op)) < 0)
    return r;
  list_shm_t *L = list_of(&op);
  size_t len = (size_t)L->len;
  if (len < 2)
    return mp__mop_commit(&op, 0);
  sval_t *items = list_items(&op);
  mp_val_t *v = malloc(2 * len * sizeof *v);
  uint64_t *ix = malloc(2 * len * sizeof *ix), noff;
  if (!v || !ix) {
    r = MP_ENOMEM;
    goto out;
  }
  for (size_t k = 0; k < len; k++) {
    mp__sval_view(op.a, &items[k], &v[k]);
    ix[k] = k;
    if (val_kind(&v[k]) == 0 || val_kind(&v[k]) != val_kind(&v[0])) {
      r = MP_EINVAL; /* Python's TypeError: the list is unchanged */
      goto out;
    }
  }
  sort_views(v, ix, v + len, ix + len, len, reverse);
  if ((r = mp__mop_alloc(&op, L->cap * sizeof(sval_t), &noff)) < 0)
    goto out;
  sval_t *ni = mgr_ptr(op.a, noff);
  for (size_t k = 0; k < len; k++)
    ni[k] = items[ix[k]];
  r = list_publish(&op, noff, L->cap, len);
out:
  free(v);
  free(ix);
  return mp__mop_end(&op, r);
}

int mp_list_get_slice(mp_list_t *l, int64_t start, int64_t stop, int64_t step,
                      mp_val_t **vals, size_t *n) {
  MGR_REDIS_CALL(l, mp__rlist_get_slice(l, start, stop, step, vals, n));
  mop_t op;
  int r;
  if (!vals || !n || slice_check(step) < 0)
    return MP_EINVAL;
  if ((r = list_begin(l, &op)) < 0)
    return r;
  uint64_t cnt = slice_adjust(list_of(&op)->len, &start, &stop, step);
  mp_val_t *vs = cnt ? calloc(cnt, sizeof *vs) : NULL;
  if (cnt && !vs)
    r = MP_ENOMEM;
  sval_t *items = list_items(&op);
  for (uint64_t k = 0; k < cnt && r == 0; k++)
    r = mp__sval_load(op.a, &items[start + (int64_t)k * step], &vs[k]);
  mp__mop_commit(&op, 0);
  if (r < 0) {
    mp_vals_free(vs, cnt);
    return r;
  }
  *vals = vs;
  *n = (size_t)cnt;
  return 0;
}

/* Replace the items selected by (start, stop, step) with vals[0..n): for
 * step 1 any n (the list grows or shrinks), else n must be the slice's
 * length. vals NULL with n 0 deletes the slice. */
static int list_splice(mp_list_t *l, int64_t start, int64_t stop, int64_t step,
                       const mp_val_t *vals, size_t n) {
  mop_t op;
  int r;
  if (slice_check(step) < 0 || (n && !vals) || n > (1ull << 40))
    return MP_EINVAL;
  for (size_t i = 0; i < n; i++)
    if ((r = MVAL_CHECK(l, &vals[i])) < 0)
      return r;
  if ((r = list_begin(l, &op)) < 0)
    return r;
  list_shm_t *L = list_of(&op);
  uint64_t len = L->len, cnt = slice_adjust(len, &start, &stop, step);
  bool del = !vals;
  if (step == 1 && !del) {
    if (stop < start)
      stop = start; /* l[5:2] = xs inserts at 5 */
    cnt = (uint64_t)(stop - start);
  } else if (!del && n != cnt) {
    return mp__mop_abort(&op, MP_EINVAL); /* Python's ValueError */
  }
  uint64_t nlen = len - cnt + (del ? 0 : n);
  uint64_t ncap = nlen > L->cap ? nlen : L->cap, noff;
  if (ncap == 0)
    ncap = 8;
  sval_t *items = list_items(&op);
  /* Every selected item is released; kept items move to the new array. */
  uint64_t k;
  for (k = 0; k < cnt; k++)
    if ((r = mp__sval_release(&op, &items[start + (int64_t)k * step])) < 0)
      return mp__mop_abort(&op, r);
  if ((r = mp__mop_alloc(&op, ncap * sizeof(sval_t), &noff)) < 0)
    return mp__mop_abort(&op, r);
  mp__arena_prefault(op.a, noff, ncap * sizeof(sval_t));
  sval_t *ni = mgr_ptr(op.a, noff);
  if (step == 1) {
    uint64_t s = (uint64_t)start, m = del ? 0 : n;
    memcpy(ni, items, s * sizeof(sval_t));
    for (k = 0; k < m; k++)
      if ((r = mp__sval_make(&op, &vals[k], &ni[s + k])) < 0)
        return mp__mop_abort(&op, r);
    memcpy(ni + s + m, items + s + cnt, (len - s - cnt) * sizeof(sval_t));
  } else if (del) {
    /* Mark the selected positions, then copy the others in order. */
    uint8_t *gone = calloc(len ? len : 1, 1);
    if (!gone)
      return mp__mop_abort(&op, MP_ENOMEM);
    for (k = 0; k < cnt; k++)
      gone[start + (int64_t)k * step] = 1;
    uint64_t o = 0;
    for (k = 0; k < len; k++)
      if (!gone[k])
        ni[o++] = items[k];
    free(gone);
  } else {
    memcpy(ni, items, len * sizeof(sval_t));
    for (k = 0; k < cnt; k++)
      if ((r = mp__sval_make(&op, &vals[k], &ni[start + (int64_t)k * step])) < 0)
        return mp__mop_abort(&op, r);
  }
  return mp__mop_end(&op, list_publish(&op, noff, ncap, nlen));
}

int mp_list_set_slice(mp_list_t *l, int64_t start, int64_t stop, int64_t step,
                      const mp_val_t *vals, size_t n) {
  if (!vals && n == 0) {
    static const mp_val_t none[1];
    vals = none; /* l[a:b] = []: an empty replacement, not a deletion */
  }
  if (!vals)
    return MP_EINVAL;
  MGR_REDIS_CALL(l, mp__rlist_splice(l, start, stop, step, vals, n));
  return list_splice(l, start, stop, step, vals, n);
}

int mp_list_del_slice(mp_list_t *l, int64_t start, int64_t stop,
                      int64_t step) {
  MGR_REDIS_CALL(l, mp__rlist_splice(l, start, stop, step, NULL, 0));
  return list_splice(l, start, stop, step, NULL, 0);
}

int mp_list_repeat(mp_list_t *l, int64_t times) {
  MGR_REDIS_CALL(l, mp__rlist_repeat(l, times));
  mop_t op;
  int r;
  if ((r = list_begin(l, &op)) < 0)
    return r;
  list_shm_t *L = list_of(&op);
  uint64_t len = L->len;
  if (times <= 0) /* Python: l *= 0 empties the list */
    return mp__mop_end(&op, list_clear_locked(&op));
  if (times == 1 || len == 0)
    return mp__mop_commit(&op, 0);
  if ((uint64_t)times > (1ull << 40) / len)
    return mp__mop_abort(&op, MP_ENOMEM);
  /* Each copy owns its own blobs: values are loaded once, stored again. */
  mp_val_t *vs = calloc(len, sizeof *vs);
  if (!vs)
    return mp__mop_abort(&op, MP_ENOMEM);
  sval_t *items = list_items(&op);
  for (uint64_t k = 0; k < len && r == 0; k++)
    r = mp__sval_load(op.a, &items[k], &vs[k]);
  for (int64_t t = 1; t < times && r == 0; t++)
    r = list_append_locked(&op, vs, (size_t)len);
  mp_vals_free(vs, (size_t)len);
  return mp__mop_end(&op, r);
}
