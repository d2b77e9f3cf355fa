/* Runs the pool examples and checks what they print. Workers run in any
 * order, so lines are checked by presence and count, order only where the
 * example guarantees it. */
#include "runner.h"

static bool starts_with(const char *out, const char *prefix) {
  return strncmp(out, prefix, strlen(prefix)) == 0;
}

static bool ends_with(const char *out, const char *suffix) {
  size_t n = strlen(out), k = strlen(suffix);
  return n >= k && strcmp(out + n - k, suffix) == 0;
}

TEST(example_pool_basic) {
  char *out = mpt_run_example("pool_basic", MPT_STDERR);
  char line[128];
  int pids[16], npids = 0;
  for (int i = 0; i < 10; i++) {
    snprintf(line, sizeof line,
             "\n%d Start execution, The process number is:", i);
    char *withnl = malloc(strlen(out) + 2);
    withnl[0] = '\n';
    strcpy(withnl + 1, out);
    const char *at = strstr(withnl, line);
    ASSERT(at);
    int pid = atoi(at + strlen(line));
    bool seen = false;
    for (int k = 0; k < npids; k++)
      seen |= pids[k] == pid;
    if (!seen)
      pids[npids++] = pid;
    /* The duration is not checked: a loaded machine may stretch it. */
    snprintf(line, sizeof line, "\n%d It takes time to execute", i);
    ASSERT(strstr(withnl, line));
    free(withnl);
  }
  /* Pool(3): at most three processes ran the ten tasks. */
  ASSERT(npids >= 1 && npids <= 3);
  ASSERT_EQ(mpt_count(out, "\n"), 20);
  free(out);
}

TEST(example_pool_callback) {
  char *out = mpt_run_example("pool_callback", MPT_STDERR);
  ASSERT(starts_with(out, "end\n"));
  ASSERT_EQ(mpt_count(out, "in process "), 10);
  char line[64];
  for (int i = 100; i < 110; i++) {
    snprintf(line, sizeof line, "==>exec done: %d\n", i);
    ASSERT_EQ(mpt_count(out, line), 1);
  }
  free(out);
}

TEST(example_pool_workers_sleep) {
  char *out = mpt_run_example("pool_workers_sleep", MPT_STDERR);
  ASSERT(ends_with(out, "……end……\n"));
  char a[64], b[64];
  for (int i = 0; i < 10; i++) {
    snprintf(a, sizeof a, "%d 开始执行,进程号为", i);
    /* The duration printed is not checked: a loaded machine may take
     * longer than the 0.2 s the task sleeps. */
    snprintf(b, sizeof b, "%d 执行完毕,耗时", i);
    ASSERT(mpt_before(out, a, b));
  }
  ASSERT_EQ(mpt_count(out, "开始执行"), 10);
  ASSERT_EQ(mpt_count(out, "执行完毕"), 10);
  ASSERT_EQ(mpt_count(out, "……start……\n"), 1);
  free(out);
}

TEST(example_pool_queue) {
  char *out = mpt_run_example("pool_queue", MPT_STDERR);
  ASSERT(strstr(out, ") start\n"));
  ASSERT(mpt_before(out, "writer启动(", "reader启动("));
  ASSERT(strstr(out, "reader从Queue获取到消息:i\nreader从Queue获取到消息:t\n"
                     "reader从Queue获取到消息:c\nreader从Queue获取到消息:a\n"
                     "reader从Queue获取到消息:s\nreader从Queue获取到消息:t\n"));
  ASSERT(ends_with(out, ") End\n"));
  free(out);
}

TEST(example_pool_map) {
  char *out = mpt_run_example("pool_map", MPT_STDERR);
  ASSERT(mpt_before(out, "Worker A is starting.\n", "Worker A is exiting.\n"));
  ASSERT(mpt_before(out, "Worker B is starting.\n", "Worker B is exiting.\n"));
  ASSERT_EQ(mpt_count(out, "\n"), 4);
  free(out);
}

TEST(example_pool_sum_squares) {
  char *out = mpt_run_example("pool_sum_squares", MPT_STDERR);
  ASSERT_STR_EQ(out, "Total square sum: 385\n");
  free(out);
}

TEST(example_pool_files) {
  char *out = mpt_run_example("pool_files", MPT_STDERR);
  const char *names[] = {"a", "b", "c"};
  char line[128];
  for (int i = 0; i < 3; i++) {
    snprintf(line, sizeof line, "Downloaded %s.txt from /tmp/pool_files.",
             names[i]);
    ASSERT(strstr(out, line));
    snprintf(line, sizeof line, "Processed %s.txt\n", names[i]);
    ASSERT(strstr(out, line));
  }
  ASSERT(strstr(out, "processed_a.txt: FILE A.TXT, NUMBER 0\n"
                     "processed_b.txt: FILE B.TXT, NUMBER 1\n"
                     "processed_c.txt: FILE C.TXT, NUMBER 2\n"));
  free(out);
}

TEST(example_pool_async) {
  char *out = mpt_run_example("pool_async", MPT_STDERR);
  ASSERT(starts_with(out, "Parent process "));
  char line[64];
  for (int i = 0; i < 5; i++) {
    snprintf(line, sizeof line, "awaited task %d: %d\n", i, i * i);
    ASSERT_EQ(mpt_count(out, line), 1);
    snprintf(line, sizeof line, "run task %d,(", i);
    ASSERT_EQ(mpt_count(out, line), 1);
  }
  ASSERT(ends_with(out, "all process end\n"));
  free(out);
}
