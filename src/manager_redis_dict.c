/* Dict and list on Redis. A dict is a hash (encoded key -> encoded value),
 * a sorted set giving each key its insertion number (Python's order) and a
 * counter; a list is a Redis list. Each call is one command or one script. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "manager_redis.h"

#ifdef MP_HAVE_HIREDIS

typedef struct {
  char h[RKEY_MAX], z[RKEY_MAX], n[RKEY_MAX];
} dkeys_t;

static mp__rmgr_t *rm(const mgr_handle_t *h) {
  return h->m->redis;
}

static void dict_keys(const mp_dict_t *d, dkeys_t *k) {
  mp__rkey(rm(&d->h), k->h, "o:%u", d->h.id);
  mp__rkey(rm(&d->h), k->z, "o:%u:z", d->h.id);
  mp__rkey(rm(&d->h), k->n, "o:%u:n", d->h.id);
}

static int check_d(const mp_dict_t *d) {
  return d && d->h.kind == MGR_KIND_DICT ? 0 : MP_EINVAL;
}

static int check_l(const mp_list_t *l) {
  return l && l->h.kind == MGR_KIND_LIST ? 0 : MP_EINVAL;
}

/* A string reply decoded into *out; MP_EIO for anything else. */
static int reply_val(const redisReply *rp, mp_val_t *out) {
  if (rp->type != REDIS_REPLY_STRING)
    return MP_EIO;
  return mp__rdec(rp->str, rp->len, out);
}

static int cmd(mgr_handle_t *h, redisReply **rp, int argc, const char **av,
               const size_t *lv) {
  return mp__rcmd(&rm(h)->conn, rp, 0, argc, av, lv);
}

/* ---- dict ------------------------------------------------------------------
 */

int mp__rdict_set(mp_dict_t *d, const mp_val_t *key, const mp_val_t *val) {
  int r;
  if (check_d(d) < 0 || (r = mp__mval_check_key(key)) < 0 ||
      (r = mp__mval_check(val)) < 0)
    return MP_EINVAL;
  dkeys_t k;
  mp__renc_t ek, ev;
  dict_keys(d, &k);
  if ((r = mp__renc(&ek, key)) < 0)
    return r;
  if ((r = mp__renc(&ev, val)) < 0) {
    mp__renc_free(&ek);
    return r;
  }
  const char *av[5] = {k.h, k.z, k.n, ek.p, ev.p};
  size_t lv[5] = {strlen(k.h), strlen(k.z), strlen(k.n), ek.n, ev.n};
  redisReply *rp;
  r = mp__reval(&rm(&d->h)->conn, &rp, RS_DSET, 3, 2, av, lv);
  if (r == 0)
    freeReplyObject(rp);
  mp__renc_free(&ek);
  mp__renc_free(&ev);
  return r;
}

/* verb (HGET, HEXISTS) on the dict's hash and the encoded key. */
static int key_cmd(mp_dict_t *d, const char *verb, const mp_val_t *key,
                   redisReply **rp) {
  dkeys_t k;
  mp__renc_t ek;
  dict_keys(d, &k);
  int r = mp__renc(&ek, key);
  if (r < 0)
    return r;
  const char *av[3] = {verb, k.h, ek.p};
  size_t lv[3] = {strlen(verb), strlen(k.h), ek.n};
  r = cmd(&d->h, rp, 3, av, lv);
  mp__renc_free(&ek);
  return r;
}

int mp__rdict_get(mp_dict_t *d, const mp_val_t *key, bool use_def,
                  const mp_val_t *def, mp_val_t *out) {
  redisReply *rp;
  int r;
  if (check_d(d) < 0 || !out || mp__mval_check_key(key) < 0 ||
      (def && mp__mval_check(def) < 0))
    return MP_EINVAL;
  if ((r = key_cmd(d, "HGET", key, &rp)) < 0)
    return r;
  if (rp->type != REDIS_REPLY_NIL)
    r = reply_val(rp, out);
  else if (!use_def)
    r = MP_ENOENT;
  else if (def)
    r = mp__mval_copy(def, out);
  else
    *out = mp_val_nil();
  freeReplyObject(rp);
  return r;
}

