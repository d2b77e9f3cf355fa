/* Listener / Client (Python's multiprocessing.connection) across processes,
 * over Unix and TCP sockets, with and without the authkey challenge. */
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runner.h"

static const char KEY[] = "secret key";

/* Child: connect, send "ping", expect "pong"; exit 0 on success, else 10 +
 * the step that failed; with want_err, exit 0 iff connect fails with it. */
static void client_child(const char *addr, const char *key, int want_err) {
  mp_conn_t *c;
  mp_client_opts_t o = {.authkey = key, .authkey_len = key ? strlen(key) : 0};
  int r = mp_client_connect(&c, addr, &o);
  if (want_err)
    _exit(r == want_err ? 0 : 20);
  if (r < 0)
    _exit(11);
  char buf[16];
  size_t n;
  if (mp_conn_send(c, "ping", 4) < 0)
    _exit(12);
  if (mp_conn_recv_into(c, buf, sizeof buf, &n) < 0 || n != 4 ||
      memcmp(buf, "pong", 4) != 0)
    _exit(13);
  mp_conn_destroy(c);
  _exit(0);
}

static void serve_one(mp_listener_t *l) {
  mp_conn_t *c;
  char buf[16];
  size_t n;
  ASSERT_OK(mp_listener_accept(l, &c, MP_FOREVER));
  ASSERT_OK(mp_conn_recv_into(c, buf, sizeof buf, &n));
  ASSERT_EQ(n, 4u);
  ASSERT(memcmp(buf, "ping", 4) == 0);
  ASSERT_OK(mp_conn_send(c, "pong", 4));
  ASSERT_OK(mp_conn_destroy(c));
}

static void round_trip(const char *spec, const char *key) {
  mp_listener_t *l;
  mp_listener_opts_t lo = {.authkey = key, .authkey_len = key ? strlen(key) : 0};
  ASSERT_OK(mp_listener_create(&l, spec, &lo));
  char addr[200];
  snprintf(addr, sizeof addr, "%s", mp_listener_address(l));
  pid_t pid = fork();
  ASSERT(pid >= 0);
  if (pid == 0)
    client_child(addr, key, 0);
  serve_one(l);
  mpt_wait_ok(pid);
  ASSERT_OK(mp_listener_close(l));
}

TEST(connection_unix_authkey_across_processes) {
  char path[96];
  snprintf(path, sizeof path, "/tmp/mpt-conn-%ld.sock", (long)getpid());
  round_trip(path, KEY);
  /* The socket file was 0600 and is gone after close. */
  ASSERT(access(path, F_OK) != 0);
}

TEST(connection_tcp_authkey_across_processes) {
  mp_listener_t *l;
  ASSERT_OK(mp_listener_create(&l, "127.0.0.1:0", NULL));
  ASSERT(strncmp(mp_listener_address(l), "127.0.0.1:", 10) == 0);
  ASSERT(strcmp(mp_listener_address(l), "127.0.0.1:0") != 0);
  ASSERT_OK(mp_listener_close(l));
  round_trip("tcp:127.0.0.1:0", KEY);
  round_trip("127.0.0.1:0", NULL);
}

TEST(connection_abstract_unix_no_key) {
  char name[64];
  snprintf(name, sizeof name, "@mpt-conn-%ld", (long)getpid());
  round_trip(name, NULL);
}

/* A wrong key fails on both sides with MP_EACCES; the listener keeps
 * serving the next, right client. */
TEST(connection_wrong_authkey_refused) {
  mp_listener_t *l;
  mp_listener_opts_t lo = {.authkey = KEY, .authkey_len = strlen(KEY)};
  ASSERT_OK(mp_listener_create(&l, "127.0.0.1:0", &lo));
  char addr[200];
  snprintf(addr, sizeof addr, "%s", mp_listener_address(l));
  pid_t pid = fork();
  ASSERT(pid >= 0);
  if (pid == 0)
    client_child(addr, "wrong key", MP_EACCES);
  mp_conn_t *c;
  ASSERT_ERR(mp_listener_accept(l, &c, MP_FOREVER), MP_EACCES);
  mpt_wait_ok(pid);
  pid = fork();
  ASSERT(pid >= 0);
  if (pid == 0)
    client_child(addr, KEY, 0);
  serve_one(l);
  mpt_wait_ok(pid);
  ASSERT_OK(mp_listener_close(l));
}

