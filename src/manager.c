/* Manager: the shared arena, its directory of dicts and lists, and the
 * undo-logged operation context every mutation runs in (manager_impl.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "manager_redis.h"

void (*mp__manager_write_hook)(void);

int mp__u64vec_push(u64vec_t *v, uint64_t x) {
  if (v->n == v->cap) {
    size_t cap = v->cap ? v->cap * 2 : 16;
    uint64_t *p = realloc(v->v, cap * sizeof *p);
    if (!p)
      return MP_ENOMEM;
    v->v = p;
    v->cap = cap;
  }
  v->v[v->n++] = x;
  return 0;
}

/* ---- operation context ----------------------------------------------------
 */

/* The undo log at off, if it can be one of ours: an allocation's
 * alignment, its capacity word and all its pairs inside the arena. NULL
 * otherwise (the offset was written by a corrupt peer). */
static uint64_t *log_at(mp__arena_t *a, uint64_t off) {
  if ((off & (MP__ARENA_ALIGN - 1)) || !mp__arena_span_ok(a, off, 8))
    return NULL;
  uint64_t *log = mgr_ptr(a, off);
  if (log[0] > UINT64_MAX / 16 ||
      !mp__arena_span_ok(a, off, (1 + 2 * log[0]) * 8))
    return NULL;
  return log;
}

static void rollback(mp__arena_t *a, mgr_obj_t *o) {
  uint64_t n = atomic_load_explicit(&o->undo_n, memory_order_acquire);
  if (n == 0)
    return;
  /* The log and every offset in it are bounded: a log that is not ours
   * is dropped, an entry outside the arena skipped. */
  uint64_t *log = log_at(a, atomic_load(&o->undo_off));
  if (log && n > log[0])
    log = NULL;
  for (uint64_t i = n; log && i-- > 0;) {
    uint64_t off = log[1 + 2 * i];
    if (!(off & 7) && mp__arena_span_ok(a, off, 8))
      *(uint64_t *)mgr_ptr(a, off) = log[2 + 2 * i];
  }
  atomic_store_explicit(&o->undo_n, 0, memory_order_release);
}

int mp__mop_begin(mop_t *op, mp_manager_t *m, uint64_t obj_off) {
  memset(op, 0, sizeof *op);
  op->a = &m->a;
  op->o = mgr_ptr(&m->a, obj_off);
  mp__mlock_lock(&op->o->lock);
  /* A non-empty log here means its last owner died midway. */
  rollback(op->a, op->o);
  /* Under the lock, the object's arrays are what its last writer left:
   * check them once here, so the operation can trust them. */
  int r = 0;
  if (op->o->kind == MGR_KIND_DICT || op->o->kind == MGR_KIND_NS)
    r = mp__dict_shm_check(op);
  else if (op->o->kind == MGR_KIND_LIST)
    r = mp__list_shm_check(op);
  else
    r = MP_EPROTO;
  if (r < 0)
    mp__mlock_unlock(&op->o->lock);
  return r;
}

int mp__mop_reserve(mop_t *op, size_t k) {
  mgr_obj_t *o = op->o;
  if (!op->log) {
    uint64_t off = atomic_load_explicit(&o->undo_off, memory_order_relaxed);
    if (off && !(op->log = log_at(op->a, off))) {
      /* Not a log we wrote: start a new one (the old block is not ours to
       * free). */
      atomic_store(&o->undo_off, 0);
    }
  }
  uint64_t cap = op->log ? op->log[0] : 0;
  if (op->n + k <= cap)
    return 0;
  uint64_t ncap = cap ? cap * 2 : 64;
  if (ncap < op->n + k)
    ncap = op->n + k;
  uint64_t noff;
  int r = mp__arena_alloc(op->a, (ncap * 2 + 1) * 8, &noff);
  if (r < 0)
    return r;
  uint64_t *nlog = mgr_ptr(op->a, noff);
  nlog[0] = ncap;
  if (op->n)
    memcpy(nlog + 1, op->log + 1, op->n * 2 * 8);
  uint64_t old =
      atomic_exchange_explicit(&o->undo_off, noff, memory_order_release);
  mp__arena_free(op->a, old);
  op->log = nlog;
  return 0;
}

