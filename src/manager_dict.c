/* Shared dict: Python's compact dict layout in an arena. Entries sit in an
 * array in insertion order (deleted ones stay as tombstones until the next
 * rebuild); an open-addressing index of twice the entries' capacity maps
 * hashes to entry numbers, so probes always meet an empty slot. Mutations
 * run in an undo-logged op (manager_impl.h); a rebuild prepares both new
 * arrays aside and publishes them with five logged words. */
#include <stdlib.h>
#include <string.h>

#include "manager_redis.h"

typedef struct {
  mgr_obj_t head;
  uint64_t index_off; /* uint64 slots: 0 empty, 1 deleted, else entry + 2 */
  uint64_t icap;      /* slots, a power of two, 2 * ecap */
  uint64_t entries_off;
  uint64_t ecap;
  uint64_t elen;  /* entries used, tombstones included */
  uint64_t count; /* live entries */
} dict_shm_t;

typedef struct {
  uint64_t hash;
  sval_t key; /* key.tl type SVAL_DELETED: a tombstone */
  sval_t val;
} dent_t;

#define SLOT_EMPTY 0
#define SLOT_DUMMY 1
#define NOT_FOUND UINT64_MAX

static int dict_handle_check(const mp_dict_t *d) {
  return d && d->h.m && d->h.kind == MGR_KIND_DICT ? 0 : MP_EINVAL;
}

/* A dict in shared memory (a call without a Redis hook refuses others). */
static int dict_check(const mp_dict_t *d) {
  int r = dict_handle_check(d);
  return r == 0 && d->h.m->redis ? MP_ENOTSUP : r;
}

static dict_shm_t *dict_of(mop_t *op) {
  return (dict_shm_t *)op->o;
}

static uint64_t dict_seed(const mp_dict_t *d) {
  return d->h.m->root->hash_seed;
}

static bool dent_live(const dent_t *e) {
  return (e->key.tl & 0xff) != SVAL_DELETED;
}

/* Python's probe sequence: the first probe is the hash itself (so int keys,
 * hashed to themselves, keep their locality: sequential keys use sequential
 * slots), then the hash's high bits are mixed in, which spreads keys that
 * differ only there; once perturb is 0 the recurrence visits every slot. */
static uint64_t probe_next(uint64_t i, uint64_t *perturb, uint64_t mask) {
  *perturb >>= 5;
  return (i * 5 + *perturb + 1) & mask;
}

/* Find key: returns its slot or NOT_FOUND; *ins gets the slot to insert it
 * at (valid when the index exists). */
static uint64_t dict_find(mop_t *op, uint64_t h, const mp_val_t *key,
                          uint64_t *ins) {
  dict_shm_t *D = dict_of(op);
  *ins = NOT_FOUND;
  if (!D->icap)
    return NOT_FOUND;
  const uint64_t *idx = mgr_ptr(op->a, D->index_off);
  const dent_t *ents = mgr_ptr(op->a, D->entries_off);
  uint64_t mask = D->icap - 1, i = h & mask, perturb = h, dummy = NOT_FOUND;
  for (uint64_t probes = 0; probes <= 2 * mask + 64;
       probes++, i = probe_next(i, &perturb, mask)) {
    uint64_t s = idx[i];
    if (s == SLOT_EMPTY) {
      *ins = dummy != NOT_FOUND ? dummy : i;
      return NOT_FOUND;
    }
    if (s == SLOT_DUMMY) {
      if (dummy == NOT_FOUND)
        dummy = i;
      continue;
    }
    if (s - 2 >= D->elen)
      continue; /* cannot happen in a consistent table: skip, never read */
    const dent_t *e = &ents[s - 2];
    if (e->hash == h && mp__sval_eq(op->a, &e->key, key))
      return i;
  }
  *ins = dummy;
  return NOT_FOUND;
}

static dent_t *dict_entry(mop_t *op, uint64_t slot) {
  dict_shm_t *D = dict_of(op);
  const uint64_t *idx = mgr_ptr(op->a, D->index_off);
  dent_t *ents = mgr_ptr(op->a, D->entries_off);
  return &ents[idx[slot] - 2];
}

