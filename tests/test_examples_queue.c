/* Runs the queue examples and checks what they print. */
#include <sys/wait.h>

#include "runner.h"

static char *run_queue_example(const char *name) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "%s/examples/%s 2>&1", mpt_build_dir(), name);
  int st;
  char *out = mpt_run_cmd(cmd, &st);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
    mpt_fail(__FILE__, __LINE__, "%s failed (status %d): %s", name, st, out);
  return out;
}

/* `first` appears in out, and before `second`. */
static bool before(const char *out, const char *first, const char *second) {
  const char *a = strstr(out, first), *b = strstr(out, second);
  return a && b && a < b;
}

TEST(example_queue_downloader) {
  char *out = run_queue_example("queue_downloader");
  ASSERT_STR_EQ(out, "----Downloader has finished downloading and data has "
                     "been written to the queue----\n[11, 22, 33, 44]\n");
  free(out);
}

TEST(example_queue_full_timeout) {
  uint64_t t0 = mpt_now_ms();
  char *out = run_queue_example("queue_full_timeout");
  /* The put with a 2 s timeout waited. */
  ASSERT(mpt_now_ms() - t0 >= 2000);
  ASSERT_STR_EQ(out, "False\nTrue\n"
                     "消息队列已满,现有消息数量:3\n"
                     "消息队列已满,现有消息数量:3\n"
                     "消息1\n消息2\n消息3\n");
  free(out);
}

TEST(example_queue_writer_reader) {
  char *out = run_queue_example("queue_writer_reader");
  ASSERT_STR_EQ(out, "Put A to queue……\nPut B to queue……\nPut C to queue……\n"
                     "Get A from queue.\nGet B from queue.\nGet C from "
                     "queue.\n\n所有数据都写入并且读完\n");
  free(out);
}

TEST(example_queue_write_read) {
  char *out = run_queue_example("queue_write_read");
  ASSERT(strstr(out, "start to write "));
  ASSERT(strstr(out, "start to read: "));
  ASSERT(before(out, "put a into queue\n", "put b into queue\n"));
  ASSERT(before(out, "put b into queue\n", "put c into queue\n"));
  ASSERT(before(out, "get a from queue\n", "get b from queue\n"));
  ASSERT(before(out, "get b from queue\n", "get c from queue\n"));
  ASSERT(before(out, "put a into queue\n", "get a from queue\n"));
  free(out);
}
