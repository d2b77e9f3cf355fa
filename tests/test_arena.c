#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "arena.h"
#include "runner.h"

static uint64_t shm_blocks_bytes(const mp__arena_t *a) {
  struct stat st;
  ASSERT(fstat(a->seg.fd, &st) == 0);
  return (uint64_t)st.st_blocks * 512;
}

static uint64_t shm_size(const mp__arena_t *a) {
  struct stat st;
  ASSERT(fstat(a->seg.fd, &st) == 0);
  return (uint64_t)st.st_size;
}

static void arena_destroy(mp__arena_t *a) {
  char name[MP__SEG_NAME_MAX];
  strcpy(name, a->seg.name);
  mp__arena_close(a);
  ASSERT_OK(mp__seg_unlink(name));
  ASSERT(!mpt_shm_exists(name));
}

TEST(arena_alloc_free_reuse) {
  mp__arena_t a;
  ASSERT_OK(mp__arena_create(&a, NULL, (size_t)1 << 30, 1000, true));
  ASSERT(mp__arena_root(&a) > 0);
  /* The root is zeroed. */
  const char *root = mp__arena_ptr(&a, mp__arena_root(&a));
  for (int i = 0; i < 1000; i++)
    ASSERT(root[i] == 0);
  uint64_t offs[200];
  for (int i = 0; i < 200; i++) {
    size_t sz = 1 + (size_t)i * 37;
    ASSERT_OK(mp__arena_alloc(&a, sz, &offs[i]));
    ASSERT(offs[i] % MP__ARENA_ALIGN == 0);
    ASSERT(offs[i] >= mp__arena_root(&a) + 1000);
    ASSERT(mp__arena_usable(&a, offs[i]) >= sz);
    memset(mp__arena_ptr(&a, offs[i]), i & 0xff, sz);
  }
  for (int i = 0; i < 200; i++) {
    const unsigned char *p = mp__arena_ptr(&a, offs[i]);
    for (size_t j = 0; j < 1 + (size_t)i * 37; j++)
      ASSERT(p[j] == (i & 0xff));
  }
  /* A freed block is handed out again for the same size class. */
  uint64_t used = mp__arena_used(&a);
  mp__arena_free(&a, offs[10]);
  uint64_t again;
  ASSERT_OK(mp__arena_alloc(&a, 1 + 10 * 37, &again));
  ASSERT_EQ(again, offs[10]);
  ASSERT_EQ(mp__arena_used(&a), used);
  for (int i = 0; i < 200; i++)
    mp__arena_free(&a, offs[i]);
  mp__arena_free(&a, 0);  /* ignored */
  mp__arena_free(&a, 24); /* not a block: ignored, nothing corrupted */
  mp__arena_free(&a, 7);  /* misaligned: ignored */
  mp__arena_free(&a, mp__arena_used(&a) + 4096); /* past the end */
  ASSERT_OK(mp__arena_alloc(&a, 100, &again));
  ASSERT(again < mp__arena_used(&a));
  ASSERT_ERR(mp__arena_alloc(&a, 0, &again), MP_EINVAL);
  ASSERT_ERR(mp__arena_alloc(&a, 16, NULL), MP_EINVAL);
  ASSERT_ERR(mp__arena_alloc(NULL, 16, &again), MP_EINVAL);
  ASSERT_ERR(mp__arena_alloc(&a, (size_t)1 << 31, &again), MP_ENOMEM);
  ASSERT_EQ(mp__arena_usable(&a, 0), 0);
  arena_destroy(&a);
}