/* New arrays of ncap entries holding the live ones, compacted, published
 * with logged writes; the old arrays are freed after commit. */
static int dict_rebuild(mop_t *op, uint64_t ncap) {
  dict_shm_t *D = dict_of(op);
  uint64_t eoff, ioff, icap = ncap * 2;
  int r;
  if ((r = mp__mop_reserve(op, 5)) < 0 ||
      (r = mp__mop_alloc(op, ncap * sizeof(dent_t), &eoff)) < 0 ||
      (r = mp__mop_alloc(op, icap * 8, &ioff)) < 0)
    return r;
  if (D->entries_off && ((r = mp__mop_defer_free(op, D->entries_off)) < 0 ||
                         (r = mp__mop_defer_free(op, D->index_off)) < 0))
    return r;
  /* Both arrays are about to be written through: fault them in at once. */
  mp__arena_prefault(op->a, eoff, ncap * sizeof(dent_t));
  mp__arena_prefault(op->a, ioff, icap * 8);
  dent_t *ne = mgr_ptr(op->a, eoff);
  uint64_t *ni = mgr_ptr(op->a, ioff);
  memset(ni, 0, icap * 8);
  const dent_t *oe = D->entries_off ? mgr_ptr(op->a, D->entries_off) : NULL;
  uint64_t n = 0, mask = icap - 1;
  for (uint64_t k = 0; k < D->elen; k++) {
    if (!dent_live(&oe[k]))
      continue;
    ne[n] = oe[k];
    uint64_t i = ne[n].hash & mask, perturb = ne[n].hash;
    while (ni[i] != SLOT_EMPTY)
      i = probe_next(i, &perturb, mask);
    ni[i] = n + 2;
    n++;
  }
  mp__mop_w(op, &D->entries_off, eoff);
  mp__mop_w(op, &D->index_off, ioff);
  mp__mop_w(op, &D->ecap, ncap);
  mp__mop_w(op, &D->icap, icap);
  mp__mop_w(op, &D->elen, n);
  return 0;
}

static int dict_insert(mop_t *op, uint64_t h, const mp_val_t *key,
                       const mp_val_t *val) {
  dict_shm_t *D = dict_of(op);
  int r;
  if (D->elen >= D->ecap) {
    uint64_t want = D->count + D->count / 2 + 1, ncap = 8;
    while (ncap < want)
      ncap *= 2;
    if ((r = dict_rebuild(op, ncap)) < 0)
      return r;
  }
  uint64_t ins;
  dict_find(op, h, key, &ins);
  dent_t e;
  e.hash = h;
  if ((r = mp__sval_make(op, key, &e.key)) < 0 ||
      (r = mp__sval_make(op, val, &e.val)) < 0 ||
      (r = mp__mop_reserve(op, 3)) < 0)
    return r;
  dent_t *ents = mgr_ptr(op->a, D->entries_off);
  uint64_t *idx = mgr_ptr(op->a, D->index_off);
  ents[D->elen] = e; /* beyond elen: unreachable until published */
  mp__mop_w(op, &idx[ins], D->elen + 2);
  mp__mop_w(op, &D->elen, D->elen + 1);
  mp__mop_w(op, &D->count, D->count + 1);
  return 0;
}

static int dict_replace(mop_t *op, dent_t *e, const mp_val_t *val) {
  sval_t nv;
  int r;
  if ((r = mp__sval_make(op, val, &nv)) < 0 ||
      (r = mp__mop_reserve(op, 2)) < 0 ||
      (r = mp__sval_release(op, &e->val)) < 0)
    return r;
  mp__mop_w(op, &e->val.tl, nv.tl);
  mp__mop_w(op, &e->val.pay, nv.pay);
  return 0;
}

static int dict_set_locked(mop_t *op, uint64_t h, const mp_val_t *key,
                           const mp_val_t *val) {
  uint64_t ins, slot = dict_find(op, h, key, &ins);
  if (slot != NOT_FOUND)
    return dict_replace(op, dict_entry(op, slot), val);
  return dict_insert(op, h, key, val);
}

