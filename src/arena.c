/* Shared arena: see arena.h for the design. */
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arena.h"

#define ARENA_MAGIC 0x6d702d6172656e61ull /* "mp-arena" */
#define ARENA_VERSION 1u
#define ARENA_PAGE 4096u
#define ARENA_HDR_SIZE ARENA_PAGE
#define ARENA_GROW_STEP (1ull << 20)
#define ARENA_NCLASS 160
#define BLOCK_MAGIC 0x6d70626bu /* "mpbk" */
#define BLOCK_HDR 16u
/* Freed blocks this large give their pages back (all but the first). */
#define ARENA_PUNCH_MIN (1ull << 20)

#define HEAD_OFF_BITS 40
#define HEAD_OFF_MASK ((1ull << HEAD_OFF_BITS) - 1)

struct mp__arena_hdr {
  uint64_t magic;
  uint32_t version;
  uint32_t hdr_size;
  uint64_t reserve;
  uint64_t root_off;
  uint64_t root_size;
  _Atomic uint64_t top;  /* next block start */
  _Atomic uint64_t size; /* object size: every offset below is backed */
  _Atomic uint64_t heads[ARENA_NCLASS];
};

typedef struct {
  uint32_t magic;
  uint32_t cls;
  uint64_t unused;
} block_hdr_t;

_Static_assert(sizeof(struct mp__arena_hdr) <= ARENA_HDR_SIZE, "arena hdr");

static uint64_t round_up(uint64_t v, uint64_t to) {
  return (v + to - 1) / to * to;
}

/* Size classes of whole blocks (header included): multiples of 16 up to
 * 256, then four per doubling, so a block wastes at most ~25%. */
static uint64_t class_size(unsigned c) {
  if (c < 16)
    return 16ull * (c + 1);
  unsigned k = 8 + (c - 16) / 4, j = (c - 16) % 4 + 1;
  return (1ull << k) + (uint64_t)j * (1ull << (k - 2));
}

static int class_of(uint64_t n) {
  if (n <= 256)
    return (int)((n + 15) / 16) - 1;
  unsigned k = 63u - (unsigned)__builtin_clzll(n - 1);
  uint64_t step = 1ull << (k - 2);
  unsigned j = (unsigned)((n - (1ull << k) + step - 1) / step);
  unsigned c = 16 + (k - 8) * 4 + (j - 1);
  return c < ARENA_NCLASS ? (int)c : -1;
}

static block_hdr_t *block_of(const mp__arena_t *a, uint64_t off) {
  return (block_hdr_t *)mp__arena_ptr(a, off - BLOCK_HDR);
}

/* Make sure the object covers [0, end), every page of it allocated: a
 * full /dev/shm gives MP_ENOMEM here, never a SIGBUS when a page is first
 * touched. fallocate never shrinks, so concurrent growers cannot undo each
 * other; a range two of them reserve at once is simply reserved twice. */
static int arena_ensure(mp__arena_t *a, uint64_t end) {
  struct mp__arena_hdr *h = a->hdr;
  uint64_t size = atomic_load_explicit(&h->size, memory_order_acquire);
  if (MP__LIKELY(end <= size))
    return 0;
  uint64_t want = size + size / 2;
  if (want < end)
    want = end;
  want = round_up(want, ARENA_GROW_STEP);
  if (want > a->seg.reserve) /* our mapping, not the shared header */
    want = a->seg.reserve;
  if (want < end)
    return MP_ENOMEM;
  if (mp__seg_reserve_range(a->seg.fd, size, want - size) < 0)
    return MP_ENOMEM;
  while (size < want && !atomic_compare_exchange_weak_explicit(
                            &h->size, &size, want, memory_order_release,
                            memory_order_acquire)) {
  }
  __atomic_store_n(&a->seg.size, want, __ATOMIC_RELAXED);
  return 0;
}