int mp__rdict_contains(mp_dict_t *d, const mp_val_t *key, bool *found) {
  redisReply *rp;
  int r;
  if (check_d(d) < 0 || !found || mp__mval_check_key(key) < 0)
    return MP_EINVAL;
  if ((r = key_cmd(d, "HEXISTS", key, &rp)) < 0)
    return r;
  if (rp->type == REDIS_REPLY_INTEGER)
    *found = rp->integer == 1;
  else
    r = MP_EIO;
  freeReplyObject(rp);
  return r;
}

int mp__rdict_pop(mp_dict_t *d, const mp_val_t *key, mp_val_t *out) {
  int r;
  if (check_d(d) < 0 || mp__mval_check_key(key) < 0)
    return MP_EINVAL;
  dkeys_t k;
  mp__renc_t ek;
  dict_keys(d, &k);
  if ((r = mp__renc(&ek, key)) < 0)
    return r;
  const char *av[3] = {k.h, k.z, ek.p};
  size_t lv[3] = {strlen(k.h), strlen(k.z), ek.n};
  redisReply *rp;
  r = mp__reval(&rm(&d->h)->conn, &rp, RS_DPOP, 2, 1, av, lv);
  mp__renc_free(&ek);
  if (r < 0)
    return r;
  if (rp->type == REDIS_REPLY_NIL)
    r = MP_ENOENT;
  else if (out)
    r = reply_val(rp, out);
  else if (rp->type != REDIS_REPLY_STRING)
    r = MP_EIO;
  freeReplyObject(rp);
  return r;
}

static int count_cmd(mgr_handle_t *h, const char *verb, const char *key,
                     size_t *n) {
  const char *av[2] = {verb, key};
  redisReply *rp;
  int r = cmd(h, &rp, 2, av, NULL);
  if (r < 0)
    return r;
  if (rp->type == REDIS_REPLY_INTEGER && rp->integer >= 0)
    *n = (size_t)rp->integer;
  else
    r = MP_EIO;
  freeReplyObject(rp);
  return r;
}

int mp__rdict_len(mp_dict_t *d, size_t *n) {
  if (check_d(d) < 0 || !n)
    return MP_EINVAL;
  dkeys_t k;
  dict_keys(d, &k);
  return count_cmd(&d->h, "HLEN", k.h, n);
}

int mp__rdict_clear(mp_dict_t *d) {
  if (check_d(d) < 0)
    return MP_EINVAL;
  dkeys_t k;
  dict_keys(d, &k);
  const char *av[3] = {"DEL", k.h, k.z};
  redisReply *rp;
  int r = cmd(&d->h, &rp, 3, av, NULL);
  if (r == 0)
    freeReplyObject(rp);
  return r;
}

/* Decode an array reply of n entries taken every `step` starting at
 * `first` into a new array. */
static int decode_array(redisReply *rp, size_t first, size_t step, size_t n,
                        mp_val_t **out) {
  if (!n) {
    *out = NULL;
    return 0;
  }
  mp_val_t *vs = calloc(n, sizeof *vs);
  if (!vs)
    return MP_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    int r = reply_val(rp->element[first + i * step], &vs[i]);
    if (r < 0) {
      mp_vals_free(vs, n);
      return r;
    }
  }
  *out = vs;
  return 0;
}

int mp__rdict_items(mp_dict_t *d, mp_val_t **keys, mp_val_t **vals,
                    size_t *n) {
  if (check_d(d) < 0 || !n || (!keys && !vals))
    return MP_EINVAL;
  dkeys_t k;
  dict_keys(d, &k);
  const char *av[2] = {k.h, k.z};
  redisReply *rp;
  int r = mp__reval(&rm(&d->h)->conn, &rp, RS_DITEMS, 2, 0, av, NULL);
  if (r < 0)
    return r;
  if (rp->type != REDIS_REPLY_ARRAY || rp->elements % 2) {
    freeReplyObject(rp);
    return MP_EIO;
  }
  size_t cnt = rp->elements / 2;
  mp_val_t *ks = NULL, *vs = NULL;
  if ((keys && (r = decode_array(rp, 0, 2, cnt, &ks)) < 0) ||
      (vals && (r = decode_array(rp, 1, 2, cnt, &vs)) < 0)) {
    mp_vals_free(ks, cnt);
    freeReplyObject(rp);
    return r;
  }
  freeReplyObject(rp);
  if (keys)
    *keys = ks;
  if (vals)
    *vals = vs;
  *n = cnt;
  return 0;
}