TEST(arena_bad_input) {
  mp__arena_t a;
  ASSERT_ERR(mp__arena_create(NULL, NULL, 1 << 20, 0, true), MP_EINVAL);
  ASSERT_ERR(mp__arena_create(&a, NULL, 4096, 0, true), MP_EINVAL);
  ASSERT_ERR(mp__arena_create(&a, NULL, 1 << 20, 2 << 20, true), MP_EINVAL);
  ASSERT_ERR(mp__arena_create(&a, NULL, (size_t)1 << 50, 0, true), MP_EINVAL);
  ASSERT_ERR(mp__arena_open(&a, "/mp-no-such-arena"), MP_ENOENT);
  ASSERT_ERR(mp__arena_open(&a, NULL), MP_EINVAL);
  ASSERT_ERR(mp__arena_open(NULL, "/x"), MP_EINVAL);
  mp__seg_t seg;
  ASSERT_OK(mp__seg_create(&seg, NULL, 8192, 0, true));
  ASSERT_ERR(mp__arena_open(&a, seg.name), MP_EINVAL);
  mp__seg_close(&seg);
  ASSERT_OK(mp__seg_unlink(seg.name));
  mp__arena_close(NULL);
}

TEST(arena_full_enomem) {
  mp__arena_t a;
  ASSERT_OK(mp__arena_create(&a, NULL, (size_t)1 << 20, 0, true));
  uint64_t off, last = 0, n = 0;
  int r;
  while ((r = mp__arena_alloc(&a, 1000, &off)) == 0) {
    last = off;
    n++;
  }
  ASSERT_ERR(r, MP_ENOMEM);
  ASSERT(n > 900);
  ASSERT(mp__arena_used(&a) <= mp__arena_reserve(&a));
  /* Freeing makes room again. */
  mp__arena_free(&a, last);
  ASSERT_OK(mp__arena_alloc(&a, 1000, &off));
  ASSERT_EQ(off, last);
  arena_destroy(&a);
}

/* Address space is reserved up front, but the object grows only as blocks
 * are handed out, and every page it grows by is allocated at once: on a
 * full /dev/shm the allocation fails instead of a later SIGBUS. */
TEST(arena_growth_backs_every_page) {
  mp__arena_t a;
  ASSERT_OK(mp__arena_create(&a, NULL, (size_t)64 << 30, 4096, true));
  ASSERT(shm_size(&a) <= (4u << 20));
  uint64_t big;
  ASSERT_OK(mp__arena_alloc(&a, (size_t)32 << 20, &big));
  ASSERT(shm_size(&a) >= big + ((size_t)32 << 20));
  ASSERT(shm_size(&a) <= ((size_t)64 << 20));
  ASSERT(shm_blocks_bytes(&a) >= (32u << 20));
  memset(mp__arena_ptr(&a, big), 1, (size_t)32 << 20);
  /* Freed big blocks give their pages back... */
  mp__arena_free(&a, big);
  ASSERT(shm_blocks_bytes(&a) < (8u << 20));
  /* ...and get them again when handed out anew. */
  uint64_t again;
  ASSERT_OK(mp__arena_alloc(&a, (size_t)32 << 20, &again));
  ASSERT_EQ(again, big);
  ASSERT(shm_blocks_bytes(&a) >= (32u << 20));
  arena_destroy(&a);
}

/* Corrupt headers are refused at open; a free-list head pointing outside
 * the arena gives MP_EPROTO, not a wild read. */
TEST(arena_open_validates_header) {
  mp__arena_t a, b;
  ASSERT_OK(mp__arena_create(&a, NULL, (size_t)16 << 20, 64, true));
  uint64_t off;
  ASSERT_OK(mp__arena_alloc(&a, 100, &off));
  ASSERT_OK(mp__arena_validate(a.seg.base, a.seg.size, a.seg.reserve));
  ASSERT_OK(mp__arena_open(&b, a.seg.name));
  mp__arena_close(&b);
  uint64_t *w = a.seg.base; /* magic, version|hdr_size, reserve, root_off,
                               root_size, top, size, heads... */
  uint64_t saved = w[5];
  w[5] = (uint64_t)1 << 40; /* top past the object */
  ASSERT_ERR(mp__arena_open(&b, a.seg.name), MP_EPROTO);
  w[5] = saved;
  saved = w[6];
  w[6] = a.seg.size + 4096; /* claims a page the object lacks */
  ASSERT_ERR(mp__arena_open(&b, a.seg.name), MP_EPROTO);
  w[6] = saved;
  /* A free-list head (class of 100-byte blocks) pointing far away. */
  mp__arena_free(&a, off);
  unsigned cls = 0;
  for (unsigned c = 0; c < 160; c++)
    if (w[7 + c])
      cls = c;
  ASSERT(w[7 + cls] != 0);
  saved = w[7 + cls];
  w[7 + cls] = (uint64_t)1 << 38;
  ASSERT_ERR(mp__arena_open(&b, a.seg.name), MP_EPROTO);
  uint64_t got;
  ASSERT_ERR(mp__arena_alloc(&a, 100, &got), MP_EPROTO);
  w[7 + cls] = saved;
  ASSERT_OK(mp__arena_alloc(&a, 100, &got));
  ASSERT_EQ(got, off);
  /* Offsets from outside are bounded. */
  ASSERT(!mp__arena_span_ok(&a, 8, 8));
  ASSERT(!mp__arena_span_ok(&a, got, (uint64_t)1 << 30));
  ASSERT(!mp__arena_span_ok(&a, UINT64_MAX - 4, 8));
  ASSERT(mp__arena_span_ok(&a, got, 100));
  ASSERT_EQ(mp__arena_usable(&a, (uint64_t)1 << 40), 0);
  arena_destroy(&a);
}