void mp__mop_w(mop_t *op, uint64_t *addr, uint64_t val) {
  uint64_t n = op->n;
  op->log[1 + 2 * n] = (uint64_t)((char *)addr - (char *)op->a->seg.base);
  op->log[2 + 2 * n] = *addr;
  op->n = n + 1;
  atomic_store_explicit(&op->o->undo_n, n + 1, memory_order_release);
  *addr = val;
  if (MP__UNLIKELY(mp__manager_write_hook != NULL))
    mp__manager_write_hook();
}

int mp__mop_alloc(mop_t *op, size_t size, uint64_t *off) {
  int r = mp__arena_alloc(op->a, size, off);
  if (r < 0)
    return r;
  if ((r = mp__u64vec_push(&op->allocs, *off)) < 0) {
    mp__arena_free(op->a, *off);
    return r;
  }
  return 0;
}

int mp__mop_defer_free(mop_t *op, uint64_t off) {
  return mp__u64vec_push(&op->frees, off);
}

static void mop_done(mop_t *op) {
  free(op->allocs.v);
  free(op->frees.v);
}

/* A log grown by one big operation (update, extend) is not kept: the next
 * operation allocates a small one again. Unpublished before it is freed, so
 * a crash in between only leaks it. */
#define MOP_LOG_KEEP 1024

/* Unpublish the log if it is big (called with the log empty); free the
 * returned offset after unlocking. */
static uint64_t take_big_log(mop_t *op) {
  if (op->log && op->log[0] > MOP_LOG_KEEP)
    return atomic_exchange(&op->o->undo_off, 0);
  return 0;
}

int mp__mop_commit(mop_t *op, int r) {
  if (op->n)
    atomic_store_explicit(&op->o->undo_n, 0, memory_order_release);
  uint64_t big_log = take_big_log(op);
  mp__mlock_unlock(&op->o->lock);
  mp__arena_free(op->a, big_log);
  for (size_t i = 0; i < op->frees.n; i++)
    mp__arena_free(op->a, op->frees.v[i]);
  mop_done(op);
  return r;
}

int mp__mop_abort(mop_t *op, int r) {
  rollback(op->a, op->o);
  uint64_t big_log = take_big_log(op);
  mp__mlock_unlock(&op->o->lock);
  mp__arena_free(op->a, big_log);
  for (size_t i = 0; i < op->allocs.n; i++)
    mp__arena_free(op->a, op->allocs.v[i]);
  mop_done(op);
  return r;
}

int mp__mop_end(mop_t *op, int r) {
  return r < 0 ? mp__mop_abort(op, r) : mp__mop_commit(op, r);
}

/* ---- values ----------------------------------------------------------------
 */

#define SVAL_INLINE_MAX 8
#define VALUE_LEN_MAX (1ull << 55)

uint32_t mp__ref_kind(uint32_t type) {
  return type == MP_DICT   ? MGR_KIND_DICT
         : type == MP_LIST ? MGR_KIND_LIST
         : type == MP_NAMESPACE ? MGR_KIND_NS
                                : 0;
}

/* The handle of a caller's reference value (NULL for other types). */
static const mgr_handle_t *ref_handle(const mp_val_t *v) {
  return mp__ref_kind(v->type) ? (const mgr_handle_t *)v->u.p : NULL;
}

/* Well-formed, whatever can store it: a reference needs a handle of its
 * kind. */
static int mval_check_any(const mp_val_t *v) {
  if (!v)
    return MP_EINVAL;
  switch (v->type) {
  case MP_NIL:
  case MP_BOOL:
  case MP_INT:
  case MP_DOUBLE:
    return 0;
  case MP_STR:
  case MP_BYTES:
    if ((v->len && !v->u.p) || v->len >= VALUE_LEN_MAX)
      return MP_EINVAL;
    return 0;
  case MP_DICT:
  case MP_LIST:
  case MP_NAMESPACE: {
    const mgr_handle_t *h = ref_handle(v);
    return h && h->m && h->kind == mp__ref_kind(v->type) ? 0 : MP_EINVAL;
  }
  }
  return MP_EINVAL;
}

int mp__mval_check(const mp_val_t *v) {
  int r = mval_check_any(v);
  return r == 0 && mp__ref_kind(v->type) ? MP_ENOTSUP : r;
}

