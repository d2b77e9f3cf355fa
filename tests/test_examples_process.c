/* Runs the process and pipe examples and checks what they print. */
#include "runner.h"

TEST(example_process_basic) {
  char *out = mpt_run_example("process_basic", MPT_STDERR);
  int parent = 0, child = 0;
  ASSERT_EQ(sscanf(out, "parent: %d, child: %d", &parent, &child), 2);
  ASSERT(parent > 0 && child > 0 && parent != child);
  free(out);
}

TEST(example_process_two_loops) {
  char *out = mpt_run_example("process_two_loops", MPT_STDERR);
  ASSERT_EQ(mpt_count(out, "......1......\n"), 3);
  ASSERT_EQ(mpt_count(out, "......2......\n"), 3);
  free(out);
}

TEST(example_process_pids) {
  char *out = mpt_run_example("process_pids", MPT_STDERR);
  int parent = 0, child = 0;
  char *c = strstr(out, "child running, pid=");
  ASSERT(c);
  ASSERT_EQ(sscanf(out, "parent pid: %d", &parent), 1);
  ASSERT_EQ(sscanf(c, "child running, pid=%d", &child), 1);
  ASSERT(parent > 0 && child > 0 && parent != child);
  /* Joined at exit: the child's last line is there. */
  ASSERT(strstr(out, "child about to end...\n"));
  free(out);
}

TEST(example_process_args) {
  char *out = mpt_run_example("process_args", MPT_STDERR);
  int lines = mpt_count(out, "child running, name= test,age=18 ,pid=");
  /* 1 s at one line per 0.2 s, then terminated: never all 10. */
  ASSERT(lines >= 1 && lines < 10);
  ASSERT_EQ(mpt_count(out, "{'m': 20}\n"), lines);
  ASSERT(strstr(out, "exitcode: -15\n"));
  free(out);
}

TEST(example_process_globals) {
  char *out = mpt_run_example("process_globals", MPT_STDERR);
  int pid = 0;
  ASSERT_EQ(sscanf(out, "in process1 pid=%d", &pid), 1);
  char want[512];
  snprintf(want, sizeof want,
           "in process1 pid=%d ,nums=[11, 22]\n"
           "in process1 pid=%d ,nums=[11, 22, 0]\n"
           "in process1 pid=%d ,nums=[11, 22, 0, 1]\n"
           "in process1 pid=%d ,nums=[11, 22, 0, 1, 2]\n"
           "in process2 pid=",
           pid, pid, pid, pid);
  ASSERT(strncmp(out, want, strlen(want)) == 0);
  ASSERT(strstr(out, ",nums=[11, 22]\n") != NULL);
  const char *p2 = strstr(out, "in process2");
  ASSERT(p2 && strcmp(strstr(p2, ",nums="), ",nums=[11, 22]\n") == 0);
  free(out);
}

TEST(example_pipe_demo) {
  char *out = mpt_run_example("pipe_demo", MPT_STDERR);
  ASSERT_STR_EQ(out, "1\n2\n3\n");
  free(out);
}

TEST(example_process_run_proc) {
  char *out = mpt_run_example("process_run_proc", MPT_STDERR);
  int parent = 0, child = 0;
  ASSERT_EQ(sscanf(out,
                   "Parent process %d.\nChild process will start.\n"
                   "Run child process test (%d)...\nChild process end.\n",
                   &parent, &child),
            2);
  ASSERT(parent > 0 && child > 0 && parent != child);
  ASSERT(strstr(out, "Child process end.\n"));
  free(out);
}
