/* The manager on Redis: the dict and list tests of test_manager.c run again
 * on a Redis manager (RERUN lines), then what is Redis' own: addresses and
 * authentication, keys, fork, TCP from an exec'd process, a server killed
 * and restarted. The queue, lock and event are in test_redis_objs.c. */
#define MPT_MANAGER_REDIS 1
#include "redis_server.h"

#include "test_manager.c"

#include <hiredis/hiredis.h>

#define RERUN(name)
RERUN(dict_basic)
RERUN(dict_update_add_cas)
RERUN(dict_errors)
RERUN(list_basic)
RERUN(list_errors)
RERUN(fork_children_share)
RERUN(concurrent_processes_and_threads)
RERUN(crash_random_sigkill_with_waiters)
RERUN(crash_acknowledged_writes_kept)

/* ---- helpers ------------------------------------------------------------- */

static mp_manager_t *redis_manager_at(const char *addr, const char *name,
                                      unsigned flags) {
  mp_manager_t *m;
  mp_manager_opts_t o = {.address = addr, .name = name, .flags = flags};
  ASSERT_OK(mp_manager_create(&m, &o));
  return m;
}

/* Keys matching pattern in the server at the unix socket (raw hiredis). */
static long count_keys(const char *sock, const char *pattern) {
  redisContext *c = redisConnectUnix(sock);
  ASSERT(c && !c->err);
  redisReply *rp = redisCommand(c, "KEYS %s", pattern);
  ASSERT(rp && rp->type == REDIS_REPLY_ARRAY);
  long n = (long)rp->elements;
  freeReplyObject(rp);
  redisFree(c);
  return n;
}

/* Run a raw command on the server (for setting up odd states). */
static void raw_command(const char *sock, const char *fmt, const char *a,
                        const char *b) {
  redisContext *c = redisConnectUnix(sock);
  ASSERT(c && !c->err);
  redisReply *rp = redisCommand(c, fmt, a, b);
  ASSERT(rp && rp->type != REDIS_REPLY_ERROR);
  freeReplyObject(rp);
  redisFree(c);
}

/* ---- same API, Redis specifics -------------------------------------------
 */

TEST(redis_repr_and_types_roundtrip) {
  mp_manager_t *m = new_manager(0);
  mp_dict_t *d;
  mp_list_t *l;
  ASSERT_OK(mp_dict_create(&d, m, NULL));
  ASSERT_OK(mp_list_create(&l, m, NULL));
  mp_val_t vals[] = {mp_val_nil(),
                     mp_val_bool(true),
                     mp_val_bool(false),
                     mp_val_int(0),
                     mp_val_int(-1),
                     mp_val_int(INT64_MIN),
                     mp_val_int(INT64_MAX),
                     mp_val_double(0.1),
                     mp_val_double(-0.0),
                     mp_val_double(1e16),
                     mp_val_str(""),
                     mp_val_str("it's"),
                     mp_val_strn("a\0b", 3),
                     mp_val_bytes("\x00\xff", 2),
                     mp_val_bytes("", 0)};
  size_t nv = sizeof vals / sizeof vals[0];
  ASSERT_OK(mp_list_extend(l, vals, nv));
  ASSERT_LIST(l, "[None, True, False, 0, -1, -9223372036854775808, "
                 "9223372036854775807, 0.1, -0.0, 1e+16, '', \"it's\", "
                 "'a\\x00b', b'\\x00\\xff', b'']");
  for (size_t i = 0; i < nv; i++) {
    mp_val_t out;
    ASSERT_OK(mp_list_get(l, (int64_t)i, &out));
    ASSERT(mp__mval_eq(&out, &vals[i]));
    mp_val_free(&out);
  }
  /* Keys of the three kinds; 1, '1' and b'1' are different keys. */
  mp_val_t k1 = mp_val_int(1), ks = mp_val_str("1"), kb = mp_val_bytes("1", 1);
  ASSERT_OK(mp_dict_set(d, &k1, &vals[0]));
  ASSERT_OK(mp_dict_set(d, &ks, &vals[7]));
  ASSERT_OK(mp_dict_set(d, &kb, &vals[13]));
  ASSERT_DICT(d, "{1: None, '1': 0.1, b'1': b'\\x00\\xff'}");
  /* Insertion order survives many keys (beyond Redis' small encodings). */
  for (int i = 0; i < 300; i++)
    dict_put_int(d, 1000 - i);
  mp_val_t *keys;
  size_t n;
  ASSERT_OK(mp_dict_keys(d, &keys, &n));
  ASSERT_EQ(n, 303);
  for (int i = 0; i < 300; i++)
    ASSERT_EQ(keys[3 + i].u.i, 1000 - i);
  mp_vals_free(keys, n);
  ASSERT_OK(mp_dict_close(d));
  ASSERT_OK(mp_list_close(l));
  ASSERT_OK(mp_manager_destroy(m));
}

