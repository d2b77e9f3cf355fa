/* Porting from Python: behaviour a porter relies on across parts (names with
 * or without a leading '/', ...). */
#include <unistd.h>

#include "runner.h"

/* A unique bare name (no leading '/') for this test process. */
static void bare_name(char *buf, size_t cap, const char *what) {
  snprintf(buf, cap, "mpt-port-%s-%ld", what, (long)getpid());
}

/* Every named object takes "x" and "/x" as the same name, as Python's
 * SharedMemory does; the name it reports has the '/'. */
TEST(names_with_or_without_slash) {
  char bare[64], slash[72];

  bare_name(bare, sizeof bare, "q");
  snprintf(slash, sizeof slash, "/%s", bare);
  mp_queue_t *q, *q2;
  ASSERT_OK(mp_queue_create(&q, &(mp_queue_opts_t){.name = bare}));
  ASSERT_STR_EQ(mp_queue_name(q), slash);
  ASSERT_OK(mp_queue_open(&q2, bare));
  ASSERT_OK(mp_queue_put(q2, "x", 1, 0));
  ASSERT_OK(mp_queue_destroy(q2));
  ASSERT_OK(mp_queue_open(&q2, slash));
  ASSERT_OK(mp_queue_destroy(q2));
  mp_queue_t *q3;
  ASSERT_ERR(mp_queue_create(&q3, &(mp_queue_opts_t){.name = slash}), MP_EEXIST);
  ASSERT_OK(mp_queue_destroy(q));

  bare_name(bare, sizeof bare, "m");
  snprintf(slash, sizeof slash, "/%s", bare);
  mp_manager_t *m, *m2;
  const char *mname;
  ASSERT_OK(mp_manager_create(&m, &(mp_manager_opts_t){.name = bare}));
  ASSERT_OK(mp_manager_name(m, &mname));
  ASSERT_STR_EQ(mname, slash);
  ASSERT_OK(mp_manager_open(&m2, bare));
  ASSERT_OK(mp_manager_destroy(m2));
  ASSERT_OK(mp_manager_open(&m2, slash));
  ASSERT_OK(mp_manager_destroy(m2));
  ASSERT_OK(mp_manager_destroy(m));

  bare_name(bare, sizeof bare, "l");
  snprintf(slash, sizeof slash, "/%s", bare);
  mp_lock_t *l, *l2;
  ASSERT_OK(mp_lock_create(&l, &(mp_sync_opts_t){.name = bare}));
  ASSERT_OK(mp_lock_open(&l2, slash));
  ASSERT_OK(mp_lock_destroy(l2));
  ASSERT_OK(mp_lock_destroy(l));

  bare_name(bare, sizeof bare, "s");
  snprintf(slash, sizeof slash, "/%s", bare);
  mp_shm_t *s, *s2;
  ASSERT_OK(mp_shm_create(&s, 4096, &(mp_shm_opts_t){.name = slash}));
  ASSERT_STR_EQ(mp_shm_name(s), slash);
  ASSERT_OK(mp_shm_open(&s2, bare));
  ASSERT_OK(mp_shm_close(s2));
  ASSERT_OK(mp_shm_destroy(s));

  /* Still rejected: empty, "/" alone, a '/' inside. */
  ASSERT_ERR(mp_queue_open(&q2, ""), MP_EINVAL);
  ASSERT_ERR(mp_queue_open(&q2, "/"), MP_EINVAL);
  ASSERT_ERR(mp_queue_open(&q2, "a/b"), MP_EINVAL);
  ASSERT_ERR(mp_manager_open(&m2, "/a/b"), MP_EINVAL);
  ASSERT_ERR(mp_manager_open(&m2, ""), MP_EINVAL);
}

/* The seeds' folder copier checks its source before it creates
 * "<folder>[copy]": a typo leaves nothing behind. */