static int arena_init_hdr(mp__arena_t *a, size_t reserve, size_t root_size) {
  struct mp__arena_hdr *h = a->hdr;
  h->version = ARENA_VERSION;
  h->hdr_size = ARENA_HDR_SIZE;
  h->reserve = reserve;
  h->root_off = ARENA_HDR_SIZE;
  h->root_size = root_size;
  atomic_store(&h->top, round_up(ARENA_HDR_SIZE + root_size, 64));
  atomic_store(&h->size, a->seg.size);
  for (unsigned c = 0; c < ARENA_NCLASS; c++)
    atomic_store(&h->heads[c], 0);
  atomic_thread_fence(memory_order_release);
  h->magic = ARENA_MAGIC; /* last: an opener sees a complete header */
  return 0;
}

int mp__arena_create(mp__arena_t *a, const char *name, size_t reserve,
                     size_t root_size, bool track) {
  if (!a)
    return MP_EINVAL;
  reserve = round_up(reserve, ARENA_PAGE);
  uint64_t min_end = round_up(ARENA_HDR_SIZE + root_size, ARENA_PAGE);
  if (reserve > MP__ARENA_MAX_RESERVE || root_size > reserve ||
      reserve < min_end + 4 * ARENA_PAGE)
    return MP_EINVAL;
  uint64_t size = round_up(min_end + ARENA_GROW_STEP, ARENA_GROW_STEP);
  if (size > reserve)
    size = reserve;
  int r = mp__seg_create(&a->seg, name, size, reserve, track);
  if (r < 0)
    return r;
  a->hdr = (struct mp__arena_hdr *)a->seg.base;
  return arena_init_hdr(a, reserve, root_size);
}

int mp__arena_validate(const void *base, size_t obj_size, size_t mapped) {
  if (!base || obj_size < ARENA_HDR_SIZE || mapped < obj_size)
    return MP_EPROTO;
  const struct mp__arena_hdr *h = base;
  if (h->magic != ARENA_MAGIC || h->version != ARENA_VERSION)
    return MP_EINVAL; /* not an arena at all */
  /* Free-list heads first, then the bump pointer, then the size: each only
   * moves forward, and a block is on a list only after it was below the
   * bump pointer, which is below the size: read in this order, a live
   * arena that other processes use meanwhile passes. obj_size must be
   * taken after all of them (the object grows before the size says so). */
  uint64_t heads[ARENA_NCLASS];
  for (unsigned c = 0; c < ARENA_NCLASS; c++)
    heads[c] = (atomic_load(&h->heads[c]) & HEAD_OFF_MASK) << 4;
  uint64_t reserve = h->reserve, top = atomic_load(&h->top),
           size = atomic_load(&h->size);
  if (h->hdr_size != ARENA_HDR_SIZE || reserve % ARENA_PAGE ||
      reserve > MP__ARENA_MAX_RESERVE || reserve > mapped ||
      h->root_off != ARENA_HDR_SIZE || h->root_size > reserve ||
      top < ARENA_HDR_SIZE + h->root_size || top % MP__ARENA_ALIGN ||
      top > size || size > obj_size || size > reserve)
    return MP_EPROTO;
  for (unsigned c = 0; c < ARENA_NCLASS; c++) {
    uint64_t o = heads[c];
    if (o && (o < ARENA_HDR_SIZE + h->root_size + BLOCK_HDR || o + 8 > top))
      return MP_EPROTO;
  }
  return 0;
}

int mp__arena_open(mp__arena_t *a, const char *name) {
  mp__seg_t probe;
  if (!a || !name)
    return MP_EINVAL;
  int r = mp__seg_open(&probe, name, 0);
  if (r < 0)
    return r;
  uint64_t reserve = 0;
  if (probe.size >= ARENA_HDR_SIZE) {
    const struct mp__arena_hdr *h = probe.base;
    if (h->magic == ARENA_MAGIC && h->version == ARENA_VERSION)
      reserve = h->reserve;
  }
  mp__seg_close(&probe);
  if (reserve == 0)
    return MP_EINVAL;
  if (reserve > MP__ARENA_MAX_RESERVE || reserve % ARENA_PAGE)
    return MP_EPROTO;
  if ((r = mp__seg_open(&a->seg, name, reserve)) < 0)
    return r == MP_EINVAL ? MP_EPROTO : r; /* object larger than reserve */
  a->hdr = (struct mp__arena_hdr *)a->seg.base;
  /* The header as mapped now, against the object's real size: every
   * offset it holds must lie inside what is backed. A look that raced
   * with another process growing the arena is taken again. */
  for (int tries = 0;; tries++) {
    r = mp__arena_validate(a->seg.base, a->seg.size, a->seg.reserve);
    struct stat st;
    if (r != MP_EPROTO || tries == 3 || fstat(a->seg.fd, &st) < 0 ||
        (uint64_t)st.st_size > a->seg.reserve)
      break;
    a->seg.size = (size_t)st.st_size;
  }
  if (r < 0) {
    mp__arena_close(a);
    return r;
  }
  return 0;
}