TEST(redis_list_insert_pop_middle) {
  mp_manager_t *m = new_manager(0);
  mp_list_t *l;
  ASSERT_OK(mp_list_create(&l, m, NULL));
  for (int i = 0; i < 5; i++) {
    mp_val_t v = mp_val_int(i);
    ASSERT_OK(mp_list_append(l, &v));
  }
  mp_val_t x = mp_val_str("x"), out;
  ASSERT_OK(mp_list_insert(l, 2, &x));
  ASSERT_OK(mp_list_insert(l, -100, &x));
  ASSERT_OK(mp_list_insert(l, INT64_MAX, &x));
  ASSERT_LIST(l, "['x', 0, 1, 'x', 2, 3, 4, 'x']");
  ASSERT_OK(mp_list_pop(l, 3, &out));
  ASSERT_STR_EQ(out.u.s, "x");
  mp_val_free(&out);
  ASSERT_OK(mp_list_pop(l, -3, &out));
  ASSERT_EQ(out.u.i, 3);
  ASSERT_ERR(mp_list_pop(l, INT64_MIN, &out), MP_ERANGE);
  ASSERT_ERR(mp_list_get(l, 6, &out), MP_ERANGE);
  ASSERT_ERR(mp_list_set(l, -7, &x), MP_ERANGE);
  ASSERT_LIST(l, "['x', 0, 1, 2, 4, 'x']");
  ASSERT_OK(mp_list_close(l));
  ASSERT_OK(mp_manager_destroy(m));
}

TEST(redis_untrusted_values_rejected) {
  /* Bytes another client wrote under our keys are checked, not trusted. */
  mp_manager_t *m = new_manager(0);
  mp_dict_t *d;
  mp_list_t *l;
  ASSERT_OK(mp_dict_create(&d, m, NULL));
  ASSERT_OK(mp_list_create(&l, m, NULL));
  const char *name;
  ASSERT_OK(mp_manager_name(m, &name));
  char key[256];
  snprintf(key, sizeof key, "mproc:%s:o:1", name + 1);
  const char *bad[] = {"",   "d123",  "n1",   "TT", "x", "007",
                       "-0", "99999999999999999999", "1a", "-"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    raw_command(mpt_redis.sock, "RPUSH %s %s", key, bad[i]);
    mp_val_t out;
    ASSERT_ERR(mp_list_get(l, -1, &out), MP_EIO);
    ASSERT_OK(mp_list_pop(l, -1, NULL));
  }
  snprintf(key, sizeof key, "mproc:%s:o:0", name + 1);
  raw_command(mpt_redis.sock, "HSET %s 5 %s", key, "d12");
  mp_val_t k = mp_val_int(5), out;
  ASSERT_ERR(mp_dict_get(d, &k, &out), MP_EIO);
  ASSERT_OK(mp_dict_close(d));
  ASSERT_OK(mp_list_close(l));
  ASSERT_OK(mp_manager_destroy(m));
}

