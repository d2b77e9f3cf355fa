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

/* Make sure the object covers [0, end). Never shrinks: fallocate of the last
 * byte extends i_size monotonically, whatever other processes do at once. */
static int arena_ensure(mp__arena_t *a, uint64_t end) {
  struct mp__arena_hdr *h = a->hdr;
  uint64_t size = atomic_load_explicit(&h->size, memory_order_acquire);
  if (MP__LIKELY(end <= size))
    return 0;
  uint64_t want = size + size / 2;
  if (want < end)
    want = end;
  want = round_up(want, ARENA_GROW_STEP);
  if (want > h->reserve)
    want = h->reserve;
  if (want < end)
    return MP_ENOMEM;
  if (fallocate(a->seg.fd, 0, (off_t)(want - 1), 1) < 0) {
    if (errno == ENOSPC || errno == ENOMEM || errno == EFBIG)
      return MP_ENOMEM;
    /* No fallocate: ftruncate, only ever upward. Two racing growers can
     * at worst leave it at the smaller target, which the other one then
     * notices below (it re-checks with fstat). */
    struct stat st;
    if (fstat(a->seg.fd, &st) < 0)
      return MP_ENOMEM;
    if ((uint64_t)st.st_size < want && ftruncate(a->seg.fd, (off_t)want) < 0)
      return MP_ENOMEM;
    if (fstat(a->seg.fd, &st) < 0 || (uint64_t)st.st_size < end)
      return MP_ENOMEM;
  }
  while (size < want && !atomic_compare_exchange_weak_explicit(
                            &h->size, &size, want, memory_order_release,
                            memory_order_acquire)) {
  }
  a->seg.size = want;
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
    if (h->magic == ARENA_MAGIC && h->version == ARENA_VERSION &&
        h->reserve >= probe.size && h->reserve <= MP__ARENA_MAX_RESERVE)
      reserve = h->reserve;
  }
  mp__seg_close(&probe);
  if (reserve == 0)
    return MP_EINVAL;
  if ((r = mp__seg_open(&a->seg, name, reserve)) < 0)
    return r;
  a->hdr = (struct mp__arena_hdr *)a->seg.base;
  return 0;
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
    /* o may be popped and reused by someone else meanwhile: the read is
     * still inside the mapping and the object, and the tagged CAS fails. */
    uint64_t next = atomic_load_explicit(
        (_Atomic uint64_t *)mp__arena_ptr(a, o), memory_order_relaxed);
    uint64_t nv = head_pack(next, (hv >> HEAD_OFF_BITS) + 1);
    if (atomic_compare_exchange_weak_explicit(
            head, &hv, nv, memory_order_acquire, memory_order_acquire)) {
      *off = o;
      return 0;
    }
  }
  uint64_t bsize = class_size((unsigned)c);
  uint64_t top = atomic_load_explicit(&h->top, memory_order_relaxed);
  for (;;) {
    if (top + bsize > h->reserve || top + bsize < top)
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
      off >= atomic_load_explicit(&h->top, memory_order_relaxed))
    return; /* never handed out */
  block_hdr_t *b = block_of(a, off);
  if (b->magic != BLOCK_MAGIC || b->cls >= ARENA_NCLASS)
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

size_t mp__arena_usable(const mp__arena_t *a, uint64_t off) {
  if (!a || !a->hdr || off < BLOCK_HDR)
    return 0;
  const block_hdr_t *b = block_of(a, off);
  if (b->magic != BLOCK_MAGIC || b->cls >= ARENA_NCLASS)
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
  return a->hdr->reserve;
}