TEST(connection_errors) {
  mp_listener_t *l;
  mp_conn_t *c;
  char path[96];
  snprintf(path, sizeof path, "/tmp/mpt-conn-e-%ld.sock", (long)getpid());
  ASSERT_ERR(mp_listener_create(NULL, path, NULL), MP_EINVAL);
  ASSERT_ERR(mp_listener_create(&l, NULL, NULL), MP_EINVAL);
  ASSERT_ERR(mp_listener_create(&l, "", NULL), MP_EINVAL);
  ASSERT_ERR(mp_listener_create(&l, "localhost", NULL), MP_EINVAL);
  ASSERT_ERR(mp_listener_create(&l, "localhost:http", NULL), MP_EINVAL);
  ASSERT_ERR(mp_listener_create(&l, "127.0.0.1:0",
                                &(mp_listener_opts_t){.authkey_len = 3}),
             MP_EINVAL);
  char longp[200];
  memset(longp, 'a', sizeof longp - 1);
  longp[0] = '/';
  longp[sizeof longp - 1] = '\0';
  ASSERT_ERR(mp_listener_create(&l, longp, NULL), MP_ENAMETOOLONG);

  ASSERT_OK(mp_listener_create(&l, path, NULL));
  struct stat st;
  ASSERT_OK(stat(path, &st));
  ASSERT_EQ(st.st_mode & 0777, 0600u);
  mp_listener_t *l2;
  ASSERT_ERR(mp_listener_create(&l2, path, NULL), MP_EADDRINUSE);
  ASSERT_ERR(mp_listener_accept(l, &c, 0), MP_ETIMEDOUT);
  ASSERT_ERR(mp_listener_accept(l, &c, -2), MP_EINVAL);
  ASSERT_ERR(mp_listener_accept(NULL, &c, 0), MP_EINVAL);
  ASSERT_ERR(mp_listener_accept(l, NULL, 0), MP_EINVAL);
  ASSERT(mp_listener_fileno(l) >= 0);
  ASSERT_OK(mp_listener_close(l));
  ASSERT_ERR(mp_listener_close(NULL), MP_EINVAL);
  ASSERT_ERR(mp_listener_fileno(NULL), MP_EINVAL);
  ASSERT(mp_listener_address(NULL) == NULL);

  /* Nobody listening. */
  ASSERT_ERR(mp_client_connect(&c, path, NULL), MP_ENOENT);
  ASSERT_OK(mp_listener_create(&l, "127.0.0.1:0", NULL));
  char addr[200];
  snprintf(addr, sizeof addr, "%s", mp_listener_address(l));
  ASSERT_OK(mp_listener_close(l));
  ASSERT_ERR(mp_client_connect(&c, addr, NULL), MP_ECONNREFUSED);
  ASSERT_ERR(mp_client_connect(NULL, addr, NULL), MP_EINVAL);
  ASSERT_ERR(mp_client_connect(&c, NULL, NULL), MP_EINVAL);
  ASSERT_ERR(mp_client_connect(&c, addr, &(mp_client_opts_t){.timeout_ms = -5}),
             MP_EINVAL);
}

/* A peer that connects and says nothing cannot hold accept beyond the
 * listener's auth_timeout_ms. */
TEST(connection_silent_peer_times_out) {
  mp_listener_t *l;
  mp_listener_opts_t lo = {.authkey = KEY, .authkey_len = strlen(KEY),
                           .auth_timeout_ms = 200};
  ASSERT_OK(mp_listener_create(&l, "127.0.0.1:0", &lo));
  char addr[200];
  snprintf(addr, sizeof addr, "%s", mp_listener_address(l));
  mp_conn_t *silent;
  /* No key on this side: it connects and never answers the challenge. */
  ASSERT_OK(mp_client_connect(&silent, addr, NULL));
  mp_conn_t *c;
  uint64_t t0 = mpt_now_ms();
  ASSERT_ERR(mp_listener_accept(l, &c, MP_FOREVER), MP_ETIMEDOUT);
  ASSERT(mpt_now_ms() - t0 >= 190);
  ASSERT_OK(mp_conn_destroy(silent));
  ASSERT_OK(mp_listener_close(l));
}