bool mp__mgr_same(const mp_manager_t *a, const mp_manager_t *b) {
  if (a == b)
    return true;
  /* Two handles on one segment: same name, same random hash seed. */
  return a && b && !a->redis && !b->redis &&
         strcmp(a->a.seg.name, b->a.seg.name) == 0 &&
         a->root->hash_seed == b->root->hash_seed;
}

int mp__mval_check_in(const mp_manager_t *m, const mp_val_t *v) {
  int r = mval_check_any(v);
  if (r < 0)
    return r;
  const mgr_handle_t *h = ref_handle(v);
  return !h || (m && mp__mgr_same(m, h->m)) ? 0 : MP_EINVAL;
}

int mp__mval_check_key(const mp_val_t *v) {
  if (!v || (v->type != MP_INT && v->type != MP_STR && v->type != MP_BYTES))
    return MP_EINVAL;
  return mp__mval_check(v);
}

static uint32_t sval_type(const sval_t *s) {
  return (uint32_t)(s->tl & 0xff);
}

static uint64_t sval_len(const sval_t *s) {
  return s->tl >> 8;
}

int mp__sval_blob(const sval_t *s) {
  uint32_t t = sval_type(s);
  return (t == MP_STR || t == MP_BYTES) && sval_len(s) > SVAL_INLINE_MAX;
}

int mp__sval_make(mop_t *op, const mp_val_t *v, sval_t *out) {
  out->tl = (uint64_t)v->type;
  out->pay = 0;
  switch (v->type) {
  case MP_BOOL:
    out->pay = v->u.b ? 1 : 0;
    break;
  case MP_INT:
    out->pay = (uint64_t)v->u.i;
    break;
  case MP_DOUBLE:
    memcpy(&out->pay, &v->u.d, 8);
    break;
  case MP_STR:
  case MP_BYTES:
    out->tl |= (uint64_t)v->len << 8;
    if (v->len <= SVAL_INLINE_MAX) {
      if (v->len)
        memcpy(&out->pay, v->u.p, v->len);
    } else {
      int r = mp__mop_alloc(op, v->len, &out->pay);
      if (r < 0)
        return r;
      memcpy(mgr_ptr(op->a, out->pay), v->u.p, v->len);
    }
    break;
  case MP_DICT:
  case MP_LIST:
  case MP_NAMESPACE:
    out->pay = ref_handle(v)->id; /* checked by mp__mval_check_in */
    break;
  default:
    break;
  }
  return 0;
}

int mp__sval_release(mop_t *op, const sval_t *s) {
  return mp__sval_blob(s) ? mp__mop_defer_free(op, s->pay) : 0;
}

/* Every arena the manager code reads through is the one inside its
 * mp_manager_t: a reference is resolved in that manager. */
static mp_manager_t *arena_mgr(mp__arena_t *a) {
  return (mp_manager_t *)(void *)((char *)a - offsetof(mp_manager_t, a));
}

/* A stored reference names an existing object of its kind: 0 and its
 * offset, or MP_EPROTO (whatever the reason: the bytes are not ours). */
static int sval_ref(mp__arena_t *a, const sval_t *s, uint64_t *off) {
  uint32_t kind = mp__ref_kind(sval_type(s));
  if (!kind || sval_len(s) != 0 || s->pay >= MGR_MAX_OBJ)
    return MP_EPROTO;
  return mp__mgr_obj_at(arena_mgr(a), kind, (uint32_t)s->pay, off) < 0
             ? MP_EPROTO
             : 0;
}

bool mp__sval_ok(mp__arena_t *a, const sval_t *s) {
  uint64_t off;
  if (mp__ref_kind(sval_type(s)))
    return sval_ref(a, s, &off) == 0;
  uint64_t len = sval_len(s);
  if ((sval_type(s) != MP_STR && sval_type(s) != MP_BYTES) ||
      len <= SVAL_INLINE_MAX)
    return true;
  return mp__arena_span_ok(a, s->pay, len);
}

const char *mp__sval_bytes(mp__arena_t *a, const sval_t *s, size_t *len) {
  *len = (size_t)sval_len(s);
  if (*len <= SVAL_INLINE_MAX)
    return (const char *)&s->pay;
  if (!mp__arena_span_ok(a, s->pay, *len)) {
    *len = 0; /* a blob outside the arena: seen as empty, never read */
    return "";
  }
  return mgr_ptr(a, s->pay);
}

