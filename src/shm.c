/* Shared memory: raw blocks, typed values/arrays, named segments. */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "mproc/shm.h"
#include "sync_internal.h"

/* ---- raw blocks ------------------------------------------------------------
 * A header just before the block records the mapping's length for free. */

#define RAW_MAGIC 0x6d707261u /* "mpra" */
#define RAW_HDR 64

typedef struct {
  uint32_t magic;
  uint32_t pad;
  uint64_t map_len;
} raw_hdr_t;

int mp_raw_alloc(void **p, size_t size) {
  if (!p || size == 0 || size > SIZE_MAX - RAW_HDR)
    return MP_EINVAL;
  size_t len = size + RAW_HDR;
  void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                 -1, 0);
  if (m == MAP_FAILED)
    return errno ? -errno : MP_ENOMEM;
  raw_hdr_t *h = m;
  h->magic = RAW_MAGIC;
  h->map_len = len;
  *p = (char *)m + RAW_HDR;
  return 0;
}

static raw_hdr_t *raw_hdr(void *p) {
  /* A raw block starts RAW_HDR bytes into a page. */
  if (((uintptr_t)p & 4095u) != RAW_HDR)
    return NULL;
  raw_hdr_t *h = (raw_hdr_t *)(void *)((char *)p - RAW_HDR);
  return h->magic == RAW_MAGIC ? h : NULL;
}

int mp_raw_free(void *p) {
  if (!p)
    return 0;
  raw_hdr_t *h = raw_hdr(p);
  if (!h)
    return MP_EINVAL;
  munmap(h, h->map_len);
  return 0;
}

/* ---- values and arrays -----------------------------------------------------
 */

#define ARRAY_MAGIC 0x6d706172u /* "mpar" */
#define ARRAY_DATA 64

struct mp_array {
  uint32_t magic;
  uint32_t type;
  uint32_t elem;
  uint32_t locked;
  uint64_t len;
  mp_rlock_t lock;
  /* data at ARRAY_DATA */
};

_Static_assert(sizeof(struct mp_array) <= ARRAY_DATA, "array header");

static const uint8_t type_size[] = {1, 1, 2, 2, 4, 4, 8, 8, 4, 8};

/* A named array is a segment of its own: this header, then the array (its
 * mp_array_t pointer is base + NAMED_HDR, so it is told apart from a raw
 * block's, at page offset RAW_HDR). */
#define NAMED_MAGIC 0x6d70616eu /* "mpan" */
#define NAMED_HDR 128
#define ARRAY_NAMED 2u /* flag in mp_array.locked */

typedef struct {
  uint32_t magic;
  int32_t creator;       /* with creator_base: the creating handle, which */
  uint64_t creator_base; /* removes the name at destroy */
  uint64_t map_len;
  char name[MP__SEG_NAME_MAX];
} named_arr_t;

_Static_assert(sizeof(named_arr_t) <= NAMED_HDR, "named array header");

static named_arr_t *named_of(const mp_array_t *a) {
  return (named_arr_t *)(void *)((char *)a - NAMED_HDR);
}

static int array_named_create(void **p, const char *name, size_t size) {
  mp__seg_t seg;
  int r = mp__seg_create(&seg, name, NAMED_HDR + size, 0, true);
  if (r < 0)
    return r;
  named_arr_t *h = seg.base;
  h->magic = NAMED_MAGIC;
  h->creator = (int32_t)getpid();
  h->creator_base = (uint64_t)(uintptr_t)seg.base;
  h->map_len = seg.size;
  memcpy(h->name, seg.name, sizeof h->name);
  mp__close(seg.fd); /* the mapping stays */
  *p = (char *)seg.base + NAMED_HDR;
  return 0;
}