int mp__rdict_set_many(mp_dict_t *d, const mp_val_t *keys,
                       const mp_val_t *vals, size_t n) {
  if (check_d(d) < 0)
    return MP_EINVAL;
  if (n == 0)
    return 0;
  if (n > (1u << 28))
    return MP_ENOMEM;
  dkeys_t k;
  dict_keys(d, &k);
  size_t argc = 3 + 2 * n;
  const char **av = calloc(argc, sizeof *av);
  size_t *lv = calloc(argc, sizeof *lv);
  mp__renc_t *enc = calloc(2 * n, sizeof *enc);
  int r = av && lv && enc ? 0 : MP_ENOMEM;
  if (r == 0) {
    av[0] = k.h;
    av[1] = k.z;
    av[2] = k.n;
    for (int i = 0; i < 3; i++)
      lv[i] = strlen(av[i]);
  }
  for (size_t i = 0; r == 0 && i < 2 * n; i++) {
    const mp_val_t *v = i % 2 ? &vals[i / 2] : &keys[i / 2];
    if ((r = mp__renc(&enc[i], v)) == 0) {
      av[3 + i] = enc[i].p;
      lv[3 + i] = enc[i].n;
    }
  }
  redisReply *rp;
  if (r == 0 &&
      (r = mp__reval(&rm(&d->h)->conn, &rp, RS_DSET_MANY, 3, (int)(2 * n), av,
                     lv)) == 0)
    freeReplyObject(rp);
  if (enc)
    for (size_t i = 0; i < 2 * n; i++)
      mp__renc_free(&enc[i]);
  free(enc);
  free(av);
  free(lv);
  return r;
}

int mp__rdict_update(mp_dict_t *d, mp_dict_t *src) {
  mp_val_t *ks, *vs;
  size_t n;
  if (check_d(d) < 0 || check_d(src) < 0 || !src->h.m)
    return MP_EINVAL;
  if (d->h.m == src->h.m && d->h.id == src->h.id)
    return 0;
  /* A snapshot of src (from Redis or shared memory), set in one script. */
  int r = mp_dict_items(src, &ks, &vs, &n);
  if (r < 0)
    return r;
  r = mp__rdict_set_many(d, ks, vs, n);
  mp_vals_free(ks, n);
  mp_vals_free(vs, n);
  return r;
}

int mp__rdict_add(mp_dict_t *d, const mp_val_t *key, int64_t delta,
                  int64_t *result) {
  int r;
  if (check_d(d) < 0 || mp__mval_check_key(key) < 0)
    return MP_EINVAL;
  dkeys_t k;
  mp__renc_t ek;
  char ds[32];
  dict_keys(d, &k);
  snprintf(ds, sizeof ds, "%" PRId64, delta);
  if ((r = mp__renc(&ek, key)) < 0)
    return r;
  const char *av[5] = {k.h, k.z, k.n, ek.p, ds};
  size_t lv[5] = {strlen(k.h), strlen(k.z), strlen(k.n), ek.n, strlen(ds)};
  redisReply *rp;
  r = mp__reval(&rm(&d->h)->conn, &rp, RS_DADD, 3, 2, av, lv);
  mp__renc_free(&ek);
  if (r == MP_EIO && strstr(mp__rlast_error(), "MPTYPE"))
    return MP_EINVAL;
  if (r == MP_EIO && strstr(mp__rlast_error(), "MPRANGE"))
    return MP_ERANGE;
  if (r < 0)
    return r;
  mp_val_t v;
  if ((r = reply_val(rp, &v)) == 0 && v.type != MP_INT) {
    mp_val_free(&v);
    r = MP_EIO;
  }
  freeReplyObject(rp);
  if (r == 0 && result)
    *result = v.u.i;
  return r;
}

