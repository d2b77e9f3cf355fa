/* Runs the subprocess examples and checks their output. */
#include "runner.h"

TEST(example_subprocess_communicate) {
  char *out = mpt_run_example("subprocess_communicate", 0);
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
  char *out = mpt_run_example("subprocess_pipeline", 0);
  ASSERT_STR_EQ(out, "$ printf 'cherry\\napple\\nbanana\\napple\\n' | sort -u\n"
                     "apple\nbanana\ncherry\n"
                     "exit codes: 0 0\n");
  free(out);
}
