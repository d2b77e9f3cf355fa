/* Runs the seed examples not covered by a part's own example tests. */
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runner.h"

/* Output of `examples/<name> <args>`; the example must exit 0. */
static char *example_output(const char *name, const char *args) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "%s/examples/%s %s 2>&1", mpt_build_dir(), name,
           args);
  int st;
  char *out = mpt_run_cmd(cmd, &st);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
    mpt_fail(__FILE__, __LINE__, "%s failed (status %d): %s", name, st, out);
  return out;
}

static int occurrences(const char *s, const char *needle) {
  int n = 0;
  for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle))
    n++;
  return n;
}

TEST(example_queue_basic) {
  char *out = example_output("queue_basic", "");
  ASSERT_STR_EQ(out, "11111\n");
  free(out);
}

TEST(example_process_workers) {
  char *out = example_output("process_workers", "");
  ASSERT_EQ(occurrences(out, "Worker A is starting.\n"), 1);
  ASSERT_EQ(occurrences(out, "Worker B is starting.\n"), 1);
  /* Both run at once: both start before either exits. */
  char *exit_a = strstr(out, "Worker A is exiting.\n");
  char *exit_b = strstr(out, "Worker B is exiting.\n");
  ASSERT(exit_a && exit_b);
  char *first_exit = exit_a < exit_b ? exit_a : exit_b;
  ASSERT(strstr(out, "Worker A is starting.\n") < first_exit);
  ASSERT(strstr(out, "Worker B is starting.\n") < first_exit);
  free(out);
}

TEST(example_process_two_tasks) {
  char *out = example_output("process_two_tasks", "");
  ASSERT_EQ(occurrences(out, "1111\n"), 3);
  ASSERT_EQ(occurrences(out, "2222\n"), 3);
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
  char *out = example_output("pool_copy_folder", src);
  ASSERT(strstr(out, "100.00...(file"));
  free(out);
  char cmd[512];
  int st;
  snprintf(cmd, sizeof cmd, "diff -r '%s' '%s[copy]' && echo same", src, src);
  out = mpt_run_cmd(cmd, &st);
  ASSERT_STR_EQ(out, "same\n");
  free(out);
  snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s[copy]'", src, src);
  free(mpt_run_cmd(cmd, &st));
  ASSERT_EQ(st, 0);
}