/* A view of s as an mp_val_t whose data points into s (or the arena). */
void mp__sval_view(mp__arena_t *a, const sval_t *s, mp_val_t *v) {
  *v = mp_val_nil();
  v->type = (mp_val_type_t)sval_type(s);
  switch (v->type) {
  case MP_BOOL:
    v->u.b = s->pay != 0;
    break;
  case MP_INT:
    v->u.i = (int64_t)s->pay;
    break;
  case MP_DOUBLE:
    memcpy(&v->u.d, &s->pay, 8);
    break;
  case MP_STR:
  case MP_BYTES:
    v->u.s = mp__sval_bytes(a, s, &v->len);
    break;
  case MP_DICT:
  case MP_LIST:
  case MP_NAMESPACE:
    v->len = (size_t)s->pay; /* a view: no handle, the id in len */
    break;
  default:
    v->type = MP_NIL;
    break;
  }
}

/* A new handle on object (kind, id) at off of m, as the value of a
 * reference type. */
static int ref_out(mp_manager_t *m, uint32_t type, uint64_t off, uint32_t id,
                   mp_val_t *out) {
  mgr_handle_t *h = calloc(1, sizeof *h);
  if (!h)
    return MP_ENOMEM;
  h->m = m;
  h->off = off;
  h->id = id;
  h->kind = mp__ref_kind(type);
  *out = mp_val_nil();
  out->type = (mp_val_type_t)type;
  out->u.p = h;
  return 0;
}

int mp__mval_copy(const mp_val_t *in, mp_val_t *out) {
  const mgr_handle_t *h = ref_handle(in);
  if (h)
    return ref_out(h->m, in->type, h->off, h->id, out);
  *out = *in;
  if (in->type == MP_STR || in->type == MP_BYTES) {
    char *p = malloc(in->len + 1);
    if (!p)
      return MP_ENOMEM;
    if (in->len)
      memcpy(p, in->u.p, in->len);
    p[in->len] = '\0';
    out->u.s = p;
  }
  return 0;
}

int mp__sval_load(mp__arena_t *a, const sval_t *s, mp_val_t *out) {
  if (mp__ref_kind(sval_type(s))) {
    uint64_t off;
    int r = sval_ref(a, s, &off);
    return r < 0 ? r
                 : ref_out(arena_mgr(a), sval_type(s), off, (uint32_t)s->pay,
                           out);
  }
  if (!mp__sval_ok(a, s))
    return MP_EPROTO;
  mp_val_t v;
  mp__sval_view(a, s, &v);
  return mp__mval_copy(&v, out);
}

bool mp__mval_eq(const mp_val_t *x, const mp_val_t *y) {
  if (x->type != y->type)
    return false;
  switch (x->type) {
  case MP_NIL:
    return true;
  case MP_BOOL:
    return x->u.b == y->u.b;
  case MP_INT:
    return x->u.i == y->u.i;
  case MP_DOUBLE:
    return x->u.d == y->u.d || memcmp(&x->u.d, &y->u.d, 8) == 0;
  case MP_STR:
  case MP_BYTES:
    return x->len == y->len && (!x->len || !memcmp(x->u.p, y->u.p, x->len));
  case MP_DICT:
  case MP_LIST:
  case MP_NAMESPACE:
    return ref_handle(x) && ref_handle(y) &&
           ref_handle(x)->id == ref_handle(y)->id &&
           mp__mgr_same(ref_handle(x)->m, ref_handle(y)->m);
  }
  return false;
}

bool mp__sval_eq(mp__arena_t *a, const sval_t *s, const mp_val_t *v) {
  /* A reference equals a reference to the same object (v was checked to
   * be of this manager). */
  if (mp__ref_kind(sval_type(s)) || mp__ref_kind(v->type))
    return sval_type(s) == (uint32_t)v->type && ref_handle(v) &&
           ref_handle(v)->id == s->pay && sval_len(s) == 0;
  mp_val_t x;
  mp__sval_view(a, s, &x);
  return mp__mval_eq(&x, v);
}

static uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