int mp_array_create(mp_array_t **a, mp_type_t type, size_t len,
                    const void *init, const mp_array_opts_t *opts) {
  if (!a || (unsigned)type > MP_TYPE_F64 || len == 0)
    return MP_EINVAL;
  size_t elem = type_size[type];
  if (len > (SIZE_MAX - ARRAY_DATA - NAMED_HDR) / elem)
    return MP_EINVAL;
  void *p = NULL;
  const char *name = opts ? opts->name : NULL;
  int r = name ? array_named_create(&p, name, ARRAY_DATA + len * elem)
               : mp_raw_alloc(&p, ARRAY_DATA + len * elem);
  if (r < 0)
    return r;
  mp_array_t *arr = p;
  arr->type = type;
  arr->elem = (uint32_t)elem;
  arr->locked = !(opts && opts->raw);
  if (name)
    arr->locked |= ARRAY_NAMED;
  arr->len = len;
  mp_rlock_init(&arr->lock);
  if (init)
    memcpy((char *)p + ARRAY_DATA, init, len * elem);
  /* Last: an opener takes the array as complete once it sees the magic. */
  __atomic_store_n(&arr->magic, ARRAY_MAGIC, __ATOMIC_RELEASE);
  *a = arr;
  return 0;
}

int mp_array_open(mp_array_t **a, const char *name) {
  mp__seg_t seg;
  if (!a || !name)
    return MP_EINVAL;
  int r = mp__seg_open(&seg, name, 0);
  if (r < 0)
    return r;
  mp__close(seg.fd);
  /* Everything here was written by another process: check it all. */
  const named_arr_t *h = seg.base;
  mp_array_t *arr = (mp_array_t *)(void *)((char *)seg.base + NAMED_HDR);
  size_t room = seg.size > NAMED_HDR + ARRAY_DATA
                    ? seg.size - NAMED_HDR - ARRAY_DATA
                    : 0;
  if (room == 0 || h->magic != NAMED_MAGIC || h->map_len != seg.size ||
      __atomic_load_n(&arr->magic, __ATOMIC_ACQUIRE) != ARRAY_MAGIC ||
      arr->type > MP_TYPE_F64 || arr->elem != type_size[arr->type] ||
      !(arr->locked & ARRAY_NAMED) || arr->len == 0 ||
      arr->len > room / arr->elem) {
    munmap(seg.base, seg.reserve);
    return MP_EINVAL;
  }
  *a = arr;
  return 0;
}

const char *mp_array_name(const mp_array_t *a) {
  if (!a || a->magic != ARRAY_MAGIC || !(a->locked & ARRAY_NAMED))
    return NULL;
  return named_of(a)->name;
}

int mp_value_open(mp_value_t **v, const char *name) {
  mp_array_t *a;
  if (!v)
    return MP_EINVAL;
  int r = mp_array_open(&a, name);
  if (r < 0)
    return r;
  if (a->len != 1) {
    mp_array_destroy(a);
    return MP_EINVAL;
  }
  *v = a;
  return 0;
}

const char *mp_value_name(const mp_value_t *v) {
  return mp_array_name(v);
}

static bool array_ok(const mp_array_t *a) {
  return a && a->magic == ARRAY_MAGIC;
}

int mp_array_destroy(mp_array_t *a) {
  if (!a)
    return 0;
  if (!array_ok(a))
    return MP_EINVAL;
  if (!(a->locked & ARRAY_NAMED))
    return mp_raw_free(a);
  named_arr_t *h = named_of(a);
  char name[MP__SEG_NAME_MAX];
  /* Only the creating handle: not a forked child's copy of it, nor a
   * handle the creating process opened again. */
  bool creator = h->creator == (int32_t)getpid() &&
                 h->creator_base == (uint64_t)(uintptr_t)h;
  memcpy(name, h->name, sizeof name);
  name[sizeof name - 1] = '\0';
  munmap(h, (size_t)h->map_len);
  if (creator)
    mp__seg_unlink(name);
  return 0;
}

void *mp_array_data(mp_array_t *a) {
  return array_ok(a) ? (char *)a + ARRAY_DATA : NULL;
}