TEST(redis_names_keys_and_destroy) {
  mp_manager_t *m = redis_manager_at(mpt_redis.addr, "/mpt-keys", 0);
  const char *name;
  ASSERT_OK(mp_manager_name(m, &name));
  ASSERT_STR_EQ(name, "/mpt-keys");
  mp_manager_t *dup;
  mp_manager_opts_t o = {.address = mpt_redis.addr, .name = "/mpt-keys"};
  ASSERT_ERR(mp_manager_create(&dup, &o), MP_EEXIST);
  mp_dict_t *d;
  mp_dict_opts_t dopt = {.name = "results"};
  ASSERT_OK(mp_dict_create(&d, m, &dopt));
  dict_put_int(d, 7);
  ASSERT(count_keys(mpt_redis.sock, "mproc:mpt-keys:*") > 0);
  /* Opened by name from another handle (as another process would). */
  mp_manager_t *m2;
  mp_dict_t *d2;
  ASSERT_OK(mp_manager_open_opts(&m2, "/mpt-keys", &o));
  ASSERT_OK(mp_dict_open(&d2, m2, "results"));
  ASSERT_EQ(get_int(d2, mp_val_int(7)), 21);
  ASSERT_OK(mp_dict_close(d2));
  ASSERT_OK(mp_manager_destroy(m2)); /* not the creator: keys stay */
  ASSERT(count_keys(mpt_redis.sock, "mproc:mpt-keys:*") > 0);
  ASSERT_OK(mp_dict_close(d));
  ASSERT_OK(mp_manager_destroy(m));
  ASSERT_EQ(count_keys(mpt_redis.sock, "mproc:mpt-keys:*"), 0);
  ASSERT_ERR(mp_manager_open_opts(&m2, "/mpt-keys", &o), MP_ENOENT);
  /* MP_MANAGER_KEEP: the keys outlive the creator's destroy. */
  m = redis_manager_at(mpt_redis.addr, "/mpt-kept", MP_MANAGER_KEEP);
  ASSERT_OK(mp_dict_create(&d, m, &dopt));
  dict_put_int(d, 8);
  ASSERT_OK(mp_dict_close(d));
  ASSERT_OK(mp_manager_destroy(m));
  o.name = "/mpt-kept";
  ASSERT_OK(mp_manager_open_opts(&m2, "/mpt-kept", &o));
  ASSERT_OK(mp_dict_open(&d2, m2, "results"));
  ASSERT_EQ(get_int(d2, mp_val_int(8)), 24);
  ASSERT_OK(mp_dict_close(d2));
  ASSERT_OK(mp_manager_destroy(m2));
  raw_command(mpt_redis.sock, "DEL %s %s", "mproc:mpt-kept:meta",
              "mproc:mpt-kept:o:0");
  /* A key that is not a manager's. */
  raw_command(mpt_redis.sock, "SET %s %s", "mproc:mpt-other:meta", "zz");
  ASSERT_ERR(mp_manager_open_opts(&m2, "/mpt-other", &o), MP_EINVAL);
}

TEST(redis_bad_addresses_and_auth) {
  mp_manager_t *m;
  mp_manager_opts_t o = {0};
  const char *bad[] = {"",
                       "http://x",
                       "redis://",
                       "redis://:6379",
                       "redis://host:0",
                       "redis://host:70000",
                       "redis://host:12x",
                       "redis://host/abc",
                       "redis://pass@host",
                       "unix://",
                       "unix://relative.sock",
                       "unix:///tmp/x.sock?db=x",
                       "unix:///tmp/x.sock?foo=1"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    o.address = bad[i];
    ASSERT_ERR(mp_manager_create(&m, &o), MP_EINVAL);
  }
  o.address = mpt_redis.addr;
  o.name = "no-slash";
  ASSERT_ERR(mp_manager_create(&m, &o), MP_EINVAL);
  o.name = "/a*b";
  ASSERT_ERR(mp_manager_create(&m, &o), MP_EINVAL);
  o.name = NULL;
  o.command_timeout_ms = -1;
  ASSERT_ERR(mp_manager_create(&m, &o), MP_EINVAL);
  o.command_timeout_ms = 0;
  ASSERT_ERR(mp_manager_open_opts(&m, NULL, &o), MP_EINVAL);
  ASSERT_ERR(mp_manager_open_opts(&m, "/mpt-nope", &o), MP_ENOENT);
  /* Nobody there. */
  char addr[300];
  snprintf(addr, sizeof addr, "unix://%s/none.sock", mpt_redis.dir);
  o.address = addr;
  ASSERT_ERR(mp_manager_create(&m, &o), MP_ENOENT);
  int port = mpt__free_port();
  snprintf(addr, sizeof addr, "redis://127.0.0.1:%d", port);
  ASSERT_ERR(mp_manager_create(&m, &o), MP_ECONNREFUSED);
  /* A database number the server does not have. */
  snprintf(addr, sizeof addr, "%s?db=999", mpt_redis.addr);
  ASSERT_ERR(mp_manager_create(&m, &o), MP_EINVAL);
  snprintf(addr, sizeof addr, "%s?db=3", mpt_redis.addr);
  ASSERT_OK(mp_manager_create(&m, &o));
  ASSERT_OK(mp_manager_destroy(m));
  /* A server with a password (requirepass: the "default" user). */
  mpt_redis_t s = {0};
  ASSERT_OK(mpt_redis_start(&s, 1, "s3cret%@"));
  snprintf(addr, sizeof addr, "redis://127.0.0.1:%d", s.port);
  ASSERT_ERR(mp_manager_create(&m, &o), MP_EACCES); /* none given */
  snprintf(addr, sizeof addr, "redis://:wrong@127.0.0.1:%d", s.port);
  ASSERT_ERR(mp_manager_create(&m, &o), MP_EACCES);
  snprintf(addr, sizeof addr, "redis://nobody:s3cret%%25%%40@127.0.0.1:%d",
           s.port);
  ASSERT_ERR(mp_manager_create(&m, &o), MP_EACCES); /* no such user */
  snprintf(addr, sizeof addr, "redis://default:s3cret%%25%%40@127.0.0.1:%d",
           s.port);
  ASSERT_OK(mp_manager_create(&m, &o));
  ASSERT_OK(mp_manager_destroy(m));
  snprintf(addr, sizeof addr, "redis://:s3cret%%25%%40@127.0.0.1:%d/2",
           s.port);
  ASSERT_OK(mp_manager_create(&m, &o));
  mp_dict_t *d;
  ASSERT_OK(mp_dict_create(&d, m, NULL));
  dict_put_int(d, 1);
  ASSERT_OK(mp_dict_close(d));
  ASSERT_OK(mp_manager_destroy(m));
  mpt_redis_stop(&s);
}

