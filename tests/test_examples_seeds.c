/* Runs the seed examples not covered by a part's own example tests. */
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runner.h"

TEST(example_queue_basic) {
  char *out = mpt_run_example("queue_basic", MPT_STDERR);
  ASSERT_STR_EQ(out, "11111\n");
  free(out);
}

TEST(example_process_workers) {
  char *out = mpt_run_example("process_workers", MPT_STDERR);
  ASSERT_EQ(mpt_count(out, "Worker A is starting.\n"), 1);
  ASSERT_EQ(mpt_count(out, "Worker B is starting.\n"), 1);
  /* Both run at once: both start before either exits. */
  char *exit_a = strstr(out, "Worker A is exiting.\n");
  char *exit_b = strstr(out, "Worker B is exiting.\n");
  ASSERT(exit_a && exit_b);
  const char *first_exit =
      exit_a < exit_b ? "Worker A is exiting.\n" : "Worker B is exiting.\n";
  ASSERT(mpt_before(out, "Worker A is starting.\n", first_exit));
  ASSERT(mpt_before(out, "Worker B is starting.\n", first_exit));
  free(out);
}

TEST(example_process_two_tasks) {
  char *out = mpt_run_example("process_two_tasks", MPT_STDERR);
  ASSERT_EQ(mpt_count(out, "1111\n"), 3);
  ASSERT_EQ(mpt_count(out, "2222\n"), 3);
  free(out);
}

TEST(example_pool_copy_folder) {
  char src[] = "/tmp/mpt-copy-folder-XXXXXX";
  ASSERT(mkdtemp(src));
  for (int i = 0; i < 30; i++) {
    char path[128];
    snprintf(path, sizeof path, "%s/file%02d", src, i);
    FILE *f = fopen(path, "w");
    ASSERT(f);
    for (int j = 0; j < i * 1000; j++)
      fputc('a' + (i + j) % 26, f);
    fclose(f);
  }
  char cmd[512];
  snprintf(cmd, sizeof cmd, "pool_copy_folder '%s'", src);
  char *out = mpt_run_example(cmd, MPT_STDERR);
  ASSERT(strstr(out, "100.00...(file"));
  free(out);
  int st;
  snprintf(cmd, sizeof cmd, "diff -r '%s' '%s[copy]' && echo same", src, src);
  out = mpt_run_cmd(cmd, &st);
  ASSERT_STR_EQ(out, "same\n");
  free(out);
  snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s[copy]'", src, src);
  free(mpt_run_cmd(cmd, &st));
  ASSERT_EQ(st, 0);
}