uint64_t mp__mval_hash(uint64_t seed, const mp_val_t *v) {
  /* Ints hash to themselves, as in Python: cache-friendly for the common
   * runs of nearby keys; the probe sequence copes with patterns. */
  if (v->type == MP_INT)
    return (uint64_t)v->u.i;
  const unsigned char *p = v->u.p;
  size_t n = v->len;
  uint64_t h = seed ^ ((uint64_t)v->type << 56) ^ (n * 0x9e3779b97f4a7c15ull);
  while (n >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    h = (h ^ mix64(w)) * 0x9e3779b97f4a7c15ull;
    p += 8;
    n -= 8;
  }
  uint64_t w = 0;
  if (n)
    memcpy(&w, p, n);
  h = (h ^ mix64(w ^ n)) * 0x9e3779b97f4a7c15ull;
  return mix64(h);
}

int mp_val_free(mp_val_t *v) {
  if (!v)
    return 0;
  if (v->type == MP_STR || v->type == MP_BYTES || mp__ref_kind(v->type))
    free((void *)v->u.p); /* a reference's handle: mp_*_close is free */
  *v = mp_val_nil();
  return 0;
}

int mp_vals_free(mp_val_t *vals, size_t n) {
  if (!vals)
    return 0;
  for (size_t i = 0; i < n; i++)
    mp_val_free(&vals[i]);
  free(vals);
  return 0;
}

/* ---- repr ------------------------------------------------------------------
 */

void mp__sb_put(sbuf_t *b, const char *s, size_t n) {
  if (b->err)
    return;
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + n + 1)
      cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
      b->err = MP_ENOMEM;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = '\0';
}

void mp__sb_puts(sbuf_t *b, const char *s) {
  mp__sb_put(b, s, strlen(s));
}

int mp__sb_finish(sbuf_t *b, char **out) {
  if (!b->err && !b->p)
    mp__sb_put(b, "", 0);
  if (b->err) {
    free(b->p);
    return b->err;
  }
  *out = b->p;
  return 0;
}

/* Python's float repr: the shortest digits that read back the same, in
 * fixed notation when the exponent is in [-4, 16), else scientific. */
static void sb_double(sbuf_t *b, double d) {
  char tmp[64], out[64];
  if (d != d) {
    mp__sb_puts(b, "nan");
    return;
  }
  if (d == __builtin_inf() || d == -__builtin_inf()) {
    mp__sb_puts(b, d < 0 ? "-inf" : "inf");
    return;
  }
  int prec;
  for (prec = 1; prec <= 17; prec++) {
    snprintf(tmp, sizeof tmp, "%.*e", prec - 1, d);
    if (strtod(tmp, NULL) == d)
      break;
  }
  /* tmp: [-]D[.DDD]e[+-]XX */
  char digits[32];
  size_t nd = 0;
  const char *p = tmp;
  bool neg = *p == '-';
  if (neg)
    p++;
  for (; *p && *p != 'e'; p++)
    if (*p >= '0' && *p <= '9')
      digits[nd++] = *p;
  int exp = atoi(p + 1);
  while (nd > 1 && digits[nd - 1] == '0')
    nd--;
  size_t o = 0;
  if (neg)
    out[o++] = '-';
  if (exp >= -4 && exp < 16) {
    if (exp < 0) {
      out[o++] = '0';
      out[o++] = '.';
      for (int i = -1; i > exp; i--)
        out[o++] = '0';
      for (size_t i = 0; i < nd; i++)
        out[o++] = digits[i];
    } else {
      for (int i = 0; i <= exp; i++)
        out[o++] = (size_t)i < nd ? digits[i] : '0';
      out[o++] = '.';
      if ((size_t)exp + 1 < nd)
        for (size_t i = (size_t)exp + 1; i < nd; i++)
          out[o++] = digits[i];
      else
        out[o++] = '0';
    }
    out[o] = '\0';
  } else {
    out[o++] = digits[0];
    if (nd > 1) {
      out[o++] = '.';
      for (size_t i = 1; i < nd; i++)
        out[o++] = digits[i];
    }
    snprintf(out + o, sizeof out - o, "e%c%02d", exp < 0 ? '-' : '+',
             exp < 0 ? -exp : exp);
  }
  mp__sb_puts(b, out);
}