int mp__rdict_cas(mp_dict_t *d, const mp_val_t *key, const mp_val_t *expected,
                  const mp_val_t *desired, bool *swapped) {
  int r;
  if (check_d(d) < 0 || !swapped || mp__mval_check_key(key) < 0 ||
      mp__mval_check(desired) < 0 || (expected && mp__mval_check(expected) < 0))
    return MP_EINVAL;
  dkeys_t k;
  mp__renc_t ek, ed, ee;
  ee.p = NULL;
  dict_keys(d, &k);
  if ((r = mp__renc(&ek, key)) < 0)
    return r;
  if ((r = mp__renc(&ed, desired)) < 0 ||
      (expected && (r = mp__renc(&ee, expected)) < 0)) {
    mp__renc_free(&ek);
    mp__renc_free(&ed);
    return r;
  }
  const char *av[7] = {k.h,  k.z,  k.n, ek.p, ed.p, expected ? "1" : "0",
                       ee.p ? ee.p : ""};
  size_t lv[7] = {strlen(k.h), strlen(k.z), strlen(k.n), ek.n, ed.n, 1,
                  ee.p ? ee.n : 0};
  redisReply *rp;
  r = mp__reval(&rm(&d->h)->conn, &rp, RS_DCAS, 3, expected ? 4 : 3, av, lv);
  mp__renc_free(&ek);
  mp__renc_free(&ed);
  mp__renc_free(&ee);
  if (r < 0)
    return r;
  if (rp->type == REDIS_REPLY_INTEGER)
    *swapped = rp->integer == 1;
  else
    r = MP_EIO;
  freeReplyObject(rp);
  return r;
}

int mp__rdict_repr(mp_dict_t *d, char **out) {
  mp_val_t *ks, *vs;
  size_t n;
  if (!out)
    return MP_EINVAL;
  int r = mp__rdict_items(d, &ks, &vs, &n);
  if (r < 0)
    return r;
  sbuf_t b = {0};
  mp__sb_put(&b, "{", 1);
  for (size_t i = 0; i < n && !b.err; i++) {
    if (i)
      mp__sb_put(&b, ", ", 2);
    mp__sb_repr_val(&b, &ks[i]);
    mp__sb_put(&b, ": ", 2);
    mp__sb_repr_val(&b, &vs[i]);
  }
  mp__sb_put(&b, "}", 1);
  mp_vals_free(ks, n);
  mp_vals_free(vs, n);
  return mp__sb_finish(&b, out);
}

/* ---- list ------------------------------------------------------------------
 */

static void list_key(const mp_list_t *l, char *k) {
  mp__rkey(rm(&l->h), k, "o:%u", l->h.id);
}

int mp__rlist_append(mp_list_t *l, const mp_val_t *vals, size_t n) {
  if (check_l(l) < 0 || (n && !vals) || n > (1u << 28))
    return MP_EINVAL;
  for (size_t i = 0; i < n; i++)
    if (mp__mval_check(&vals[i]) < 0)
      return MP_EINVAL;
  if (n == 0)
    return 0;
  char key[RKEY_MAX];
  list_key(l, key);
  size_t argc = 2 + n;
  const char **av = calloc(argc, sizeof *av);
  size_t *lv = calloc(argc, sizeof *lv);
  mp__renc_t *enc = calloc(n, sizeof *enc);
  int r = av && lv && enc ? 0 : MP_ENOMEM;
  if (r == 0) {
    av[0] = "RPUSH";
    lv[0] = 5;
    av[1] = key;
    lv[1] = strlen(key);
  }
  for (size_t i = 0; r == 0 && i < n; i++) {
    if ((r = mp__renc(&enc[i], &vals[i])) == 0) {
      av[2 + i] = enc[i].p;
      lv[2 + i] = enc[i].n;
    }
  }
  redisReply *rp;
  if (r == 0 && (r = cmd(&l->h, &rp, (int)argc, av, lv)) == 0)
    freeReplyObject(rp);
  if (enc)
    for (size_t i = 0; i < n; i++)
      mp__renc_free(&enc[i]);
  free(enc);
  free(av);
  free(lv);
  return r;
}

int mp__rlist_get(mp_list_t *l, int64_t i, mp_val_t *out) {
  if (check_l(l) < 0 || !out)
    return MP_EINVAL;
  char key[RKEY_MAX], is[32];
  list_key(l, key);
  snprintf(is, sizeof is, "%" PRId64, i);
  const char *av[3] = {"LINDEX", key, is};
  redisReply *rp;
  int r = cmd(&l->h, &rp, 3, av, NULL);
  if (r < 0)
    return r;
  r = rp->type == REDIS_REPLY_NIL ? MP_ERANGE : reply_val(rp, out);
  freeReplyObject(rp);
  return r;
}