/* The end of what may be read: the bump pointer, once it is known to lie
 * inside the object (a peer could publish a top beyond the object's end,
 * and touching a page past the end is a SIGBUS). */
static uint64_t arena_limit(mp__arena_t *a) {
  struct mp__arena_hdr *h = a->hdr;
  uint64_t top = atomic_load_explicit(&h->top, memory_order_acquire);
  /* seg.size is this process's view, shared by its threads (each may
   * refresh it while holding a different object's lock): atomic. */
  size_t size = __atomic_load_n(&a->seg.size, __ATOMIC_RELAXED);
  if (MP__LIKELY(top <= size))
    return top;
  /* Another process grew the object: believe the file, not the header. */
  struct stat st;
  if (fstat(a->seg.fd, &st) == 0 && (uint64_t)st.st_size > size) {
    size = (uint64_t)st.st_size < a->seg.reserve ? (size_t)st.st_size
                                                 : a->seg.reserve;
    __atomic_store_n(&a->seg.size, size, __ATOMIC_RELAXED);
  }
  return top <= size ? top : size;
}

bool mp__arena_span_ok(mp__arena_t *a, uint64_t off, uint64_t len) {
  if (!a || !a->hdr)
    return false;
  uint64_t start = a->hdr->root_off;
  if (off < start || len > UINT64_MAX - off)
    return false;
  return off + len <= arena_limit(a);
}

void mp__arena_close(mp__arena_t *a) {
  if (!a)
    return;
  mp__seg_close(&a->seg);
  a->hdr = NULL;
}

static uint64_t head_pack(uint64_t off, uint64_t tag) {
  return (off >> 4) | (tag << HEAD_OFF_BITS);
}

int mp__arena_alloc(mp__arena_t *a, size_t size, uint64_t *off) {
  if (!a || !a->hdr || !off || size == 0 || size > MP__ARENA_MAX_RESERVE)
    return MP_EINVAL;
  struct mp__arena_hdr *h = a->hdr;
  int c = class_of((uint64_t)size + BLOCK_HDR);
  if (c < 0)
    return MP_ENOMEM;
  _Atomic uint64_t *head = &h->heads[c];
  uint64_t hv = atomic_load_explicit(head, memory_order_acquire);
  while (hv & HEAD_OFF_MASK) {
    uint64_t o = (hv & HEAD_OFF_MASK) << 4;
    if (MP__UNLIKELY(o < h->root_off + h->root_size + BLOCK_HDR ||
                     !mp__arena_span_ok(a, o - BLOCK_HDR, class_size((unsigned)c))))
      return MP_EPROTO; /* a head no allocator wrote */
    /* o may be popped and reused by someone else meanwhile: the read is
     * still inside the mapping and the object, and the tagged CAS fails. */
    uint64_t next = atomic_load_explicit(
        (_Atomic uint64_t *)mp__arena_ptr(a, o), memory_order_relaxed);
    uint64_t nv = head_pack(next, (hv >> HEAD_OFF_BITS) + 1);
    if (atomic_compare_exchange_weak_explicit(
            head, &hv, nv, memory_order_acquire, memory_order_acquire)) {
      /* A large block gave its pages back when freed: allocate them again
       * now, or hand the block back and report the shortage. */
      if (class_size((unsigned)c) >= ARENA_PUNCH_MIN &&
          mp__seg_reserve_range(a->seg.fd, o,
                                class_size((unsigned)c) - BLOCK_HDR) < 0) {
        mp__arena_free(a, o);
        return MP_ENOMEM;
      }
      *off = o;
      return 0;
    }
  }
  uint64_t bsize = class_size((unsigned)c);
  uint64_t top = atomic_load_explicit(&h->top, memory_order_relaxed);
  for (;;) {
    if (top + bsize > a->seg.reserve || top + bsize < top)
      return MP_ENOMEM;
    int r = arena_ensure(a, top + bsize);
    if (r < 0)
      return r;
    if (atomic_compare_exchange_weak_explicit(&h->top, &top, top + bsize,
                                              memory_order_relaxed,
                                              memory_order_relaxed))
      break;
  }
  block_hdr_t *b = (block_hdr_t *)mp__arena_ptr(a, top);
  b->magic = BLOCK_MAGIC;
  b->cls = (uint32_t)c;
  *off = top + BLOCK_HDR;
  return 0;
}