static void sb_quoted(sbuf_t *b, const char *s, size_t n, bool bytes) {
  bool sq = memchr(s, '\'', n) != NULL, dq = memchr(s, '"', n) != NULL;
  char q = sq && !dq ? '"' : '\'';
  if (bytes)
    mp__sb_put(b, "b", 1);
  mp__sb_put(b, &q, 1);
  size_t run = 0; /* bytes copied as they are, flushed in one go */
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    const char *esc = NULL;
    char hex[8];
    if (c == '\\')
      esc = "\\\\";
    else if (c == (unsigned char)q)
      esc = q == '\'' ? "\\'" : "\\\"";
    else if (c == '\n')
      esc = "\\n";
    else if (c == '\r')
      esc = "\\r";
    else if (c == '\t')
      esc = "\\t";
    else if (c < 0x20 || c == 0x7f || (bytes && c >= 0x80)) {
      snprintf(hex, sizeof hex, "\\x%02x", c);
      esc = hex;
    }
    if (esc) {
      mp__sb_put(b, s + i - run, run);
      run = 0;
      mp__sb_puts(b, esc);
    } else {
      run++;
    }
  }
  mp__sb_put(b, s + n - run, run);
  mp__sb_put(b, &q, 1);
}

/* Python 3.11's repr of a proxy stored in a container, e.g.
 * <ListProxy object, typeid 'list' at 0x7f...>, with the object's id where
 * Python shows the proxy's address. */
static void sb_repr_ref(sbuf_t *b, uint32_t type, uint64_t id) {
  char tmp[96];
  snprintf(tmp, sizeof tmp, "<%s object, typeid '%s' at %#llx>",
           type == MP_DICT   ? "DictProxy"
           : type == MP_LIST ? "ListProxy"
                             : "NamespaceProxy",
           type == MP_DICT   ? "dict"
           : type == MP_LIST ? "list"
                             : "Namespace",
           (unsigned long long)id);
  mp__sb_puts(b, tmp);
}

static void sb_repr_value(sbuf_t *b, const mp_val_t *v) {
  char tmp[32];
  switch (v->type) {
  case MP_DICT:
  case MP_LIST:
  case MP_NAMESPACE: /* a caller's value has a handle, a view the id */
    sb_repr_ref(b, v->type, ref_handle(v) ? ref_handle(v)->id : v->len);
    break;
  case MP_NIL:
    mp__sb_puts(b, "None");
    break;
  case MP_BOOL:
    mp__sb_puts(b, v->u.b ? "True" : "False");
    break;
  case MP_INT:
    snprintf(tmp, sizeof tmp, "%lld", (long long)v->u.i);
    mp__sb_puts(b, tmp);
    break;
  case MP_DOUBLE:
    sb_double(b, v->u.d);
    break;
  case MP_STR:
  case MP_BYTES:
    sb_quoted(b, v->u.s ? v->u.s : "", v->len, v->type == MP_BYTES);
    break;
  }
}

void mp__sb_repr_val(sbuf_t *b, const mp_val_t *v) {
  sb_repr_value(b, v);
}

void mp__sb_repr_sval(sbuf_t *b, mp__arena_t *a, const sval_t *s) {
  mp_val_t v;
  mp__sval_view(a, s, &v);
  sb_repr_value(b, &v);
}

int mp_val_repr(const mp_val_t *v, char **out) {
  int r = mval_check_any(v);
  if (r < 0 || !out)
    return MP_EINVAL;
  sbuf_t b = {0};
  sb_repr_value(&b, v);
  return mp__sb_finish(&b, out);
}

/* ---- manager ----------------------------------------------------------------
 */

/* MP_MANAGER_DEFAULT_RESERVE, or the environment's MP_MANAGER_RESERVE
 * (bytes, with an optional K, M or G suffix): tools that cannot map 64 GiB
 * of address space (valgrind) run with a smaller one. */
static size_t default_reserve(void) {
  const char *e = getenv("MP_MANAGER_RESERVE");
  if (!e || !*e)
    return MP_MANAGER_DEFAULT_RESERVE;
  char *end;
  unsigned long long v = strtoull(e, &end, 10);
  int shift = *end == 'K' ? 10 : *end == 'M' ? 20 : *end == 'G' ? 30 : 0;
  if ((shift && end[1]) || (!shift && *end) || v == 0 ||
      v > (MP__ARENA_MAX_RESERVE >> shift))
    return MP_MANAGER_DEFAULT_RESERVE;
  return (size_t)(v << shift);
}