int mp__rlist_set(mp_list_t *l, int64_t i, const mp_val_t *v) {
  if (check_l(l) < 0 || mp__mval_check(v) < 0)
    return MP_EINVAL;
  char key[RKEY_MAX], is[32];
  mp__renc_t e;
  list_key(l, key);
  snprintf(is, sizeof is, "%" PRId64, i);
  int r = mp__renc(&e, v);
  if (r < 0)
    return r;
  const char *av[4] = {"LSET", key, is, e.p};
  size_t lv[4] = {4, strlen(key), strlen(is), e.n};
  redisReply *rp;
  r = cmd(&l->h, &rp, 4, av, lv);
  mp__renc_free(&e);
  if (r == MP_EIO && (strstr(mp__rlast_error(), "out of range") ||
                      strstr(mp__rlast_error(), "no such key")))
    return MP_ERANGE;
  if (r == 0)
    freeReplyObject(rp);
  return r;
}

int mp__rlist_insert(mp_list_t *l, int64_t i, const mp_val_t *v) {
  if (check_l(l) < 0 || mp__mval_check(v) < 0)
    return MP_EINVAL;
  char key[RKEY_MAX], is[32];
  mp__renc_t e;
  list_key(l, key);
  /* Lua numbers are doubles: clamp far beyond any list length first. */
  int64_t c = i > (1ll << 50) ? (1ll << 50) : i < -(1ll << 50) ? -(1ll << 50)
                                                                : i;
  snprintf(is, sizeof is, "%" PRId64, c);
  int r = mp__renc(&e, v);
  if (r < 0)
    return r;
  const char *av[3] = {key, is, e.p};
  size_t lv[3] = {strlen(key), strlen(is), e.n};
  redisReply *rp;
  r = mp__reval(&rm(&l->h)->conn, &rp, RS_LINSERT, 1, 2, av, lv);
  mp__renc_free(&e);
  if (r == 0)
    freeReplyObject(rp);
  return r;
}

/* No value encodes to a string starting with byte 1. */
#define POP_MARKER "\001mproc-popped"

int mp__rlist_pop(mp_list_t *l, int64_t i, mp_val_t *out) {
  if (check_l(l) < 0)
    return MP_EINVAL;
  char key[RKEY_MAX], is[32];
  list_key(l, key);
  int64_t c = i > (1ll << 50) ? (1ll << 50) : i < -(1ll << 50) ? -(1ll << 50)
                                                                : i;
  snprintf(is, sizeof is, "%" PRId64, c);
  const char *av[3] = {key, is, POP_MARKER};
  redisReply *rp;
  int r = mp__reval(&rm(&l->h)->conn, &rp, RS_LPOP, 1, 2, av, NULL);
  if (r < 0)
    return r;
  if (rp->type == REDIS_REPLY_NIL)
    r = MP_ERANGE;
  else if (out)
    r = reply_val(rp, out);
  else if (rp->type != REDIS_REPLY_STRING)
    r = MP_EIO;
  freeReplyObject(rp);
  return r;
}

int mp__rlist_remove(mp_list_t *l, const mp_val_t *v) {
  if (check_l(l) < 0 || mp__mval_check(v) < 0)
    return MP_EINVAL;
  char key[RKEY_MAX];
  mp__renc_t e;
  list_key(l, key);
  int r = mp__renc(&e, v);
  if (r < 0)
    return r;
  const char *av[4] = {"LREM", key, "1", e.p};
  size_t lv[4] = {4, strlen(key), 1, e.n};
  redisReply *rp;
  r = cmd(&l->h, &rp, 4, av, lv);
  mp__renc_free(&e);
  if (r < 0)
    return r;
  if (rp->type != REDIS_REPLY_INTEGER)
    r = MP_EIO;
  else if (rp->integer == 0)
    r = MP_ENOENT;
  freeReplyObject(rp);
  return r;
}

int mp__rlist_len(mp_list_t *l, size_t *n) {
  if (check_l(l) < 0 || !n)
    return MP_EINVAL;
  char key[RKEY_MAX];
  list_key(l, key);
  return count_cmd(&l->h, "LLEN", key, n);
}

