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