TEST(redis_fork_after_connecting) {
  /* The parent's connection is live when it forks; parent and children go
   * on at once: each child must talk on a socket of its own (a shared one
   * would mix replies up). */
  mp_manager_t *m;
  mp_dict_t *d;
  mp_list_t *l;
  make_pair(&m, &d, &l, 0);
  dict_put_int(d, -1);
  pid_t pids[3];
  for (int c = 0; c < 3; c++) {
    if ((pids[c] = fork()) == 0) {
      for (int i = 0; i < 2000; i++) {
        dict_put_int(d, (c + 1) * 100000 + i);
        ASSERT_EQ(get_int(d, mp_val_int((c + 1) * 100000 + i)),
                  ((c + 1) * 100000 + i) * 3);
      }
      _exit(0);
    }
  }
  for (int i = 0; i < 2000; i++) {
    mp_val_t v = mp_val_int(i);
    ASSERT_OK(mp_list_append(l, &v));
    mp_val_t out;
    ASSERT_OK(mp_list_get(l, -1, &out));
    ASSERT_EQ(out.u.i, i);
  }
  for (int c = 0; c < 3; c++)
    mpt_wait_ok(pids[c]);
  size_t n;
  ASSERT_OK(mp_dict_len(d, &n));
  ASSERT_EQ(n, 6001);
  check_dict(d);
  drop_pair(m, d, l);
}