int mp__rlist_clear(mp_list_t *l) {
  if (check_l(l) < 0)
    return MP_EINVAL;
  char key[RKEY_MAX];
  list_key(l, key);
  const char *av[2] = {"DEL", key};
  redisReply *rp;
  int r = cmd(&l->h, &rp, 2, av, NULL);
  if (r == 0)
    freeReplyObject(rp);
  return r;
}

int mp__rlist_items(mp_list_t *l, mp_val_t **vals, size_t *n) {
  if (check_l(l) < 0 || !vals || !n)
    return MP_EINVAL;
  char key[RKEY_MAX];
  list_key(l, key);
  const char *av[4] = {"LRANGE", key, "0", "-1"};
  redisReply *rp;
  int r = cmd(&l->h, &rp, 4, av, NULL);
  if (r < 0)
    return r;
  if (rp->type != REDIS_REPLY_ARRAY)
    r = MP_EIO;
  else if ((r = decode_array(rp, 0, 1, rp->elements, vals)) == 0)
    *n = rp->elements;
  freeReplyObject(rp);
  return r;
}

int mp__rlist_repr(mp_list_t *l, char **out) {
  mp_val_t *vs;
  size_t n;
  if (!out)
    return MP_EINVAL;
  int r = mp__rlist_items(l, &vs, &n);
  if (r < 0)
    return r;
  sbuf_t b = {0};
  mp__sb_put(&b, "[", 1);
  for (size_t i = 0; i < n && !b.err; i++) {
    if (i)
      mp__sb_put(&b, ", ", 2);
    mp__sb_repr_val(&b, &vs[i]);
  }
  mp__sb_put(&b, "]", 1);
  mp_vals_free(vs, n);
  return mp__sb_finish(&b, out);
}

#else /* !MP_HAVE_HIREDIS: no handle ever points to a Redis manager. */

#define NOTSUP(...)                                                            \
  {                                                                            \
    return MP_ENOTSUP;                                                         \
  }
int mp__rdict_set(mp_dict_t *d, const mp_val_t *key, const mp_val_t *val)
    NOTSUP();
int mp__rdict_get(mp_dict_t *d, const mp_val_t *key, bool use_def,
                  const mp_val_t *def, mp_val_t *out) NOTSUP();
int mp__rdict_contains(mp_dict_t *d, const mp_val_t *key, bool *found)
    NOTSUP();
int mp__rdict_pop(mp_dict_t *d, const mp_val_t *key, mp_val_t *out) NOTSUP();
int mp__rdict_len(mp_dict_t *d, size_t *n) NOTSUP();
int mp__rdict_clear(mp_dict_t *d) NOTSUP();
int mp__rdict_items(mp_dict_t *d, mp_val_t **keys, mp_val_t **vals,
                    size_t *n) NOTSUP();
int mp__rdict_update(mp_dict_t *d, mp_dict_t *src) NOTSUP();
int mp__rdict_add(mp_dict_t *d, const mp_val_t *key, int64_t delta,
                  int64_t *result) NOTSUP();
int mp__rdict_cas(mp_dict_t *d, const mp_val_t *key, const mp_val_t *expected,
                  const mp_val_t *desired, bool *swapped) NOTSUP();
int mp__rdict_repr(mp_dict_t *d, char **out) NOTSUP();
int mp__rlist_append(mp_list_t *l, const mp_val_t *vals, size_t n) NOTSUP();
int mp__rlist_get(mp_list_t *l, int64_t i, mp_val_t *out) NOTSUP();
int mp__rlist_set(mp_list_t *l, int64_t i, const mp_val_t *v) NOTSUP();
int mp__rlist_insert(mp_list_t *l, int64_t i, const mp_val_t *v) NOTSUP();
int mp__rlist_pop(mp_list_t *l, int64_t i, mp_val_t *out) NOTSUP();
int mp__rlist_remove(mp_list_t *l, const mp_val_t *v) NOTSUP();
int mp__rlist_len(mp_list_t *l, size_t *n) NOTSUP();
int mp__rlist_clear(mp_list_t *l) NOTSUP();
int mp__rlist_items(mp_list_t *l, mp_val_t **vals, size_t *n) NOTSUP();
int mp__rlist_repr(mp_list_t *l, char **out) NOTSUP();

#endif
