/* Dict and list on Redis. A dict is a hash (encoded key -> encoded value),
 * a sorted set giving each key its insertion number (Python's order) and a
 * counter; a list is a Redis list. Each call is one command or one script. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "manager_redis.h"

#ifdef MP_HAVE_HIREDIS

static mp__rmgr_t *rm(const mgr_handle_t *h) {
  return h->m->redis;
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

/* The scripts' own error replies as codes. */
static int script_err(int r) {
  const char *e = mp__rlast_error();
  if (r != MP_EIO)
    return r;
  if (strstr(e, "MPTYPE"))
    return MP_EINVAL; /* Python's TypeError / ValueError */
  if (strstr(e, "MPRANGE"))
    return MP_ERANGE;
  if (strstr(e, "MPNOMEM"))
    return MP_ENOMEM;
  return r;
}

/* The keys and arguments of one call. */
typedef struct {
  const char *verb; /* a command (verb, keys, args, values), or NULL: */
  int script;       /* this script, KEYS keys, ARGV args then values */
  const char *const *keys;
  int nkeys;
  const char *const *args; /* plain strings */
  int nargs;
  const mp_val_t *vals; /* encoded here */
  size_t nvals;
  const mp_val_t *vals2; /* non-NULL: the values alternate vals[i],
                            vals2[i] (nvals counts both) */
} rcall_t;

static const mp_val_t *call_val(const rcall_t *c, size_t i) {
  return c->vals2 ? (i % 2 ? &c->vals2[i / 2] : &c->vals[i / 2]) : &c->vals[i];
}

/* One command or script: every dict and list call goes through here. The
 * values are encoded, the call made, the encodings freed; *rp the reply
 * (NULL: the reply is only checked to be there, and freed). */
static int run(mgr_handle_t *h, const rcall_t *c, redisReply **rp) {
  /* argv: the verb, or three words the script call fills in; then keys,
   * args and the values, encoded one after another into one buffer (an
   * update of many keys makes three allocations, not one per value). */
  size_t head = c->verb ? 1 : 3, total = 0;
  size_t argc = head + (size_t)c->nkeys + (size_t)c->nargs + c->nvals;
  for (size_t i = 0; i < c->nvals; i++) {
    size_t n = mp__renc_size(call_val(c, i));
    if (n == 0 || total + n < total)
      return MP_EINVAL;
    total += n;
  }
  if (argc > INT32_MAX)
    return MP_ENOMEM;
  const char *sav[16];
  size_t slv[16];
  char sbuf[256];
  const char **av = argc <= 16 ? sav : malloc(argc * sizeof *av);
  size_t *lv = argc <= 16 ? slv : malloc(argc * sizeof *lv);
  char *buf = total <= sizeof sbuf ? sbuf : malloc(total);
  redisReply *reply = NULL;
  int r = av && lv && buf ? 0 : MP_ENOMEM;
  if (r == 0) {
    size_t k = head;
    if (c->verb) {
      av[0] = c->verb;
      lv[0] = strlen(c->verb);
    }
    for (int i = 0; i < c->nkeys; i++) {
      av[k] = c->keys[i];
      lv[k++] = strlen(c->keys[i]);
    }
    for (int i = 0; i < c->nargs; i++) {
      av[k] = c->args[i];
      lv[k++] = strlen(c->args[i]);
    }
    char *p = buf;
    for (size_t i = 0; i < c->nvals; i++) {
      av[k] = p;
      lv[k] = mp__renc_to(p, call_val(c, i));
      p += lv[k++];
    }
    mp__rconn_t *cn = &rm(h)->conn;
    r = c->verb ? mp__rcmd(cn, &reply, 0, (int)argc, av, lv)
                : script_err(mp__reval_slots(cn, &reply, c->script, c->nkeys,
                                             (int)argc, av, lv));
  }
  if (av != sav)
    free(av);
  if (lv != slv)
    free(lv);
  if (buf != sbuf)
    free(buf);
  if (r == 0 && rp)
    *rp = reply;
  else if (reply)
    freeReplyObject(reply);
  return r;
}

/* An integer reply >= -1 into *v. */
static int reply_int(redisReply *rp, long long *v) {
  int r = 0;
  if (rp->type == REDIS_REPLY_INTEGER && rp->integer >= -1)
    *v = rp->integer;
  else
    r = MP_EIO;
  freeReplyObject(rp);
  return r;
}