/* A manager whose objects live in Redis (manager_redis.c). */
static int redis_manager(mp_manager_t **out, const char *name,
                         const mp_manager_opts_t *opts) {
  mp_manager_t *m = calloc(1, sizeof *m);
  if (!m)
    return MP_ENOMEM;
  int r = name ? mp__rmgr_open(m, name, opts) : mp__rmgr_create(m, opts);
  if (r < 0) {
    free(m);
    return r;
  }
  *out = m;
  return 0;
}

int mp_manager_create(mp_manager_t **out, const mp_manager_opts_t *opts) {
  if (!out)
    return MP_EINVAL;
  if (opts && opts->address)
    return redis_manager(out, NULL, opts);
  size_t reserve =
      opts && opts->reserve ? opts->reserve : default_reserve();
  if (reserve < ((size_t)1 << 20) || reserve > MP__ARENA_MAX_RESERVE)
    return MP_EINVAL;
  mp_manager_t *m = calloc(1, sizeof *m);
  if (!m)
    return MP_ENOMEM;
  int r = mp__arena_create(&m->a, opts ? opts->name : NULL, reserve,
                           sizeof(mgr_root_t), true);
  if (r < 0) {
    free(m);
    return r;
  }
  m->root = mgr_ptr(&m->a, mp__arena_root(&m->a));
  uint64_t seed = 0;
  if (getrandom(&seed, sizeof seed, 0) != (ssize_t)sizeof seed)
    seed = mp__now_ns() ^ ((uint64_t)getpid() << 32);
  m->root->hash_seed = seed;
  atomic_thread_fence(memory_order_release);
  m->root->magic = MGR_MAGIC;
  m->creator = getpid();
  *out = m;
  return 0;
}

int mp_manager_open(mp_manager_t **out, const char *name) {
  if (!out || !name)
    return MP_EINVAL;
  mp_manager_t *m = calloc(1, sizeof *m);
  if (!m)
    return MP_ENOMEM;
  int r = mp__arena_open(&m->a, name);
  if (r < 0) {
    free(m);
    return r;
  }
  m->root = mgr_ptr(&m->a, mp__arena_root(&m->a));
  if (!mp__arena_span_ok(&m->a, mp__arena_root(&m->a), sizeof(mgr_root_t)) ||
      m->root->magic != MGR_MAGIC ||
      atomic_load(&m->root->nobj) > MGR_MAX_OBJ) {
    r = m->root->magic == MGR_MAGIC ? MP_EPROTO : MP_EINVAL;
    if (m->a.seg.size < mp__arena_root(&m->a) + sizeof(mgr_root_t))
      r = MP_EPROTO;
    mp__arena_close(&m->a);
    free(m);
    return r;
  }
  *out = m;
  return 0;
}

int mp_manager_open_opts(mp_manager_t **out, const char *name,
                         const mp_manager_opts_t *opts) {
  if (!out || !name)
    return MP_EINVAL;
  if (opts && opts->address)
    return redis_manager(out, name, opts);
  return mp_manager_open(out, name);
}

int mp_manager_name(const mp_manager_t *m, const char **name) {
  if (!m || !name)
    return MP_EINVAL;
  if (m->redis) {
    *name = mp__rmgr_name(m);
    return 0;
  }
  *name = m->a.seg.name;
  return 0;
}

int mp_manager_destroy(mp_manager_t *m) {
  if (!m)
    return MP_EINVAL;
  if (m->redis) {
    mp__rmgr_destroy(m);
    free(m);
    return 0;
  }
  if (m->creator && m->creator == getpid())
    mp__seg_unlink(m->a.seg.name);
  mp__arena_close(&m->a);
  free(m);
  return 0;
}

size_t mp__mgr_obj_size(uint32_t kind) {
  /* Both kinds are a head and a few words: at least the head. */
  (void)kind;
  return sizeof(mgr_obj_t);
}

/* ---- directory
 * ---------------------------------------------------------------- */

int mp__mgr_check_name(const char *name) {
  if (!name)
    return 0;
  size_t n = strlen(name);
  if (n == 0)
    return MP_EINVAL;
  return n >= MGR_NAME_MAX ? MP_ENAMETOOLONG : 0;
}