int mp__dict_shm_check(mop_t *op) {
  const dict_shm_t *D = dict_of(op);
  if (!mp__arena_span_ok(op->a, (uint64_t)((char *)D - (char *)op->a->seg.base),
                         sizeof *D))
    return MP_EPROTO;
  if (D->icap == 0)
    return D->ecap == 0 && D->elen == 0 && D->count == 0 ? 0 : MP_EPROTO;
  if ((D->icap & (D->icap - 1)) || D->icap > ((uint64_t)1 << 40) ||
      D->ecap * 2 != D->icap || D->elen > D->ecap || D->count > D->elen ||
      !mp__arena_span_ok(op->a, D->index_off, D->icap * 8) ||
      !mp__arena_span_ok(op->a, D->entries_off, D->ecap * sizeof(dent_t)))
    return MP_EPROTO;
  return 0;
}

static int dict_begin(mp_dict_t *d, const mp_val_t *key, mop_t *op,
                      uint64_t *h) {
  int r = dict_check(d);
  if (r < 0 || (r = mp__mval_check_key(key)) < 0)
    return r;
  *h = mp__mval_hash(dict_seed(d), key);
  return mp__mop_begin(op, d->h.m, d->h.off);
}

/* dict_begin, then look key up: *slot is its slot or NOT_FOUND. */
static int dict_begin_find(mp_dict_t *d, const mp_val_t *key, mop_t *op,
                           uint64_t *h, uint64_t *slot) {
  uint64_t ins;
  int r = dict_begin(d, key, op, h);
  *slot = NOT_FOUND;
  if (r == 0)
    *slot = dict_find(op, *h, key, &ins);
  return r;
}

/* ---- handles ----------------------------------------------------------------
 */

int mp_dict_create(mp_dict_t **d, mp_manager_t *m, const mp_dict_opts_t *opts) {
  return mp__mgr_handle_make(m, MGR_KIND_DICT, sizeof(dict_shm_t),
                             opts ? opts->name : NULL, MGR_CREATE, 0,
                             (mgr_handle_t **)d);
}

int mp_dict_open(mp_dict_t **d, mp_manager_t *m, const char *name) {
  return mp__mgr_handle_make(m, MGR_KIND_DICT, 0, name, MGR_BY_NAME, 0,
                             (mgr_handle_t **)d);
}

int mp_dict_open_id(mp_dict_t **d, mp_manager_t *m, uint32_t id) {
  return mp__mgr_handle_make(m, MGR_KIND_DICT, 0, NULL, MGR_BY_ID, id,
                             (mgr_handle_t **)d);
}

int mp_dict_id(const mp_dict_t *d, uint32_t *id) {
  if (dict_handle_check(d) < 0 || !id)
    return MP_EINVAL;
  *id = d->h.id;
  return 0;
}

int mp_dict_close(mp_dict_t *d) {
  if (dict_handle_check(d) < 0)
    return MP_EINVAL;
  free(d);
  return 0;
}

/* ---- operations
 * --------------------------------------------------------------- */

int mp_dict_set(mp_dict_t *d, const mp_val_t *key, const mp_val_t *val) {
  MGR_REDIS_CALL(d, mp__rdict_set(d, key, val));
  mop_t op;
  uint64_t h;
  int r = MVAL_CHECK(d, val);
  if (r < 0 || (r = dict_begin(d, key, &op, &h)) < 0)
    return r;
  return mp__mop_end(&op, dict_set_locked(&op, h, key, val));
}

/* d[key] copied out; a missing key copies *def, or nil when def is NULL,
 * or fails with MP_ENOENT when use_def is false. */
