/* Runs the process and pipe examples and checks what they print. */
#include <sys/wait.h>

#include "runner.h"

static char *run_example(const char *name) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "%s/examples/%s 2>&1", mpt_build_dir(), name);
  int st;
  char *out = mpt_run_cmd(cmd, &st);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
    mpt_fail(__FILE__, __LINE__, "%s failed (status %d): %s", name, st, out);
  return out;
}

static int count(const char *s, const char *needle) {
  int n = 0;
  for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle))
    n++;
  return n;
}

TEST(example_process_basic) {
  char *out = run_example("process_basic");
  int parent = 0, child = 0;
  ASSERT_EQ(sscanf(out, "parent: %d, child: %d", &parent, &child), 2);
  ASSERT(parent > 0 && child > 0 && parent != child);
  free(out);
}

TEST(example_process_two_loops) {
  char *out = run_example("process_two_loops");
  ASSERT_EQ(count(out, "......1......\n"), 3);
  ASSERT_EQ(count(out, "......2......\n"), 3);
  free(out);
}

TEST(example_process_pids) {
  char *out = run_example("process_pids");
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
  char *out = run_example("process_args");
  int lines = count(out, "child running, name= test,age=18 ,pid=");
  /* 1 s at one line per 0.2 s, then terminated: never all 10. */
  ASSERT(lines >= 1 && lines < 10);
  ASSERT_EQ(count(out, "{'m': 20}\n"), lines);
  ASSERT(strstr(out, "exitcode: -15\n"));
  free(out);
}

TEST(example_process_globals) {
  char *out = run_example("process_globals");
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
  char *out = run_example("pipe_demo");
  ASSERT_STR_EQ(out, "1\n2\n3\n");
  free(out);
}

TEST(example_process_run_proc) {
  char *out = run_example("process_run_proc");
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