static int run_int(mgr_handle_t *h, const rcall_t *c, long long *v) {
  redisReply *rp;
  int r = run(h, c, &rp);
  return r < 0 ? r : reply_int(rp, v);
}

/* ---- dict ------------------------------------------------------------------
 */

/* The dict's keys: hash (key -> value), zset (key -> insertion number),
 * counter. */
typedef struct {
  char b[3][RKEY_MAX];
  const char *k[3];
} dkeys_t;

static void dict_keys(const mp_dict_t *d, dkeys_t *k) {
  mp__rkey(rm(&d->h), k->b[0], "o:%u", d->h.id);
  mp__rkey(rm(&d->h), k->b[1], "o:%u:z", d->h.id);
  mp__rkey(rm(&d->h), k->b[2], "o:%u:n", d->h.id);
  for (int i = 0; i < 3; i++)
    k->k[i] = k->b[i];
}

/* A script on the dict's first nkeys keys. */
static int dict_run(mp_dict_t *d, int script, int nkeys, const char *const *args,
                    int nargs, const mp_val_t *vals, size_t nvals,
                    redisReply **rp) {
  dkeys_t k;
  dict_keys(d, &k);
  rcall_t c = {NULL, script, k.k, nkeys, args, nargs, vals, nvals, NULL};
  return run(&d->h, &c, rp);
}

/* verb (HGET, HEXISTS, HLEN, DEL...) on the dict's hash (and zset), with
 * the encoded key if any. */
static int dict_cmd(mp_dict_t *d, const char *verb, int nkeys,
                    const mp_val_t *key, redisReply **rp) {
  dkeys_t k;
  dict_keys(d, &k);
  rcall_t c = {verb, 0, k.k, nkeys, NULL, 0, key, key ? 1 : 0, NULL};
  return run(&d->h, &c, rp);
}

int mp__rdict_set(mp_dict_t *d, const mp_val_t *key, const mp_val_t *val) {
  if (check_d(d) < 0 || mp__mval_check_key(key) < 0 || mp__mval_check(val) < 0)
    return MP_EINVAL;
  mp_val_t kv[2] = {*key, *val};
  return dict_run(d, RS_DSET, 3, NULL, 0, kv, 2, NULL);
}

int mp__rdict_get(mp_dict_t *d, const mp_val_t *key, bool use_def,
                  const mp_val_t *def, mp_val_t *out) {
  redisReply *rp;
  int r;
  if (check_d(d) < 0 || !out || mp__mval_check_key(key) < 0 ||
      (def && mp__mval_check(def) < 0))
    return MP_EINVAL;
  if ((r = dict_cmd(d, "HGET", 1, key, &rp)) < 0)
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
  long long v;
  int r;
  if (check_d(d) < 0 || !found || mp__mval_check_key(key) < 0)
    return MP_EINVAL;
  dkeys_t k;
  dict_keys(d, &k);
  rcall_t c = {"HEXISTS", 0, k.k, 1, NULL, 0, key, 1, NULL};
  if ((r = run_int(&d->h, &c, &v)) == 0)
    *found = v == 1;
  return r;
}

/* A reply holding one encoded value (nil: MP_ENOENT), decoded into *out
 * when out is given; the reply is freed. */
static int take_val(redisReply *rp, mp_val_t *out) {
  int r;
  if (rp->type == REDIS_REPLY_NIL)
    r = MP_ENOENT;
  else if (out)
    r = reply_val(rp, out);
  else
    r = rp->type == REDIS_REPLY_STRING ? 0 : MP_EIO;
  freeReplyObject(rp);
  return r;
}

int mp__rdict_pop(mp_dict_t *d, const mp_val_t *key, mp_val_t *out) {
  redisReply *rp;
  if (check_d(d) < 0 || mp__mval_check_key(key) < 0)
    return MP_EINVAL;
  int r = dict_run(d, RS_DPOP, 2, NULL, 0, key, 1, &rp);
  return r < 0 ? r : take_val(rp, out);
}

static int count_reply(mgr_handle_t *h, const rcall_t *c, size_t *n) {
  long long v;
  int r = run_int(h, c, &v);
  if (r == 0 && v < 0)
    r = MP_EIO;
  if (r == 0)
    *n = (size_t)v;
  return r;
}

int mp__rdict_len(mp_dict_t *d, size_t *n) {
  if (check_d(d) < 0 || !n)
    return MP_EINVAL;
  dkeys_t k;
  dict_keys(d, &k);
  rcall_t c = {"HLEN", 0, k.k, 1, NULL, 0, NULL, 0, NULL};
  return count_reply(&d->h, &c, n);
}