static int dict_get(mp_dict_t *d, const mp_val_t *key, bool use_def,
                    const mp_val_t *def, mp_val_t *out) {
  MGR_REDIS_CALL(d, mp__rdict_get(d, key, use_def, def, out));
  mop_t op;
  uint64_t h, slot;
  int r;
  if (!out || (def && MVAL_CHECK(d, def) < 0))
    return MP_EINVAL;
  if ((r = dict_begin_find(d, key, &op, &h, &slot)) < 0)
    return r;
  if (slot != NOT_FOUND)
    r = mp__sval_load(op.a, &dict_entry(&op, slot)->val, out);
  else if (!use_def)
    r = MP_ENOENT;
  else if (def)
    r = mp__mval_copy(def, out);
  else
    *out = mp_val_nil();
  return mp__mop_commit(&op, r);
}

int mp_dict_get_default(mp_dict_t *d, const mp_val_t *key, const mp_val_t *def,
                        mp_val_t *out) {
  return dict_get(d, key, true, def, out);
}

int mp_dict_get(mp_dict_t *d, const mp_val_t *key, mp_val_t *out) {
  return dict_get(d, key, false, NULL, out);
}

int mp_dict_contains(mp_dict_t *d, const mp_val_t *key, bool *found) {
  MGR_REDIS_CALL(d, mp__rdict_contains(d, key, found));
  mop_t op;
  uint64_t h, slot;
  int r;
  if (!found)
    return MP_EINVAL;
  if ((r = dict_begin_find(d, key, &op, &h, &slot)) < 0)
    return r;
  *found = slot != NOT_FOUND;
  return mp__mop_commit(&op, 0);
}

/* Remove the entry at index slot; its key and value are copied into *kout
 * and *vout first when set. Leaves the op open. */
static int dict_remove_slot(mop_t *op, uint64_t slot, mp_val_t *kout,
                            mp_val_t *vout) {
  dict_shm_t *D = dict_of(op);
  dent_t *e = dict_entry(op, slot);
  uint64_t *idx = mgr_ptr(op->a, D->index_off);
  mp_val_t k = mp_val_nil(), v = mp_val_nil();
  int r;
  if ((kout && (r = mp__sval_load(op->a, &e->key, &k)) < 0) ||
      (vout && (r = mp__sval_load(op->a, &e->val, &v)) < 0) ||
      (r = mp__mop_reserve(op, 3)) < 0 ||
      (r = mp__sval_release(op, &e->key)) < 0 ||
      (r = mp__sval_release(op, &e->val)) < 0) {
    mp_val_free(&k);
    mp_val_free(&v);
    return r;
  }
  mp__mop_w(op, &idx[slot], SLOT_DUMMY);
  mp__mop_w(op, &e->key.tl, SVAL_DELETED);
  mp__mop_w(op, &D->count, D->count - 1);
  if (kout)
    *kout = k;
  if (vout)
    *vout = v;
  return 0;
}

int mp_dict_pop(mp_dict_t *d, const mp_val_t *key, mp_val_t *out) {
  MGR_REDIS_CALL(d, mp__rdict_pop(d, key, out));
  mop_t op;
  uint64_t h, slot;
  int r;
  if ((r = dict_begin_find(d, key, &op, &h, &slot)) < 0)
    return r;
  if (slot == NOT_FOUND)
    return mp__mop_abort(&op, MP_ENOENT);
  return mp__mop_end(&op, dict_remove_slot(&op, slot, NULL, out));
}

int mp_dict_del(mp_dict_t *d, const mp_val_t *key) {
  return mp_dict_pop(d, key, NULL);
}

int mp_dict_len(mp_dict_t *d, size_t *n) {
  MGR_REDIS_CALL(d, mp__rdict_len(d, n));
  mop_t op;
  int r;
  if (dict_check(d) < 0 || !n)
    return MP_EINVAL;
  if ((r = mp__mop_begin(&op, d->h.m, d->h.off)) < 0)
    return r;
  *n = (size_t)dict_of(&op)->count;
  return mp__mop_commit(&op, 0);
}

