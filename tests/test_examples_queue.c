/* Runs the queue examples and checks what they print. */
#include "runner.h"

TEST(example_queue_downloader) {
  char *out = mpt_run_example("queue_downloader", MPT_STDERR);
  ASSERT_STR_EQ(out, "----Downloader has finished downloading and data has "
                     "been written to the queue----\n[11, 22, 33, 44]\n");
  free(out);
}

TEST(example_queue_full_timeout) {
  uint64_t t0 = mpt_now_ms();
  char *out = mpt_run_example("queue_full_timeout", MPT_STDERR);
  /* The put with a 2 s timeout waited. */
  ASSERT(mpt_now_ms() - t0 >= 2000);
  ASSERT_STR_EQ(out, "False\nTrue\n"
                     "消息队列已满,现有消息数量:3\n"
                     "消息队列已满,现有消息数量:3\n"
                     "消息1\n消息2\n消息3\n");
  free(out);
}

TEST(example_queue_writer_reader) {
  char *out = mpt_run_example("queue_writer_reader", MPT_STDERR);
  ASSERT_STR_EQ(out, "Put A to queue……\nPut B to queue……\nPut C to queue……\n"
                     "Get A from queue.\nGet B from queue.\nGet C from "
                     "queue.\n\n所有数据都写入并且读完\n");
  free(out);
}

TEST(example_queue_write_read) {
  char *out = mpt_run_example("queue_write_read", MPT_STDERR);
  ASSERT(strstr(out, "start to write "));
  ASSERT(strstr(out, "start to read: "));
  ASSERT(mpt_before(out, "put a into queue\n", "put b into queue\n"));
  ASSERT(mpt_before(out, "put b into queue\n", "put c into queue\n"));
  ASSERT(mpt_before(out, "get a from queue\n", "get b from queue\n"));
  ASSERT(mpt_before(out, "get b from queue\n", "get c from queue\n"));
  ASSERT(mpt_before(out, "put a into queue\n", "get a from queue\n"));
  free(out);
}