TEST(copy_folder_missing_source_creates_nothing) {
  char dir[] = "/tmp/mpt-port-XXXXXX";
  ASSERT(mkdtemp(dir));
  char cmd[512], copy[128];
  snprintf(cmd, sizeof cmd, "%s/examples/pool_copy_folder '%s/missing' 2>&1",
           mpt_build_dir(), dir);
  int st;
  char *out = mpt_run_cmd(cmd, &st);
  ASSERT(st != 0);
  ASSERT(strstr(out, "missing"));
  free(out);
  snprintf(copy, sizeof copy, "%s/missing[copy]", dir);
  ASSERT(access(copy, F_OK) != 0);
  ASSERT_OK(rmdir(dir));
}

/* The imap loop of docs/python-to-c.md: failed items are not results, and
 * the loop ends. 2 * (0 + ... + 999) minus the multiples of 100. */
TEST(imap_idiom_example) {
  char *out = mpt_run_example("pool_imap", 0);
  int64_t want = 0;
  for (int64_t x = 0; x < 1000; x++)
    if (x % 100)
      want += 2 * x;
  char line[128];
  snprintf(line, sizeof line, "results: 990, failed items: 10, total: %lld\n",
           (long long)want);
  ASSERT_STR_EQ(out, line);
  free(out);
}

static int64_t input_next;
/* Lazy input that fails at its 8th item (index 7). */
static int failing_input(void *item, void *user) {
  if (input_next == 7)
    return MP_EIO;
  *(int64_t *)item = input_next++;
  return 1;
}

static int identity(const void *item, void *result, void *ctx) {
  *(int64_t *)result = *(const int64_t *)item;
  return 0;
}

/* An input that fails at item 7: the 7 items read before it are all
 * returned, then the input's error, then the end (Python loses the failing
 * chunk's neighbours instead). */
TEST(imap_input_error_returns_items_before_it) {
  mp_pool_t *pool;
  ASSERT_OK(mp_pool_create(&pool, &(mp_pool_opts_t){.workers = 2,
                                                    .backend = MP_POOL_THREADS}));
  mp_imap_t *it;
  input_next = 0;
  ASSERT_OK(mp_pool_imap(pool, identity, NULL, 0, sizeof(int64_t),
                         sizeof(int64_t),
                         &(mp_imap_opts_t){.chunksize = 2, .input = failing_input},
                         &it));
  int64_t y;
  size_t idx;
  for (int64_t i = 0; i < 7; i++) {
    ASSERT_OK(mp_imap_next(it, &y, &idx, MP_FOREVER));
    ASSERT_EQ(y, i);
    ASSERT_EQ(idx, (size_t)i);
  }
  ASSERT_ERR(mp_imap_next(it, &y, &idx, MP_FOREVER), MP_EIO);
  ASSERT_ERR(mp_imap_next(it, &y, &idx, MP_FOREVER), MP_ECLOSED);
  ASSERT_OK(mp_imap_destroy(it));
  ASSERT_OK(mp_pool_destroy(pool));
}

/* Python raises for Pool(processes=-1) and for a negative maxtasksperchild;
 * a -1 stored in the unsigned field must not turn into "4294967295 tasks". */
TEST(pool_rejects_nonsense_sizes) {
  mp_pool_t *pool;
  ASSERT_ERR(mp_pool_create(&pool, &(mp_pool_opts_t){.workers = -1}), MP_EINVAL);
  ASSERT_ERR(mp_pool_create(&pool, &(mp_pool_opts_t){.workers = 4097}), MP_EINVAL);
  int minus_one = -1;
  ASSERT_ERR(mp_pool_create(&pool, &(mp_pool_opts_t){
                                       .workers = 1,
                                       .maxtasksperchild = (unsigned)minus_one}),
             MP_EINVAL);
  /* 0 means the default (zeroed options): CPUs usable, no task limit. */
  ASSERT_OK(mp_pool_create(&pool, &(mp_pool_opts_t){.workers = 0,
                                                    .backend = MP_POOL_THREADS}));
  ASSERT_EQ(mp_pool_size(pool), mp_cpu_count());
  ASSERT_OK(mp_pool_destroy(pool));
}