int mp_dict_clear(mp_dict_t *d) {
  MGR_REDIS_CALL(d, mp__rdict_clear(d));
  mop_t op;
  int r;
  if (dict_check(d) < 0)
    return MP_EINVAL;
  if ((r = mp__mop_begin(&op, d->h.m, d->h.off)) < 0)
    return r;
  dict_shm_t *D = dict_of(&op);
  if (!D->entries_off)
    return mp__mop_commit(&op, 0);
  const dent_t *ents = mgr_ptr(op.a, D->entries_off);
  for (uint64_t k = 0; k < D->elen; k++) {
    if (!dent_live(&ents[k]))
      continue;
    if ((r = mp__sval_release(&op, &ents[k].key)) < 0 ||
        (r = mp__sval_release(&op, &ents[k].val)) < 0)
      return mp__mop_abort(&op, r);
  }
  if ((r = mp__mop_defer_free(&op, D->entries_off)) < 0 ||
      (r = mp__mop_defer_free(&op, D->index_off)) < 0 ||
      (r = mp__mop_reserve(&op, 6)) < 0)
    return mp__mop_abort(&op, r);
  mp__mop_w(&op, &D->entries_off, 0);
  mp__mop_w(&op, &D->index_off, 0);
  mp__mop_w(&op, &D->ecap, 0);
  mp__mop_w(&op, &D->icap, 0);
  mp__mop_w(&op, &D->elen, 0);
  mp__mop_w(&op, &D->count, 0);
  return mp__mop_commit(&op, 0);
}

int mp_dict_items(mp_dict_t *d, mp_val_t **keys, mp_val_t **vals, size_t *n) {
  MGR_REDIS_CALL(d, mp__rdict_items(d, keys, vals, n));
  mop_t op;
  int r = 0;
  if (dict_check(d) < 0 || !n || (!keys && !vals))
    return MP_EINVAL;
  if ((r = mp__mop_begin(&op, d->h.m, d->h.off)) < 0)
    return r;
  dict_shm_t *D = dict_of(&op);
  size_t cnt = (size_t)D->count, got = 0;
  mp_val_t *ks = NULL, *vs = NULL;
  if (cnt && ((keys && !(ks = calloc(cnt, sizeof *ks))) ||
              (vals && !(vs = calloc(cnt, sizeof *vs)))))
    r = MP_ENOMEM;
  const dent_t *ents = cnt ? mgr_ptr(op.a, D->entries_off) : NULL;
  for (uint64_t k = 0; r == 0 && got < cnt && k < D->elen; k++) {
    if (!dent_live(&ents[k]))
      continue;
    if (ks && (r = mp__sval_load(op.a, &ents[k].key, &ks[got])) < 0)
      break;
    if (vs && (r = mp__sval_load(op.a, &ents[k].val, &vs[got])) < 0)
      break;
    got++;
  }
  mp__mop_commit(&op, 0);
  if (r < 0) {
    /* calloc'd: the half-filled slot is nil or complete. */
    mp_vals_free(ks, cnt);
    mp_vals_free(vs, cnt);
    return r;
  }
  if (keys)
    *keys = ks;
  if (vals)
    *vals = vs;
  *n = got;
  return 0;
}

int mp_dict_keys(mp_dict_t *d, mp_val_t **keys, size_t *n) {
  return keys ? mp_dict_items(d, keys, NULL, n) : MP_EINVAL;
}

int mp_dict_values(mp_dict_t *d, mp_val_t **vals, size_t *n) {
  return vals ? mp_dict_items(d, NULL, vals, n) : MP_EINVAL;
}