/* Each process allocates blocks, stamps them with its id, checks nobody
 * else wrote into them, frees some; overlap or a corrupted free list shows
 * as a wrong stamp. */
static void churn(mp__arena_t *a, uint32_t id, int rounds, unsigned seed) {
  uint64_t live[64] = {0};
  size_t sizes[64] = {0};
  for (int i = 0; i < rounds; i++) {
    unsigned r = rand_r(&seed);
    int slot = (int)(r % 64);
    if (live[slot]) {
      const uint32_t *p = mp__arena_ptr(a, live[slot]);
      for (size_t j = 0; j < sizes[slot] / 4; j++)
        ASSERT_EQ(p[j], id);
      mp__arena_free(a, live[slot]);
      live[slot] = 0;
    } else {
      sizes[slot] = 4 + (r >> 8) % 3000 / 4 * 4;
      if (mp__arena_alloc(a, sizes[slot], &live[slot]) < 0) {
        live[slot] = 0;
        continue;
      }
      uint32_t *p = mp__arena_ptr(a, live[slot]);
      for (size_t j = 0; j < sizes[slot] / 4; j++)
        p[j] = id;
    }
  }
  for (int s = 0; s < 64; s++)
    mp__arena_free(a, live[s]);
}

TEST(arena_concurrent_processes) {
  mp__arena_t a;
  ASSERT_OK(mp__arena_create(&a, NULL, (size_t)1 << 30, 0, true));
  char name[MP__SEG_NAME_MAX];
  strcpy(name, a.seg.name);
  pid_t pids[4];
  for (int p = 0; p < 4; p++) {
    if ((pids[p] = fork()) == 0) {
      mp__arena_t b;
      /* Half inherit the mapping, half open by name. */
      if (p % 2) {
        ASSERT_OK(mp__arena_open(&b, name));
        churn(&b, (uint32_t)p + 1, 20000, (unsigned)p);
        mp__arena_close(&b);
      } else {
        churn(&a, (uint32_t)p + 1, 20000, (unsigned)p);
      }
      _exit(0);
    }
  }
  for (int p = 0; p < 4; p++) {
    mpt_wait_ok(pids[p]);
  }
  churn(&a, 99, 20000, 99);
  mp__arena_close(&a);
  ASSERT_OK(mp__seg_unlink(name));
}

TEST(arena_sigkill_during_alloc_free) {
  mp__arena_t a;
  ASSERT_OK(mp__arena_create(&a, NULL, (size_t)1 << 30, 0, true));
  unsigned seed = 4242;
  for (int round = 0; round < 100; round++) {
    pid_t pid = fork();
    if (pid == 0) {
      churn(&a, (uint32_t)round + 1000, 1 << 30, (unsigned)round);
      _exit(0);
    }
    mpt_sleep_ms(rand_r(&seed) % 5);
    kill(pid, SIGKILL);
    int st;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
  }
  /* Leaks allowed, corruption not: the free lists still hand out distinct
   * blocks. */
  churn(&a, 7, 50000, 7);
  arena_destroy(&a);
}
