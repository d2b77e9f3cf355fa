/* Runs the sync/shm/thread examples and checks their output. */
#include "runner.h"

TEST(example_lock_print) {
  char *out = mpt_run_example("lock_print", 0);
  int seen[10] = {0}, lines = 0;
  for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
    int i = -1;
    ASSERT_EQ(sscanf(line, "hello world %d", &i), 1);
    ASSERT(i >= 0 && i < 10);
    seen[i]++;
    lines++;
  }
  ASSERT_EQ(lines, 10);
  for (int i = 0; i < 10; i++)
    ASSERT_EQ(seen[i], 1);
  free(out);
}

TEST(example_thread_balance) {
  char *out = mpt_run_example("thread_balance", 0);
  ASSERT_STR_EQ(out, "0\n");
  free(out);
}

TEST(example_process_balance) {
  char *out = mpt_run_example("process_balance", 0);
  ASSERT_STR_EQ(out, "0\n");
  free(out);
}

TEST(example_thread_local) {
  char *out = mpt_run_example("thread_local", 0);
  ASSERT_STR_EQ(out, "ghkghkfgh kdkgk\ndfgdfg fghfgh\n");
  free(out);
}

TEST(example_shared_counter) {
  char *out = mpt_run_example("shared_counter", 0);
  ASSERT_STR_EQ(out, "counter = 4000\n");
  free(out);
}

TEST(example_thread_loop) {
  char *out = mpt_run_example("thread_loop", 0);
  ASSERT(strncmp(out,
                 "thread MainThread is running\n"
                 "thread jghdfjfg is running\n"
                 "kfhgk jghdfjfg >> 1\n",
                 strlen("thread MainThread is running\n"
                        "thread jghdfjfg is running\n"
                        "kfhgk jghdfjfg >> 1\n")) == 0);
  ASSERT(strstr(out, "kfhgk jghdfjfg >> 5\n"));
  ASSERT(strstr(out, "to run tihis process the computer have spent 0.0"));
  ASSERT(strstr(out, "the process is ending\nthread MainThread is ending\n"));
  free(out);
}