int mp_dict_update(mp_dict_t *d, mp_dict_t *src) {
  MGR_REDIS_CALL(d, mp__rdict_update(d, src));
  mp_val_t *ks, *vs;
  size_t n;
  mop_t op;
  int r = 0;
  /* src may live in Redis: mp_dict_items below reads it from there. */
  if (dict_check(d) < 0 || dict_handle_check(src) < 0)
    return MP_EINVAL;
  if (d->h.m == src->h.m && d->h.off == src->h.off)
    return 0;
  /* A snapshot first: never two dict locks at once (no lock order). */
  if ((r = mp_dict_items(src, &ks, &vs, &n)) < 0)
    return r;
  for (size_t i = 0; i < n && r == 0; i++)
    r = MVAL_CHECK(d, &vs[i]); /* a reference into another manager */
  uint64_t seed = dict_seed(d);
  if (r < 0) {
    mp_vals_free(ks, n);
    mp_vals_free(vs, n);
    return r;
  }
  if ((r = mp__mop_begin(&op, d->h.m, d->h.off)) < 0) {
    mp_vals_free(ks, n);
    mp_vals_free(vs, n);
    return r;
  }
  for (size_t i = 0; i < n && r == 0; i++)
    r = dict_set_locked(&op, mp__mval_hash(seed, &ks[i]), &ks[i], &vs[i]);
  r = mp__mop_end(&op, r);
  mp_vals_free(ks, n);
  mp_vals_free(vs, n);
  return r;
}

int mp_dict_add(mp_dict_t *d, const mp_val_t *key, int64_t delta,
                int64_t *result) {
  MGR_REDIS_CALL(d, mp__rdict_add(d, key, delta, result));
  mop_t op;
  uint64_t h, slot;
  int r;
  if ((r = dict_begin_find(d, key, &op, &h, &slot)) < 0)
    return r;
  int64_t nv = delta;
  if (slot == NOT_FOUND) {
    mp_val_t v = mp_val_int(delta);
    r = dict_insert(&op, h, key, &v);
  } else {
    dent_t *e = dict_entry(&op, slot);
    if ((e->val.tl & 0xff) != MP_INT)
      return mp__mop_abort(&op, MP_EINVAL);
    if (__builtin_add_overflow((int64_t)e->val.pay, delta, &nv))
      return mp__mop_abort(&op, MP_ERANGE);
    if ((r = mp__mop_reserve(&op, 1)) == 0)
      mp__mop_w(&op, &e->val.pay, (uint64_t)nv);
  }
  if (r == 0 && result)
    *result = nv;
  return mp__mop_end(&op, r);
}

int mp_dict_cas(mp_dict_t *d, const mp_val_t *key, const mp_val_t *expected,
                const mp_val_t *desired, bool *swapped) {
  MGR_REDIS_CALL(d, mp__rdict_cas(d, key, expected, desired, swapped));
  mop_t op;
  uint64_t h, slot;
  int r;
  if (!swapped || MVAL_CHECK(d, desired) < 0 ||
      (expected && MVAL_CHECK(d, expected) < 0))
    return MP_EINVAL;
  if ((r = dict_begin_find(d, key, &op, &h, &slot)) < 0)
    return r;
  bool match;
  if (slot == NOT_FOUND)
    match = expected == NULL;
  else
    match =
        expected && mp__sval_eq(op.a, &dict_entry(&op, slot)->val, expected);
  if (match)
    r = slot == NOT_FOUND ? dict_insert(&op, h, key, desired)
                          : dict_replace(&op, dict_entry(&op, slot), desired);
  *swapped = match && r == 0;
  return mp__mop_end(&op, r);
}

int mp_dict_repr(mp_dict_t *d, char **out) {
  MGR_REDIS_CALL(d, mp__rdict_repr(d, out));
  mop_t op;
  sbuf_t b = {0};
  int r;
  if (dict_check(d) < 0 || !out)
    return MP_EINVAL;
  if ((r = mp__mop_begin(&op, d->h.m, d->h.off)) < 0)
    return r;
  dict_shm_t *D = dict_of(&op);
  mp__sb_put(&b, "{", 1);
  const dent_t *ents = D->entries_off ? mgr_ptr(op.a, D->entries_off) : NULL;
  bool first = true;
  for (uint64_t k = 0; k < D->elen && !b.err; k++) {
    if (!dent_live(&ents[k]))
      continue;
    if (!first)
      mp__sb_put(&b, ", ", 2);
    first = false;
    mp__sb_repr_sval(&b, op.a, &ents[k].key);
    mp__sb_put(&b, ": ", 2);
    mp__sb_repr_sval(&b, op.a, &ents[k].val);
  }
  mp__sb_put(&b, "}", 1);
  mp__mop_commit(&op, 0);
  return mp__sb_finish(&b, out);
}

