/* Runs the subprocess examples and checks their output. */
#include "runner.h"

static char *run_example(const char *name, int *status) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "%s/examples/%s", mpt_build_dir(), name);
  return mpt_run_cmd(cmd, status);
}

TEST(example_subprocess_communicate) {
  int st = -1;
  char *out = run_example("subprocess_communicate", &st);
  ASSERT_EQ(st, 0);
  ASSERT_STR_EQ(out, "$ echo Hello from a child command\n"
                     "Hello from a child command\n"
                     "Exit code: 0\n"
                     "$ sh  (fed 58 bytes)\n"
                     "stdout: 42\n"
                     "stderr: the answer went to stdout\n"
                     "Exit code: 3\n");
  free(out);
}

TEST(example_subprocess_pipeline) {
  int st = -1;
  char *out = run_example("subprocess_pipeline", &st);
  ASSERT_EQ(st, 0);
  ASSERT_STR_EQ(out, "$ printf 'cherry\\napple\\nbanana\\napple\\n' | sort -u\n"
                     "apple\nbanana\ncherry\n"
                     "exit codes: 0 0\n");
  free(out);
}