size_t mp_array_len(const mp_array_t *a) {
  return array_ok(a) ? (size_t)a->len : 0;
}

int mp_array_get_lock(mp_array_t *a, mp_rlock_t **lock) {
  if (!array_ok(a) || !lock)
    return MP_EINVAL;
  if (!(a->locked & 1u))
    return MP_ENOTSUP;
  *lock = &a->lock;
  return 0;
}

typedef union {
  int64_t i;
  double f;
} num_t;

static void elem_load(const mp_array_t *a, const void *p, num_t *n, bool f) {
  double d = 0;
  int64_t i = 0;
  switch ((mp_type_t)a->type) {
  case MP_TYPE_I8:
    i = *(const int8_t *)p;
    d = (double)i;
    break;
  case MP_TYPE_U8:
    i = *(const uint8_t *)p;
    d = (double)i;
    break;
  case MP_TYPE_I16:
    i = *(const int16_t *)p;
    d = (double)i;
    break;
  case MP_TYPE_U16:
    i = *(const uint16_t *)p;
    d = (double)i;
    break;
  case MP_TYPE_I32:
    i = *(const int32_t *)p;
    d = (double)i;
    break;
  case MP_TYPE_U32:
    i = *(const uint32_t *)p;
    d = (double)i;
    break;
  case MP_TYPE_I64:
    i = *(const int64_t *)p;
    d = (double)i;
    break;
  case MP_TYPE_U64:
    i = (int64_t) * (const uint64_t *)p;
    d = (double)*(const uint64_t *)p;
    break;
  case MP_TYPE_F32:
    d = *(const float *)p;
    i = (int64_t)d;
    break;
  case MP_TYPE_F64:
    d = *(const double *)p;
    i = (int64_t)d;
    break;
  }
  if (f)
    n->f = d;
  else
    n->i = i;
}

static void elem_store(const mp_array_t *a, void *p, num_t n, bool f) {
  int64_t i = f ? (int64_t)n.f : n.i;
  double d = f ? n.f : (double)n.i;
  switch ((mp_type_t)a->type) {
  case MP_TYPE_I8:
    *(int8_t *)p = (int8_t)i;
    break;
  case MP_TYPE_U8:
    *(uint8_t *)p = (uint8_t)i;
    break;
  case MP_TYPE_I16:
    *(int16_t *)p = (int16_t)i;
    break;
  case MP_TYPE_U16:
    *(uint16_t *)p = (uint16_t)i;
    break;
  case MP_TYPE_I32:
    *(int32_t *)p = (int32_t)i;
    break;
  case MP_TYPE_U32:
    *(uint32_t *)p = (uint32_t)i;
    break;
  case MP_TYPE_I64:
    *(int64_t *)p = i;
    break;
  case MP_TYPE_U64:
    *(uint64_t *)p = (uint64_t)i;
    break;
  case MP_TYPE_F32:
    *(float *)p = (float)d;
    break;
  case MP_TYPE_F64:
    *(double *)p = d;
    break;
  }
}

static int array_access(mp_array_t *a, size_t i, num_t *n, bool f, bool store) {
  if (!array_ok(a) || !n)
    return MP_EINVAL;
  if (i >= a->len)
    return MP_ERANGE;
  int r = 0;
  bool locked = a->locked & 1u;
  if (locked && (r = mp_rlock_acquire(&a->lock, MP_FOREVER)) < 0 &&
      r != MP_EOWNERDEAD)
    return r;
  void *p = (char *)a + ARRAY_DATA + i * a->elem;
  if (store)
    elem_store(a, p, *n, f);
  else
    elem_load(a, p, n, f);
  if (locked)
    mp_rlock_release(&a->lock);
  return r;
}

int mp_array_get_i64(mp_array_t *a, size_t i, int64_t *out) {
  num_t n;
  int r = out ? array_access(a, i, &n, false, false) : MP_EINVAL;
  if (r == 0 || r == MP_EOWNERDEAD)
    *out = n.i;
  return r;
}