/* ---- Python's other dict methods ------------------------------------------
 */

int mp_dict_popitem(mp_dict_t *d, mp_val_t *key, mp_val_t *val) {
  MGR_REDIS_CALL(d, mp__rdict_popitem(d, key, val));
  mop_t op;
  int r;
  if (dict_check(d) < 0 || !key || !val)
    return MP_EINVAL;
  if ((r = mp__mop_begin(&op, d->h.m, d->h.off)) < 0)
    return r;
  dict_shm_t *D = dict_of(&op);
  const dent_t *ents = D->count ? mgr_ptr(op.a, D->entries_off) : NULL;
  uint64_t k = D->count ? D->elen : 0;
  while (k > 0 && !dent_live(&ents[k - 1]))
    k--;
  if (k == 0)
    return mp__mop_abort(&op, MP_ENOENT); /* Python's KeyError: empty */
  /* The last inserted entry (LIFO, as Python): find its index slot. */
  mp_val_t kv;
  mp__sval_view(op.a, &ents[k - 1].key, &kv);
  uint64_t ins, slot = dict_find(&op, ents[k - 1].hash, &kv, &ins);
  if (slot == NOT_FOUND)
    return mp__mop_abort(&op, MP_EIO); /* index and entries disagree */
  r = dict_remove_slot(&op, slot, key, val);
  return mp__mop_end(&op, r);
}

int mp_dict_setdefault(mp_dict_t *d, const mp_val_t *key, const mp_val_t *def,
                       mp_val_t *out) {
  MGR_REDIS_CALL(d, mp__rdict_setdefault(d, key, def, out));
  mop_t op;
  uint64_t h, slot;
  int r;
  mp_val_t nil = mp_val_nil();
  if (!def)
    def = &nil;
  if (!out || MVAL_CHECK(d, def) < 0)
    return MP_EINVAL;
  if ((r = dict_begin_find(d, key, &op, &h, &slot)) < 0)
    return r;
  if (slot != NOT_FOUND)
    return mp__mop_commit(&op, mp__sval_load(op.a, &dict_entry(&op, slot)->val, out));
  if ((r = mp__mval_copy(def, out)) < 0)
    return mp__mop_abort(&op, r);
  if ((r = dict_insert(&op, h, key, def)) < 0) {
    mp_val_free(out);
    return mp__mop_abort(&op, r);
  }
  return mp__mop_commit(&op, 0);
}

int mp_dict_next(mp_dict_t *d, size_t *pos, mp_val_t *key, mp_val_t *val) {
  MGR_REDIS_CALL(d, mp__rdict_next(d, pos, key, val));
  mop_t op;
  int r = 0;
  if (dict_check(d) < 0 || !pos || (!key && !val))
    return MP_EINVAL;
  if ((r = mp__mop_begin(&op, d->h.m, d->h.off)) < 0)
    return r;
  dict_shm_t *D = dict_of(&op);
  const dent_t *ents = D->entries_off ? mgr_ptr(op.a, D->entries_off) : NULL;
  uint64_t k = *pos;
  while (k < D->elen && !dent_live(&ents[k]))
    k++;
  if (k >= D->elen) {
    *pos = (size_t)D->elen;
    return mp__mop_commit(&op, 0); /* the end */
  }
  mp_val_t kv = mp_val_nil(), vv = mp_val_nil();
  if ((key && (r = mp__sval_load(op.a, &ents[k].key, &kv)) < 0) ||
      (val && (r = mp__sval_load(op.a, &ents[k].val, &vv)) < 0)) {
    mp_val_free(&kv);
    return mp__mop_commit(&op, r);
  }
  mp__mop_commit(&op, 0);
  if (key)
    *key = kv;
  if (val)
    *val = vv;
  *pos = (size_t)k + 1;
  return 1;
}

/* ---- namespaces (manager_ns.c) are dicts of their own kind ---------------
 */

size_t mp__dict_shm_size(void) {
  return sizeof(dict_shm_t);
}
