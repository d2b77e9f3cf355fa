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
  int r = mp__mval_check(v);
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
    if ((r = mp__mval_check(&vals[i])) < 0)
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
  int r = mp__mval_check(v);
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
  int r = mp__mval_check(v);
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
  int r = mp__mval_check(v);
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

int mp_list_clear(mp_list_t *l) {
  MGR_REDIS_CALL(l, mp__rlist_clear(l));
  mop_t op;
  int r = list_begin(l, &op);
  if (r < 0)
    return r;
  list_shm_t *L = list_of(&op);
  sval_t *items = list_items(&op);
  for (uint64_t k = 0; k < L->len && r == 0; k++)
    r = mp__sval_release(&op, &items[k]);
  if (r == 0 && L->items_off)
    r = list_publish(&op, 0, 0, 0);
  return mp__mop_end(&op, r);
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