int mp__rdict_clear(mp_dict_t *d) {
  if (check_d(d) < 0)
    return MP_EINVAL;
  return dict_cmd(d, "DEL", 2, NULL, NULL);
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
  redisReply *rp;
  int r = dict_run(d, RS_DITEMS, 2, NULL, 0, NULL, 0, &rp);
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

int mp__rdict_update(mp_dict_t *d, mp_dict_t *src) {
  mp_val_t *ks, *vs;
  size_t n;
  if (check_d(d) < 0 || check_d(src) < 0 || !src->h.m)
    return MP_EINVAL;
  if (d->h.m == src->h.m && d->h.id == src->h.id)
    return 0;
  /* A snapshot of src (from Redis or shared memory), set in one script:
   * ARGV k1 v1 k2 v2 ... */
  int r = mp_dict_items(src, &ks, &vs, &n);
  if (r < 0 || n == 0)
    return r;
  dkeys_t k;
  dict_keys(d, &k);
  rcall_t c = {NULL, RS_DSET_MANY, k.k, 3, NULL, 0, ks, 2 * n, vs};
  r = n <= (1u << 28) ? run(&d->h, &c, NULL) : MP_ENOMEM;
  mp_vals_free(ks, n);
  mp_vals_free(vs, n);
  return r;
}

int mp__rdict_add(mp_dict_t *d, const mp_val_t *key, int64_t delta,
                  int64_t *result) {
  if (check_d(d) < 0 || mp__mval_check_key(key) < 0)
    return MP_EINVAL;
  char ds[32];
  snprintf(ds, sizeof ds, "%" PRId64, delta);
  const char *args[1] = {ds};
  redisReply *rp;
  int r = dict_run(d, RS_DADD, 3, args, 1, key, 1, &rp);
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
  if (check_d(d) < 0 || !swapped || mp__mval_check_key(key) < 0 ||
      mp__mval_check(desired) < 0 || (expected && mp__mval_check(expected) < 0))
    return MP_EINVAL;
  mp_val_t kv[3] = {*key, *desired, expected ? *expected : mp_val_nil()};
  dkeys_t k;
  dict_keys(d, &k);
  rcall_t c = {NULL, RS_DCAS, k.k, 3, NULL, 0, kv, expected ? 3 : 2, NULL};
  long long v;
  int r = run_int(&d->h, &c, &v);
  if (r == 0)
    *swapped = v == 1;
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

int mp__rdict_popitem(mp_dict_t *d, mp_val_t *key, mp_val_t *val) {
  if (check_d(d) < 0 || !key || !val)
    return MP_EINVAL;
  redisReply *rp;
  int r = dict_run(d, RS_DPOPITEM, 2, NULL, 0, NULL, 0, &rp);
  if (r < 0)
    return r;
  mp_val_t k = mp_val_nil(), v = mp_val_nil();
  if (rp->type == REDIS_REPLY_NIL)
    r = MP_ENOENT; /* empty: KeyError */
  else if (rp->type != REDIS_REPLY_ARRAY || rp->elements != 2 ||
           (r = reply_val(rp->element[0], &k)) < 0 ||
           (r = reply_val(rp->element[1], &v)) < 0)
    r = r < 0 ? r : MP_EIO;
  freeReplyObject(rp);
  if (r < 0) {
    mp_val_free(&k);
    return r;
  }
  *key = k;
  *val = v;
  return 0;
}

int mp__rdict_setdefault(mp_dict_t *d, const mp_val_t *key,
                         const mp_val_t *def, mp_val_t *out) {
  mp_val_t nil = mp_val_nil();
  if (!def)
    def = &nil;
  if (check_d(d) < 0 || !out || mp__mval_check_key(key) < 0 ||
      mp__mval_check(def) < 0)
    return MP_EINVAL;
  mp_val_t kv[2] = {*key, *def};
  redisReply *rp;
  int r = dict_run(d, RS_DSETDEF, 3, NULL, 0, kv, 2, &rp);
  if (r < 0)
    return r;
  r = reply_val(rp, out);
  freeReplyObject(rp);
  return r;
}

/* An insertion number from the server: decimal digits, below 2^53. */
static int parse_pos(const redisReply *rp, size_t *pos) {
  if (rp->type != REDIS_REPLY_STRING || rp->len == 0 || rp->len > 16)
    return MP_EIO;
  uint64_t v = 0;
  for (size_t i = 0; i < rp->len; i++) {
    if (rp->str[i] < '0' || rp->str[i] > '9')
      return MP_EIO;
    v = v * 10 + (uint64_t)(rp->str[i] - '0');
  }
  if (v > (1ull << 53))
    return MP_EIO;
  *pos = (size_t)v;
  return 0;
}

/* *pos is the last insertion number seen (0 at the start): the next key
 * numbered after it, so an item there from start to end is seen once. */
int mp__rdict_next(mp_dict_t *d, size_t *pos, mp_val_t *key, mp_val_t *val) {
  if (check_d(d) < 0 || !pos || (!key && !val))
    return MP_EINVAL;
  char ps[32];
  snprintf(ps, sizeof ps, "%zu", *pos);
  const char *args[1] = {ps};
  redisReply *rp;
  int r = dict_run(d, RS_DNEXT, 2, args, 1, NULL, 0, &rp);
  if (r < 0)
    return r;
  if (rp->type == REDIS_REPLY_NIL) {
    freeReplyObject(rp);
    return 0; /* the end; *pos stays */
  }
  mp_val_t k = mp_val_nil(), v = mp_val_nil();
  size_t np = 0;
  if (rp->type != REDIS_REPLY_ARRAY || rp->elements != 3 ||
      (r = parse_pos(rp->element[1], &np)) < 0 ||
      (key && (r = reply_val(rp->element[0], &k)) < 0) ||
      (val && (r = reply_val(rp->element[2], &v)) < 0))
    r = r < 0 ? r : MP_EIO;
  freeReplyObject(rp);
  if (r < 0) {
    mp_val_free(&k);
    return r;
  }
  if (key)
    *key = k;
  if (val)
    *val = v;
  *pos = np;
  return 1;
}

/* ---- list ------------------------------------------------------------------
 */

static void list_key(const mp_list_t *l, char *k) {
  mp__rkey(rm(&l->h), k, "o:%u", l->h.id);
}

/* A command (verb non-NULL) or script on the list's key. */
static int list_run(mp_list_t *l, const char *verb, int script,
                    const char *const *args, int nargs, const mp_val_t *vals,
                    size_t nvals, redisReply **rp) {
  char key[RKEY_MAX];
  list_key(l, key);
  const char *keys[1] = {key};
  rcall_t c = {verb, script, keys, 1, args, nargs, vals, nvals, NULL};
  return run(&l->h, &c, rp);
}

/* An index for Lua (numbers are doubles): clamped far beyond any list. */
static void index_arg(int64_t i, char *buf, size_t cap) {
  int64_t c = i > (1ll << 50) ? (1ll << 50) : i < -(1ll << 50) ? -(1ll << 50)
                                                                : i;
  snprintf(buf, cap, "%" PRId64, c);
}

static int check_vals(const mp_val_t *vals, size_t n) {
  if ((n && !vals) || n > (1u << 28))
    return MP_EINVAL;
  for (size_t i = 0; i < n; i++)
    if (mp__mval_check(&vals[i]) < 0)
      return MP_EINVAL;
  return 0;
}

int mp__rlist_append(mp_list_t *l, const mp_val_t *vals, size_t n) {
  if (check_l(l) < 0 || check_vals(vals, n) < 0)
    return MP_EINVAL;
  if (n == 0)
    return 0;
  return list_run(l, "RPUSH", 0, NULL, 0, vals, n, NULL);
}

int mp__rlist_get(mp_list_t *l, int64_t i, mp_val_t *out) {
  if (check_l(l) < 0 || !out)
    return MP_EINVAL;
  char is[32];
  snprintf(is, sizeof is, "%" PRId64, i);
  const char *args[1] = {is};
  redisReply *rp;
  int r = list_run(l, "LINDEX", 0, args, 1, NULL, 0, &rp);
  if (r < 0)
    return r;
  r = take_val(rp, out);
  return r == MP_ENOENT ? MP_ERANGE : r;
}

int mp__rlist_set(mp_list_t *l, int64_t i, const mp_val_t *v) {
  if (check_l(l) < 0 || mp__mval_check(v) < 0)
    return MP_EINVAL;
  char is[32];
  snprintf(is, sizeof is, "%" PRId64, i);
  const char *args[1] = {is};
  int r = list_run(l, "LSET", 0, args, 1, v, 1, NULL);
  if (r == MP_EIO && (strstr(mp__rlast_error(), "out of range") ||
                      strstr(mp__rlast_error(), "no such key")))
    return MP_ERANGE;
  return r;
}

int mp__rlist_insert(mp_list_t *l, int64_t i, const mp_val_t *v) {
  if (check_l(l) < 0 || mp__mval_check(v) < 0)
    return MP_EINVAL;
  char is[32];
  index_arg(i, is, sizeof is);
  const char *args[1] = {is};
  return list_run(l, NULL, RS_LINSERT, args, 1, v, 1, NULL);
}

/* No value encodes to a string starting with byte 1. */
#define POP_MARKER "\001mproc-popped"

int mp__rlist_pop(mp_list_t *l, int64_t i, mp_val_t *out) {
  if (check_l(l) < 0)
    return MP_EINVAL;
  char is[32];
  index_arg(i, is, sizeof is);
  const char *args[2] = {is, POP_MARKER};
  redisReply *rp;
  int r = list_run(l, NULL, RS_LPOP, args, 2, NULL, 0, &rp);
  if (r < 0)
    return r;
  r = take_val(rp, out);
  return r == MP_ENOENT ? MP_ERANGE : r;
}

/* The first item equal to v (as the local list compares: 0.0 == -0.0). */
int mp__rlist_remove(mp_list_t *l, const mp_val_t *v) {
  if (check_l(l) < 0 || mp__mval_check(v) < 0)
    return MP_EINVAL;
  const char *args[1] = {POP_MARKER};
  long long found;
  char key[RKEY_MAX];
  list_key(l, key);
  const char *keys[1] = {key};
  rcall_t c = {NULL, RS_LREMOVE, keys, 1, args, 1, v, 1, NULL};
  int r = run_int(&l->h, &c, &found);
  return r < 0 ? r : found == 1 ? 0 : MP_ENOENT;
}

int mp__rlist_len(mp_list_t *l, size_t *n) {
  if (check_l(l) < 0 || !n)
    return MP_EINVAL;
  char key[RKEY_MAX];
  list_key(l, key);
  const char *keys[1] = {key};
  rcall_t c = {"LLEN", 0, keys, 1, NULL, 0, NULL, 0, NULL};
  return count_reply(&l->h, &c, n);
}

int mp__rlist_clear(mp_list_t *l) {
  if (check_l(l) < 0)
    return MP_EINVAL;
  return list_run(l, "DEL", 0, NULL, 0, NULL, 0, NULL);
}

/* An array reply of values into a new array (*vals NULL when empty). */
static int take_vals(redisReply *rp, mp_val_t **vals, size_t *n) {
  int r;
  if (rp->type != REDIS_REPLY_ARRAY)
    r = MP_EIO;
  else if ((r = decode_array(rp, 0, 1, rp->elements, vals)) == 0)
    *n = rp->elements;
  freeReplyObject(rp);
  return r;
}

int mp__rlist_items(mp_list_t *l, mp_val_t **vals, size_t *n) {
  if (check_l(l) < 0 || !vals || !n)
    return MP_EINVAL;
  const char *args[2] = {"0", "-1"};
  redisReply *rp;
  int r = list_run(l, "LRANGE", 0, args, 2, NULL, 0, &rp);
  return r < 0 ? r : take_vals(rp, vals, n);
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

/* A script on the list returning a count (>= -1) into *v. */
static int list_int(mp_list_t *l, int script, const char *const *args,
                    int nargs, const mp_val_t *vals, size_t nvals,
                    long long *v) {
  char key[RKEY_MAX];
  list_key(l, key);
  const char *keys[1] = {key};
  rcall_t c = {NULL, script, keys, 1, args, nargs, vals, nvals, NULL};
  return run_int(&l->h, &c, v);
}

int mp__rlist_count(mp_list_t *l, const mp_val_t *v, size_t *count) {
  long long c;
  if (check_l(l) < 0 || !count || mp__mval_check(v) < 0)
    return MP_EINVAL;
  int r = list_int(l, RS_LCOUNT, NULL, 0, v, 1, &c);
  if (r == 0 && c < 0)
    r = MP_EIO;
  if (r == 0)
    *count = (size_t)c;
  return r;
}

int mp__rlist_index(mp_list_t *l, const mp_val_t *v, int64_t start,
                    int64_t stop, size_t *index) {
  long long at;
  if (check_l(l) < 0 || !index || mp__mval_check(v) < 0)
    return MP_EINVAL;
  char ss[32], es[32];
  index_arg(start, ss, sizeof ss);
  index_arg(stop, es, sizeof es);
  const char *args[2] = {ss, es};
  int r = list_int(l, RS_LINDEX, args, 2, v, 1, &at);
  if (r == 0 && at < 0)
    r = MP_ENOENT; /* ValueError */
  if (r == 0)
    *index = (size_t)at;
  return r;
}

int mp__rlist_reverse(mp_list_t *l) {
  if (check_l(l) < 0)
    return MP_EINVAL;
  return list_run(l, NULL, RS_LREVERSE, NULL, 0, NULL, 0, NULL);
}

int mp__rlist_sort(mp_list_t *l, bool reverse) {
  if (check_l(l) < 0)
    return MP_EINVAL;
  /* The byte order of this client's doubles, as mp__renc_to stores them. */
  const double one = 1.0;
  unsigned char b0;
  memcpy(&b0, &one, 1);
  const char *args[2] = {reverse ? "1" : "0", b0 == 0 ? "<" : ">"};
  return list_run(l, NULL, RS_LSORT, args, 2, NULL, 0, NULL);
}

/* -INT64_MIN overflows: Python caps steps at -PY_SSIZE_T_MAX too. */
static int slice_args(int64_t start, int64_t stop, int64_t step,
                      char buf[3][32]) {
  if (step == 0 || step == INT64_MIN)
    return MP_EINVAL;
  index_arg(start, buf[0], 32);
  index_arg(stop, buf[1], 32);
  index_arg(step, buf[2], 32);
  return 0;
}

int mp__rlist_get_slice(mp_list_t *l, int64_t start, int64_t stop,
                        int64_t step, mp_val_t **vals, size_t *n) {
  char b[3][32];
  if (check_l(l) < 0 || !vals || !n || slice_args(start, stop, step, b) < 0)
    return MP_EINVAL;
  const char *args[3] = {b[0], b[1], b[2]};
  redisReply *rp;
  int r = list_run(l, NULL, RS_LSLICE, args, 3, NULL, 0, &rp);
  return r < 0 ? r : take_vals(rp, vals, n);
}

/* vals NULL: delete the slice. */
int mp__rlist_splice(mp_list_t *l, int64_t start, int64_t stop, int64_t step,
                     const mp_val_t *vals, size_t n) {
  char b[3][32];
  if (check_l(l) < 0 || slice_args(start, stop, step, b) < 0 ||
      (vals && check_vals(vals, n) < 0))
    return MP_EINVAL;
  const char *args[4] = {b[0], b[1], b[2], vals ? "0" : "1"};
  return list_run(l, NULL, RS_LSPLICE, args, 4, vals, vals ? n : 0, NULL);
}


int mp__rlist_repeat(mp_list_t *l, int64_t times) {
  if (check_l(l) < 0)
    return MP_EINVAL;
  char ts[32];
  index_arg(times, ts, sizeof ts);
  const char *args[1] = {ts};
  return list_run(l, NULL, RS_LREPEAT, args, 1, NULL, 0, NULL);
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
int mp__rdict_popitem(mp_dict_t *d, mp_val_t *key, mp_val_t *val) NOTSUP();
int mp__rdict_setdefault(mp_dict_t *d, const mp_val_t *key,
                         const mp_val_t *def, mp_val_t *out) NOTSUP();
int mp__rdict_next(mp_dict_t *d, size_t *pos, mp_val_t *key, mp_val_t *val)
    NOTSUP();
int mp__rlist_count(mp_list_t *l, const mp_val_t *v, size_t *count) NOTSUP();
int mp__rlist_index(mp_list_t *l, const mp_val_t *v, int64_t start,
                    int64_t stop, size_t *index) NOTSUP();
int mp__rlist_reverse(mp_list_t *l) NOTSUP();
int mp__rlist_sort(mp_list_t *l, bool reverse) NOTSUP();
int mp__rlist_get_slice(mp_list_t *l, int64_t start, int64_t stop,
                        int64_t step, mp_val_t **vals, size_t *n) NOTSUP();
int mp__rlist_splice(mp_list_t *l, int64_t start, int64_t stop, int64_t step,
                     const mp_val_t *vals, size_t n) NOTSUP();
int mp__rlist_repeat(mp_list_t *l, int64_t times) NOTSUP();

#endif
