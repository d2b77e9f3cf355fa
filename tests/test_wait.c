/* Tests for mp_wait over connections and processes. */
#include <unistd.h>

#include "runner.h"

static int sleeper(const void *arg, size_t len) {
  int ms;
  memcpy(&ms, arg, sizeof ms);
  mpt_sleep_ms(ms);
  return 0;
}

TEST(wait_bad_input) {
  mp_waitable_t w = {.fd = -1};
  ASSERT_ERR(mp_wait(NULL, 1, 0), MP_EINVAL);
  ASSERT_ERR(mp_wait(&w, 1, 0), MP_EINVAL); /* fd < 0 */
  mp_conn_t *a, *b;
  ASSERT_OK(mp_pipe(&a, &b, true));
  w = mp_conn_waitable(a);
  ASSERT_ERR(mp_wait(&w, 1, -2), MP_EINVAL);
  ASSERT_ERR(mp_wait(&w, 1, -1000), MP_EINVAL);
  ASSERT_EQ(mp_wait(NULL, 0, 0), 0); /* nothing to wait for */
  uint64_t t0 = mpt_now_ms();
  ASSERT_EQ(mp_wait(&w, 1, 100), 0);
  ASSERT(mpt_now_ms() - t0 >= 100);
  ASSERT(!w.ready);
  mp_conn_destroy(a);
  mp_conn_destroy(b);
}

TEST(wait_connections_and_processes) {
  enum { NC = 3 };
  mp_conn_t *r[NC], *s[NC];
  int ms = 150, slow = 30000;
  mp_process_t *fast, *hang;
  ASSERT_OK(mp_process_create(&fast, sleeper, &ms, sizeof ms, NULL));
  ASSERT_OK(mp_process_create(&hang, sleeper, &slow, sizeof slow, NULL));
  ASSERT_OK(mp_process_start(fast));
  ASSERT_OK(mp_process_start(hang));
  /* Created after the children started, so they hold no copy of them. */
  for (int i = 0; i < NC; i++)
    ASSERT_OK(mp_pipe(&r[i], &s[i], i != 1));
  mp_waitable_t w[NC + 2];
  for (int i = 0; i < NC; i++)
    w[i] = mp_conn_waitable(r[i]);
  w[NC] = mp_process_waitable(fast);
  w[NC + 1] = mp_process_waitable(hang);
  ASSERT_EQ(mp_wait(w, NC + 2, 0), 0);
  /* The first to be ready is the process that ends. */
  ASSERT_EQ(mp_wait(w, NC + 2, MP_FOREVER), 1);
  ASSERT(w[NC].ready && !w[NC + 1].ready && !w[0].ready);
  ASSERT_OK(mp_process_join(fast, 0));
  /* Reaped: still ready. */
  ASSERT_EQ(mp_wait(&w[NC], 2, 0), 1);
  ASSERT(w[NC].ready && !w[NC + 1].ready);
  /* Messages on two connections. */
  ASSERT_OK(mp_conn_send(s[1], "a", 1));
  ASSERT_OK(mp_conn_send(s[2], "b", 1));
  ASSERT_EQ(mp_wait(w, NC, MP_FOREVER), 2);
  ASSERT(!w[0].ready && w[1].ready && w[2].ready);
  char c;
  size_t len;
  ASSERT_OK(mp_conn_recv_into(r[1], &c, 1, &len));
  ASSERT_OK(mp_conn_recv_into(r[2], &c, 1, &len));
  ASSERT_EQ(mp_wait(w, NC, 0), 0);
  /* A closed peer is ready: recv reports the end. */
  ASSERT_OK(mp_conn_close(s[0]));
  ASSERT_EQ(mp_wait(w, NC, MP_FOREVER), 1);
  ASSERT(w[0].ready);
  ASSERT_ERR(mp_conn_recv_into(r[0], &c, 1, &len), MP_ECLOSED);
  ASSERT_OK(mp_process_kill(hang));
  ASSERT_OK(mp_process_join(hang, MP_FOREVER));
  ASSERT_OK(mp_process_destroy(fast));
  ASSERT_OK(mp_process_destroy(hang));
  for (int i = 0; i < NC; i++) {
    mp_conn_destroy(r[i]);
    mp_conn_destroy(s[i]);
  }
}

/* Many objects: beyond the on-stack poll array. */
TEST(wait_many_objects) {
  enum { N = 50 };
  mp_conn_t *r[N], *s[N];
  mp_waitable_t w[N];
  for (int i = 0; i < N; i++) {
    ASSERT_OK(mp_pipe(&r[i], &s[i], false));
    w[i] = mp_conn_waitable(r[i]);
  }
  ASSERT_OK(mp_conn_send(s[N - 1], "z", 1));
  ASSERT_OK(mp_conn_send(s[7], "z", 1));
  ASSERT_EQ(mp_wait(w, N, 1000), 2);
  for (int i = 0; i < N; i++)
    ASSERT_EQ(w[i].ready, i == 7 || i == N - 1);
  for (int i = 0; i < N; i++) {
    mp_conn_destroy(r[i]);
    mp_conn_destroy(s[i]);
  }
}

static int ready_flag;
static bool custom_check(void *obj) {
  return *(int *)obj != 0;
}

/* The check of an object is asked before sleeping: an object whose fd is
 * quiet but that is ready counts at once. */
TEST(wait_custom_check) {
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  mp_waitable_t w = {.fd = p[0], .check = custom_check, .obj = &ready_flag};
  ASSERT_EQ(mp_wait(&w, 1, 0), 0);
  ready_flag = 1;
  ASSERT_EQ(mp_wait(&w, 1, MP_FOREVER), 1);
  ASSERT(w.ready);
  /* Readable fd but a check that says no: a timeout. */
  ready_flag = 0;
  ASSERT_EQ(write(p[1], "x", 1), 1);
  ASSERT_EQ(mp_wait(&w, 1, 50), 0);
  close(p[0]);
  close(p[1]);
}

/* Everything ready is reported, also when one object was ready before the
 * wait slept. */
TEST(wait_reports_all_ready) {
  mp_conn_t *a, *b, *c, *d;
  ASSERT_OK(mp_pipe(&a, &b, true));
  ASSERT_OK(mp_pipe(&c, &d, true));
  ASSERT_OK(mp_conn_send(b, "1", 1));
  ASSERT_OK(mp_conn_send(b, "2", 1));
  char x;
  size_t len;
  ASSERT_OK(mp_conn_recv_into(a, &x, 1, &len)); /* "2" now buffered in a */
  ASSERT_OK(mp_conn_send(d, "3", 1));
  mp_waitable_t w[2] = {mp_conn_waitable(a), mp_conn_waitable(c)};
  ASSERT_EQ(mp_wait(w, 2, MP_FOREVER), 2);
  ASSERT(w[0].ready && w[1].ready);
  mp_conn_destroy(a);
  mp_conn_destroy(b);
  mp_conn_destroy(c);
  mp_conn_destroy(d);
}