int mp_array_set_i64(mp_array_t *a, size_t i, int64_t v) {
  num_t n = {.i = v};
  return array_access(a, i, &n, false, true);
}

int mp_array_get_f64(mp_array_t *a, size_t i, double *out) {
  num_t n;
  int r = out ? array_access(a, i, &n, true, false) : MP_EINVAL;
  if (r == 0 || r == MP_EOWNERDEAD)
    *out = n.f;
  return r;
}

int mp_array_set_f64(mp_array_t *a, size_t i, double v) {
  num_t n = {.f = v};
  return array_access(a, i, &n, true, true);
}

int mp_value_create(mp_value_t **v, mp_type_t type, const void *init,
                    const mp_value_opts_t *opts) {
  return mp_array_create(v, type, 1, init, opts);
}

int mp_value_destroy(mp_value_t *v) {
  return mp_array_destroy(v);
}
void *mp_value_ptr(mp_value_t *v) {
  return mp_array_data(v);
}
int mp_value_get_lock(mp_value_t *v, mp_rlock_t **lock) {
  return mp_array_get_lock(v, lock);
}
int mp_value_get_i64(mp_value_t *v, int64_t *out) {
  return mp_array_get_i64(v, 0, out);
}
int mp_value_set_i64(mp_value_t *v, int64_t x) {
  return mp_array_set_i64(v, 0, x);
}
int mp_value_get_f64(mp_value_t *v, double *out) {
  return mp_array_get_f64(v, 0, out);
}
int mp_value_set_f64(mp_value_t *v, double x) {
  return mp_array_set_f64(v, 0, x);
}

/* ---- named segments --------------------------------------------------------
 */

struct mp_shm {
  mp__seg_t seg;
  pid_t creator; /* 0 when opened */
  bool keep;
};

int mp_shm_create(mp_shm_t **s, size_t size, const mp_shm_opts_t *opts) {
  int r;
  if (!s || size == 0)
    return MP_EINVAL;
  mp_shm_t *h = calloc(1, sizeof *h);
  if (!h)
    return MP_ENOMEM;
  h->keep = opts && opts->keep;
  if ((r = mp__sync_seg_create(&h->seg, opts ? opts->name : NULL, size,
                               h->keep)) < 0) {
    free(h);
    return r;
  }
  h->creator = getpid();
  *s = h;
  return 0;
}

int mp_shm_open(mp_shm_t **s, const char *name) {
  char canon[MP__SEG_NAME_MAX];
  int r;
  if (!s)
    return MP_EINVAL;
  if ((r = mp__sync_canon_name(canon, sizeof canon, name)) < 0)
    return r;
  mp_shm_t *h = calloc(1, sizeof *h);
  if (!h)
    return MP_ENOMEM;
  if ((r = mp__seg_open(&h->seg, canon, 0)) < 0) {
    free(h);
    return r;
  }
  *s = h;
  return 0;
}

void *mp_shm_buf(const mp_shm_t *s) {
  return s ? s->seg.base : NULL;
}
size_t mp_shm_size(const mp_shm_t *s) {
  return s ? s->seg.size : 0;
}
const char *mp_shm_name(const mp_shm_t *s) {
  return s ? s->seg.name : NULL;
}

int mp_shm_close(mp_shm_t *s) {
  if (!s)
    return 0;
  mp__seg_close(&s->seg);
  free(s);
  return 0;
}

int mp_shm_unlink(mp_shm_t *s) {
  return s ? mp__seg_unlink(s->seg.name) : MP_EINVAL;
}

int mp_shm_destroy(mp_shm_t *s) {
  if (!s)
    return 0;
  if (s->creator == getpid() && !s->keep)
    mp__seg_unlink(s->seg.name);
  return mp_shm_close(s);
}