void mp__arena_free(mp__arena_t *a, uint64_t off) {
  if (!a || !a->hdr || off == 0)
    return;
  struct mp__arena_hdr *h = a->hdr;
  if ((off & 15) || off < h->root_off + BLOCK_HDR ||
      !mp__arena_span_ok(a, off - BLOCK_HDR, BLOCK_HDR + 8))
    return; /* never handed out */
  block_hdr_t *b = block_of(a, off);
  if (b->magic != BLOCK_MAGIC || b->cls >= ARENA_NCLASS ||
      !mp__arena_span_ok(a, off - BLOCK_HDR, class_size(b->cls)))
    return; /* not a block of ours: refuse rather than corrupt a list */
  uint64_t bsize = class_size(b->cls);
  if (bsize >= ARENA_PUNCH_MIN) {
    uint64_t s = round_up(off + 8, ARENA_PAGE);
    uint64_t e = (off - BLOCK_HDR + bsize) / ARENA_PAGE * ARENA_PAGE;
    if (e > s)
      fallocate(a->seg.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)s,
                (off_t)(e - s));
  }
  _Atomic uint64_t *head = &h->heads[b->cls];
  _Atomic uint64_t *next = (_Atomic uint64_t *)mp__arena_ptr(a, off);
  uint64_t hv = atomic_load_explicit(head, memory_order_relaxed);
  do {
    atomic_store_explicit(next, (hv & HEAD_OFF_MASK) << 4,
                          memory_order_relaxed);
  } while (!atomic_compare_exchange_weak_explicit(
      head, &hv, head_pack(off, (hv >> HEAD_OFF_BITS) + 1),
      memory_order_release, memory_order_relaxed));
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#define ARENA_PREFAULT_MIN (64u << 10)

void mp__arena_prefault(mp__arena_t *a, uint64_t off, size_t len) {
  if (!a || !a->hdr || len < ARENA_PREFAULT_MIN)
    return;
  uint64_t s = round_up(off, ARENA_PAGE);
  uint64_t e = (off + len) / ARENA_PAGE * ARENA_PAGE;
  if (e > s)
    madvise(mp__arena_ptr(a, s), e - s, MADV_POPULATE_WRITE);
}

size_t mp__arena_usable(mp__arena_t *a, uint64_t off) {
  if (!a || !a->hdr || off < BLOCK_HDR ||
      !mp__arena_span_ok(a, off - BLOCK_HDR, BLOCK_HDR))
    return 0;
  const block_hdr_t *b = block_of(a, off);
  if (b->magic != BLOCK_MAGIC || b->cls >= ARENA_NCLASS ||
      !mp__arena_span_ok(a, off - BLOCK_HDR, class_size(b->cls)))
    return 0;
  return (size_t)(class_size(b->cls) - BLOCK_HDR);
}

uint64_t mp__arena_root(const mp__arena_t *a) {
  return a->hdr->root_off;
}

uint64_t mp__arena_used(const mp__arena_t *a) {
  return atomic_load(&a->hdr->top);
}

uint64_t mp__arena_reserve(const mp__arena_t *a) {
  return a->seg.reserve;
}