int mp__mgr_obj_create(mp_manager_t *m, uint32_t kind, size_t size,
                       const char *name, uint64_t *off_out, uint32_t *id_out) {
  int r = mp__mgr_check_name(name);
  if (r < 0)
    return r;
  mp__arena_t *a = &m->a;
  uint64_t off;
  if ((r = mp__arena_alloc(a, size, &off)) < 0)
    return r;
  /* Prepared while unreachable; published below with one store. */
  memset(mgr_ptr(a, off), 0, size);
  mgr_obj_t *o = mgr_ptr(a, off);
  o->kind = kind;
  mgr_root_t *root = m->root;
  mp__mlock_lock(&root->dir_lock);
  uint64_t n = atomic_load_explicit(&root->nobj, memory_order_relaxed);
  if (name) {
    for (uint64_t i = 0; i < n; i++) {
      if (strncmp(root->dir[i].name, name, MGR_NAME_MAX) == 0) {
        r = MP_EEXIST;
        break;
      }
    }
  }
  if (r == 0 && n >= MGR_MAX_OBJ)
    r = MP_ENOMEM;
  if (r == 0) {
    mgr_dirent_t *e = &root->dir[n];
    memset(e, 0, sizeof *e);
    e->off = off;
    e->kind = kind;
    if (name)
      strcpy(e->name, name);
    o->id = (uint32_t)n;
    atomic_store_explicit(&root->nobj, n + 1, memory_order_release);
  }
  mp__mlock_unlock(&root->dir_lock);
  if (r < 0) {
    mp__arena_free(a, off); /* never reachable */
    return r;
  }
  *off_out = off;
  *id_out = (uint32_t)n;
  return 0;
}

int mp__mgr_obj_find(mp_manager_t *m, uint32_t kind, const char *name,
                     bool by_id, uint32_t id, uint64_t *off, uint32_t *out_id) {
  mgr_root_t *root = m->root;
  uint64_t n = atomic_load_explicit(&root->nobj, memory_order_acquire);
  if (n > MGR_MAX_OBJ)
    return MP_EPROTO;
  if (!by_id) {
    int r = mp__mgr_check_name(name);
    if (!name || r < 0)
      return r < 0 ? r : MP_EINVAL;
    for (id = 0; id < n; id++)
      if (strncmp(root->dir[id].name, name, MGR_NAME_MAX) == 0)
        break;
  }
  int r = mp__mgr_obj_at(m, kind, id, off);
  if (r == 0)
    *out_id = id;
  return r;
}

int mp__mgr_obj_at(mp_manager_t *m, uint32_t kind, uint32_t id,
                   uint64_t *off) {
  mgr_root_t *root = m->root;
  uint64_t n = atomic_load_explicit(&root->nobj, memory_order_acquire);
  if (n > MGR_MAX_OBJ)
    return MP_EPROTO;
  if (id >= n)
    return MP_ENOENT;
  if (root->dir[id].kind != kind)
    return MP_EINVAL;
  /* The entry is followed from now on: it must name an object of ours,
   * whose header (written before it was published) says the same. */
  uint64_t o = root->dir[id].off;
  if ((o & 15) || !mp__arena_span_ok(&m->a, o, sizeof(mgr_obj_t)) ||
      o < mp__arena_root(&m->a) + sizeof(mgr_root_t) ||
      !mp__arena_span_ok(&m->a, o, mp__arena_usable(&m->a, o)) ||
      mp__arena_usable(&m->a, o) < mp__mgr_obj_size(kind))
    return MP_EPROTO;
  const mgr_obj_t *obj = mgr_ptr(&m->a, o);
  if (obj->kind != kind || obj->id != id)
    return MP_EPROTO;
  *off = o;
  return 0;
}

int mp__mgr_handle_make(mp_manager_t *m, uint32_t kind, size_t size,
                        const char *name, int how, uint32_t id,
                        mgr_handle_t **out) {
  if (!m || !out)
    return MP_EINVAL;
  if (m->redis)
    return mp__rhandle_make(m, kind, name, how, id, out);
  mgr_handle_t *h = calloc(1, sizeof *h);
  if (!h)
    return MP_ENOMEM;
  uint64_t off = 0;
  int r;
  if (how == MGR_CREATE)
    r = mp__mgr_obj_create(m, kind, size, name, &off, &id);
  else
    r = mp__mgr_obj_find(m, kind, name, how == MGR_BY_ID, id, &off, &id);
  if (r < 0) {
    free(h);
    return r;
  }
  h->m = m;
  h->off = off;
  h->id = id;
  h->kind = kind;
  *out = h;
  return 0;
}