TEST(redis_server_killed_and_restarted) {
  /* A server of our own: calls fail with connection errors while it is
   * down (no crash, no hang), and work again once it is back. */
  mpt_redis_t s = {0};
  ASSERT_OK(mpt_redis_start(&s, 0, NULL));
  mp_manager_t *m;
  mp_manager_opts_t o = {.address = s.addr, .command_timeout_ms = 2000};
  ASSERT_OK(mp_manager_create(&m, &o));
  mp_dict_t *d;
  mp_list_t *l;
  ASSERT_OK(mp_dict_create(&d, m, NULL));
  ASSERT_OK(mp_list_create(&l, m, NULL));
  for (int i = 0; i < 100; i++)
    dict_put_int(d, i);
  mp_val_t c = mp_val_str("c");
  ASSERT_OK(mp_dict_add(d, &c, 1, NULL));
  /* A child hammers the dict meanwhile: it sees errors, then recovers. */
  int pfd[2];
  ASSERT(pipe(pfd) == 0);
  pid_t pid = fork();
  if (pid == 0) {
    close(pfd[0]);
    int errs = 0, oks_after = 0;
    uint64_t end = mpt_now_ms() + 60000;
    while (mpt_now_ms() < end && oks_after < 50) {
      mp_val_t k = mp_val_int(7), v;
      int r = mp_dict_get_default(d, &k, NULL, &v);
      if (r < 0) {
        ASSERT(r == MP_ECONNRESET || r == MP_ECONNREFUSED ||
               r == MP_ENOENT || r == MP_ETIMEDOUT);
        errs++;
        mpt_sleep_ms(5);
      } else if (errs) {
        oks_after++;
      }
    }
    ASSERT(write(pfd[1], &errs, sizeof errs) == (ssize_t)sizeof errs);
    _exit(0);
  }
  close(pfd[1]);
  mpt_sleep_ms(50);
  mpt_redis_kill(&s);
  int r = mp_dict_set(d, &c, &c);
  ASSERT(r == MP_ECONNRESET || r == MP_ECONNREFUSED || r == MP_ENOENT);
  r = mp_list_append(l, &c);
  ASSERT(r == MP_ECONNREFUSED || r == MP_ENOENT);
  mpt_sleep_ms(100);
  ASSERT_OK(mpt_redis_start(&s, 0, NULL));
  /* Back: no persistence configured, so the data is gone; the manager's
   * handles work again (scripts are sent anew after NOSCRIPT). */
  size_t n;
  ASSERT_OK(mp_dict_len(d, &n));
  ASSERT_EQ(n, 0);
  int64_t res;
  ASSERT_OK(mp_dict_add(d, &c, 5, &res));
  ASSERT_EQ(res, 5);
  ASSERT_OK(mp_list_append(l, &c));
  ASSERT_LIST(l, "['c']");
  int errs = 0;
  ASSERT(read(pfd[0], &errs, sizeof errs) == (ssize_t)sizeof errs);
  close(pfd[0]);
  mpt_wait_ok(pid);
  ASSERT(errs > 0);
  ASSERT_OK(mp_dict_close(d));
  ASSERT_OK(mp_list_close(l));
  ASSERT_OK(mp_manager_destroy(m));
  mpt_redis_stop(&s);
}

TEST(redis_command_timeout) {
  /* A server that stops answering (SIGSTOP): MP_ETIMEDOUT, then fine. */
  mpt_redis_t s = {0};
  ASSERT_OK(mpt_redis_start(&s, 0, NULL));
  mp_manager_t *m;
  mp_manager_opts_t o = {.address = s.addr, .command_timeout_ms = 300};
  ASSERT_OK(mp_manager_create(&m, &o));
  mp_dict_t *d;
  ASSERT_OK(mp_dict_create(&d, m, NULL));
  dict_put_int(d, 1);
  kill(s.pid, SIGSTOP);
  mp_val_t k = mp_val_int(1), v;
  ASSERT_ERR(mp_dict_get(d, &k, &v), MP_ETIMEDOUT);
  kill(s.pid, SIGCONT);
  ASSERT_EQ(get_int(d, k), 3);
  ASSERT_OK(mp_dict_close(d));
  ASSERT_OK(mp_manager_destroy(m));
  mpt_redis_stop(&s);
}

TEST(redis_local_update_from_redis_and_back) {
  mp_manager_t *rm = new_manager(0), *lm;
  ASSERT_OK(mp_manager_create(&lm, NULL));
  mp_dict_t *rd, *ld;
  ASSERT_OK(mp_dict_create(&rd, rm, NULL));
  ASSERT_OK(mp_dict_create(&ld, lm, NULL));
  dict_put_int(rd, 1);
  dict_put_int(ld, 2);
  ASSERT_OK(mp_dict_update(ld, rd));
  ASSERT_DICT(ld, "{2: 6, 1: 3}");
  ASSERT_OK(mp_dict_update(rd, ld));
  ASSERT_DICT(rd, "{1: 3, 2: 6}");
  /* The queue, lock and event need Redis. */
  mp_mqueue_t *q;
  mp_mlock_t *lk;
  mp_mevent_t *e;
  ASSERT_ERR(mp_mqueue_create(&q, lm, NULL), MP_ENOTSUP);
  ASSERT_ERR(mp_mlock_create(&lk, lm, NULL), MP_ENOTSUP);
  ASSERT_ERR(mp_mevent_create(&e, lm, NULL), MP_ENOTSUP);
  ASSERT_OK(mp_dict_close(rd));
  ASSERT_OK(mp_dict_close(ld));
  ASSERT_OK(mp_manager_destroy(rm));
  ASSERT_OK(mp_manager_destroy(lm));
}

