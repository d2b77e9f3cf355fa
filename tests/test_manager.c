#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "manager_impl.h"
#include "runner.h"

/* ---- helpers ------------------------------------------------------------- */

static mp_manager_t *new_manager(size_t reserve) {
  mp_manager_t *m;
  mp_manager_opts_t o = {.reserve = reserve};
#ifdef MPT_MANAGER_REDIS
  /* Rerun by test_manager_redis.c: the binary's own redis-server. */
  o.address = mpt_redis.addr;
  ASSERT_OK(mp_manager_create(&m, &o));
  return m;
#endif
  ASSERT_OK(mp_manager_create(&m, reserve ? &o : NULL));
  return m;
}

/* A manager with one dict and one list, and their teardown. */
static void make_pair(mp_manager_t **m, mp_dict_t **d, mp_list_t **l,
                      size_t reserve) {
  *m = new_manager(reserve);
  ASSERT_OK(mp_dict_create(d, *m, NULL));
  ASSERT_OK(mp_list_create(l, *m, NULL));
}

static void drop_pair(mp_manager_t *m, mp_dict_t *d, mp_list_t *l) {
  ASSERT_OK(mp_dict_close(d));
  ASSERT_OK(mp_list_close(l));
  ASSERT_OK(mp_manager_destroy(m));
}

static char *dict_str(mp_dict_t *d) {
  char *s;
  ASSERT_OK(mp_dict_repr(d, &s));
  return s;
}

static char *list_str(mp_list_t *l) {
  char *s;
  ASSERT_OK(mp_list_repr(l, &s));
  return s;
}

#define ASSERT_DICT(d, want)                                                   \
  do {                                                                         \
    char *s_ = dict_str(d);                                                    \
    ASSERT_STR_EQ(s_, want);                                                   \
    free(s_);                                                                  \
  } while (0)

#define ASSERT_LIST(l, want)                                                   \
  do {                                                                         \
    char *s_ = list_str(l);                                                    \
    ASSERT_STR_EQ(s_, want);                                                   \
    free(s_);                                                                  \
  } while (0)

static int64_t get_int(mp_dict_t *d, mp_val_t k) {
  mp_val_t v;
  ASSERT_OK(mp_dict_get(d, &k, &v));
  ASSERT_EQ(v.type, MP_INT);
  return v.u.i;
}

/* A Redis server may still apply a command that a killed client sent just
 * before its death (it reads the socket before it sees it closed): the
 * checks below wait until the length holds still for 10 ms. Locally a dead
 * process changes nothing, and the first comparison holds. */
static void settle(mp_dict_t *d, mp_list_t *l) {
  size_t a = 0, b = 0;
  for (int i = 0; i < 500; i++) {
    size_t a2, b2;
    if (d)
      ASSERT_OK(mp_dict_len(d, &a2));
    if (l)
      ASSERT_OK(mp_list_len(l, &b2));
    if (i > 0 && (!d || a2 == a) && (!l || b2 == b))
      return;
    a = d ? a2 : 0;
    b = l ? b2 : 0;
    mpt_sleep_ms(10);
  }
  ASSERT(!"the length never held still");
}

/* The invariant the crash tests keep: every item of the dict is
 * key -> key * 3 (int keys) or 's<key>' -> a string of (key % 40) 'x' (string
 * keys); len matches the items, every key is found by get. */
static void check_dict(mp_dict_t *d) {
  mp_val_t *ks, *vs;
  size_t n, len;
  settle(d, NULL);
  ASSERT_OK(mp_dict_items(d, &ks, &vs, &n));
  ASSERT_OK(mp_dict_len(d, &len));
  ASSERT_EQ(n, len);
  for (size_t i = 0; i < n; i++) {
    if (ks[i].type == MP_INT) {
      ASSERT_EQ(vs[i].type, MP_INT);
      ASSERT_EQ(vs[i].u.i, ks[i].u.i * 3);
    } else {
      ASSERT_EQ(ks[i].type, MP_STR);
      long k = atol(ks[i].u.s + 1);
      ASSERT_EQ(vs[i].type, MP_STR);
      ASSERT_EQ(vs[i].len, (size_t)(k % 40));
      for (size_t j = 0; j < vs[i].len; j++)
        ASSERT(vs[i].u.s[j] == 'x');
    }
    mp_val_t v;
    ASSERT_OK(mp_dict_get(d, &ks[i], &v));
    ASSERT(v.type == vs[i].type);
    mp_val_free(&v);
  }
  mp_vals_free(ks, n);
  mp_vals_free(vs, n);
}

/* Every list item is an int >= 0 or a string of 'y' of length < 50. */
static void check_list(mp_list_t *l) {
  mp_val_t *vs;
  size_t n, len;
  settle(NULL, l);
  ASSERT_OK(mp_list_items(l, &vs, &n));
  ASSERT_OK(mp_list_len(l, &len));
  ASSERT_EQ(n, len);
  for (size_t i = 0; i < n; i++) {
    if (vs[i].type == MP_INT) {
      ASSERT(vs[i].u.i >= 0);
    } else {
      ASSERT_EQ(vs[i].type, MP_STR);
      ASSERT(vs[i].len < 50);
      for (size_t j = 0; j < vs[i].len; j++)
        ASSERT(vs[i].u.s[j] == 'y');
    }
  }
  mp_vals_free(vs, n);
}

static void dict_put_int(mp_dict_t *d, int64_t k) {
  mp_val_t key = mp_val_int(k), val = mp_val_int(k * 3);
  ASSERT_OK(mp_dict_set(d, &key, &val));
}

static int dict_put_str(mp_dict_t *d, long k) {
  char kb[32], vb[64];
  snprintf(kb, sizeof kb, "s%ld", k);
  memset(vb, 'x', sizeof vb);
  mp_val_t key = mp_val_str(kb), val = mp_val_strn(vb, (size_t)(k % 40));
  return mp_dict_set(d, &key, &val);
}

/* ---- dict semantics ---------------------------------------------------------
 */

TEST(dict_basic) {
  mp_manager_t *m = new_manager(0);
  mp_dict_t *d;
  ASSERT_OK(mp_dict_create(&d, m, NULL));
  ASSERT_DICT(d, "{}");
  mp_val_t k1 = mp_val_int(1234), ka = mp_val_str("a"), v;
  ASSERT_OK(mp_dict_set(d, &k1, &k1));
  mp_val_t f = mp_val_double(2.5);
  ASSERT_OK(mp_dict_set(d, &ka, &f));
  ASSERT_DICT(d, "{1234: 1234, 'a': 2.5}");
  ASSERT_OK(mp_dict_get(d, &ka, &v));
  ASSERT_EQ(v.type, MP_DOUBLE);
  ASSERT(v.u.d == 2.5);
  /* Replace keeps the insertion position, as Python. */
  mp_val_t s = mp_val_str("a long string value, longer than eight");
  ASSERT_OK(mp_dict_set(d, &k1, &s));
  ASSERT_OK(mp_dict_get(d, &k1, &v));
  ASSERT_EQ(v.type, MP_STR);
  ASSERT_STR_EQ(v.u.s, "a long string value, longer than eight");
  mp_val_free(&v);
  ASSERT_EQ(v.type, MP_NIL);
  size_t n;
  ASSERT_OK(mp_dict_len(d, &n));
  ASSERT_EQ(n, 2);
  bool found;
  ASSERT_OK(mp_dict_contains(d, &ka, &found));
  ASSERT(found);
  mp_val_t kb = mp_val_bytes("a", 1); /* b'a' is not 'a' */
  ASSERT_OK(mp_dict_contains(d, &kb, &found));
  ASSERT(!found);
  ASSERT_ERR(mp_dict_get(d, &kb, &v), MP_ENOENT);
  mp_val_t def = mp_val_str("dflt");
  ASSERT_OK(mp_dict_get_default(d, &kb, &def, &v));
  ASSERT_STR_EQ(v.u.s, "dflt");
  mp_val_free(&v);
  ASSERT_OK(mp_dict_get_default(d, &kb, NULL, &v));
  ASSERT_EQ(v.type, MP_NIL);
  ASSERT_OK(mp_dict_get_default(d, &ka, &def, &v));
  ASSERT_EQ(v.type, MP_DOUBLE);
  /* pop / del */
  ASSERT_OK(mp_dict_pop(d, &k1, &v));
  ASSERT_EQ(v.type, MP_STR);
  mp_val_free(&v);
  ASSERT_ERR(mp_dict_pop(d, &k1, &v), MP_ENOENT);
  ASSERT_ERR(mp_dict_del(d, &k1), MP_ENOENT);
  ASSERT_DICT(d, "{'a': 2.5}");
  ASSERT_OK(mp_dict_set(d, &k1, &k1)); /* re-inserted at the end */
  ASSERT_DICT(d, "{'a': 2.5, 1234: 1234}");
  ASSERT_OK(mp_dict_del(d, &ka));
  ASSERT_DICT(d, "{1234: 1234}");
  /* keys/values/items in insertion order */
  for (int i = 0; i < 100; i++)
    dict_put_int(d, i);
  mp_val_t *ks, *vs;
  ASSERT_OK(mp_dict_keys(d, &ks, &n));
  ASSERT_EQ(n, 101);
  ASSERT_EQ(ks[0].u.i, 1234);
  for (int i = 0; i < 100; i++)
    ASSERT_EQ(ks[i + 1].u.i, i);
  mp_vals_free(ks, n);
  ASSERT_OK(mp_dict_values(d, &vs, &n));
  ASSERT_EQ(vs[100].u.i, 99 * 3);
  mp_vals_free(vs, n);
  ASSERT_OK(mp_dict_clear(d));
  ASSERT_OK(mp_dict_len(d, &n));
  ASSERT_EQ(n, 0);
  ASSERT_OK(mp_dict_keys(d, &ks, &n));
  ASSERT_EQ(n, 0);
  ASSERT(ks == NULL);
  ASSERT_DICT(d, "{}");
  ASSERT_OK(mp_dict_clear(d)); /* clearing an empty dict */
  dict_put_int(d, 7);
  ASSERT_DICT(d, "{7: 21}");
  ASSERT_OK(mp_dict_close(d));
  ASSERT_OK(mp_manager_destroy(m));
}

TEST(dict_update_add_cas) {
  mp_manager_t *m = new_manager(0);
  mp_dict_t *a, *b;
  ASSERT_OK(mp_dict_create(&a, m, NULL));
  ASSERT_OK(mp_dict_create(&b, m, NULL));
  dict_put_int(a, 1);
  dict_put_int(a, 2);
  mp_val_t k2 = mp_val_int(2), x = mp_val_str("x");
  ASSERT_OK(mp_dict_set(b, &k2, &x));
  ASSERT_OK(dict_put_str(b, 45));
  ASSERT_OK(mp_dict_update(a, b));
  ASSERT_DICT(a, "{1: 3, 2: 'x', 's45': 'xxxxx'}");
  ASSERT_OK(mp_dict_update(a, a));
  ASSERT_DICT(a, "{1: 3, 2: 'x', 's45': 'xxxxx'}");
  /* From a dict of another manager. */
  mp_manager_t *m2 = new_manager(0);
  mp_dict_t *c2;
  ASSERT_OK(mp_dict_create(&c2, m2, NULL));
  dict_put_int(c2, 1);
  dict_put_int(c2, 3);
  ASSERT_OK(mp_dict_update(a, c2));
  ASSERT_DICT(a, "{1: 3, 2: 'x', 's45': 'xxxxx', 3: 9}");
  ASSERT_OK(mp_dict_close(c2));
  ASSERT_OK(mp_manager_destroy(m2));
  /* add */
  mp_val_t c = mp_val_str("counter");
  int64_t res;
  ASSERT_OK(mp_dict_add(a, &c, 5, &res));
  ASSERT_EQ(res, 5);
  ASSERT_OK(mp_dict_add(a, &c, -7, &res));
  ASSERT_EQ(res, -2);
  ASSERT_OK(mp_dict_add(a, &c, 1, NULL));
  ASSERT_EQ(get_int(a, c), -1);
  ASSERT_ERR(mp_dict_add(a, &k2, 1, &res), MP_EINVAL); /* 'x' is no int */
  mp_val_t big = mp_val_int(INT64_MAX), kb = mp_val_int(99);
  ASSERT_OK(mp_dict_set(a, &kb, &big));
  ASSERT_ERR(mp_dict_add(a, &kb, 1, &res), MP_ERANGE);
  ASSERT_EQ(get_int(a, kb), INT64_MAX);
  /* cas */
  bool sw;
  mp_val_t one = mp_val_int(1), two = mp_val_int(2);
  mp_val_t kc = mp_val_str("cas");
  ASSERT_OK(mp_dict_cas(a, &kc, &one, &two, &sw));
  ASSERT(!sw); /* missing and expected a value */
  ASSERT_OK(mp_dict_cas(a, &kc, NULL, &one, &sw));
  ASSERT(sw); /* inserted when absent */
  ASSERT_OK(mp_dict_cas(a, &kc, NULL, &two, &sw));
  ASSERT(!sw);
  ASSERT_OK(mp_dict_cas(a, &kc, &two, &two, &sw));
  ASSERT(!sw);
  mp_val_t one_f = mp_val_double(1.0);
  ASSERT_OK(mp_dict_cas(a, &kc, &one_f, &two, &sw));
  ASSERT(!sw); /* equality is by type too */
  ASSERT_OK(mp_dict_cas(a, &kc, &one, &two, &sw));
  ASSERT(sw);
  ASSERT_EQ(get_int(a, kc), 2);
  mp_val_t ls = mp_val_str("a long string value for cas ....");
  ASSERT_OK(mp_dict_cas(a, &kc, &two, &ls, &sw));
  ASSERT(sw);
  ASSERT_OK(mp_dict_cas(a, &kc, &ls, &one, &sw));
  ASSERT(sw);
  ASSERT_OK(mp_dict_close(a));
  ASSERT_OK(mp_dict_close(b));
  ASSERT_OK(mp_manager_destroy(m));
}

TEST(dict_errors) {
  mp_manager_t *m = new_manager(0);
  mp_dict_t *d;
  mp_val_t k = mp_val_int(1), v;
  mp_val_t nil = mp_val_nil(), dbl = mp_val_double(1), bo = mp_val_bool(1);
  mp_val_t bad = mp_val_int(1);
  bad.type = (mp_val_type_t)42;
  mp_val_t badp = mp_val_strn(NULL, 3);
  bool b;
  size_t n;
  ASSERT_ERR(mp_dict_create(NULL, m, NULL), MP_EINVAL);
  ASSERT_ERR(mp_dict_create(&d, NULL, NULL), MP_EINVAL);
  mp_dict_opts_t o = {.name = ""};
  ASSERT_ERR(mp_dict_create(&d, m, &o), MP_EINVAL);
  o.name = "0123456789012345678901234567890123456789012345678";
  ASSERT_ERR(mp_dict_create(&d, m, &o), MP_ENAMETOOLONG);
  ASSERT_OK(mp_dict_create(&d, m, NULL));
  ASSERT_ERR(mp_dict_set(NULL, &k, &k), MP_EINVAL);
  ASSERT_ERR(mp_dict_set(d, NULL, &k), MP_EINVAL);
  ASSERT_ERR(mp_dict_set(d, &k, NULL), MP_EINVAL);
  ASSERT_ERR(mp_dict_set(d, &nil, &k), MP_EINVAL);
  ASSERT_ERR(mp_dict_set(d, &dbl, &k), MP_EINVAL);
  ASSERT_ERR(mp_dict_set(d, &bo, &k), MP_EINVAL);
  ASSERT_ERR(mp_dict_set(d, &bad, &k), MP_EINVAL);
  ASSERT_ERR(mp_dict_set(d, &k, &bad), MP_EINVAL);
  ASSERT_ERR(mp_dict_set(d, &k, &badp), MP_EINVAL);
  ASSERT_ERR(mp_dict_set(d, &badp, &k), MP_EINVAL);
  ASSERT_ERR(mp_dict_get(d, &k, NULL), MP_EINVAL);
  ASSERT_ERR(mp_dict_get(NULL, &k, &v), MP_EINVAL);
  ASSERT_ERR(mp_dict_get(d, &k, &v), MP_ENOENT);
  ASSERT_ERR(mp_dict_get_default(d, &k, &bad, &v), MP_EINVAL);
  ASSERT_ERR(mp_dict_get_default(d, &k, NULL, NULL), MP_EINVAL);
  ASSERT_ERR(mp_dict_contains(d, &k, NULL), MP_EINVAL);
  ASSERT_ERR(mp_dict_contains(NULL, &k, &b), MP_EINVAL);
  ASSERT_ERR(mp_dict_pop(NULL, &k, &v), MP_EINVAL);
  ASSERT_ERR(mp_dict_del(d, &dbl), MP_EINVAL);
  ASSERT_ERR(mp_dict_len(NULL, &n), MP_EINVAL);
  ASSERT_ERR(mp_dict_len(d, NULL), MP_EINVAL);
  ASSERT_ERR(mp_dict_clear(NULL), MP_EINVAL);
  ASSERT_ERR(mp_dict_update(d, NULL), MP_EINVAL);
  ASSERT_ERR(mp_dict_update(NULL, d), MP_EINVAL);
  ASSERT_ERR(mp_dict_items(d, NULL, NULL, &n), MP_EINVAL);
  ASSERT_ERR(mp_dict_keys(d, NULL, &n), MP_EINVAL);
  ASSERT_ERR(mp_dict_values(d, NULL, &n), MP_EINVAL);
  ASSERT_ERR(mp_dict_add(NULL, &k, 1, NULL), MP_EINVAL);
  ASSERT_ERR(mp_dict_add(d, &nil, 1, NULL), MP_EINVAL);
  ASSERT_ERR(mp_dict_cas(d, &k, NULL, &k, NULL), MP_EINVAL);
  ASSERT_ERR(mp_dict_cas(d, &k, &bad, &k, &b), MP_EINVAL);
  ASSERT_ERR(mp_dict_cas(d, &k, NULL, &bad, &b), MP_EINVAL);
  ASSERT_ERR(mp_dict_repr(d, NULL), MP_EINVAL);
  ASSERT_ERR(mp_dict_repr(NULL, NULL), MP_EINVAL);
  ASSERT_ERR(mp_dict_id(d, NULL), MP_EINVAL);
  ASSERT_ERR(mp_dict_close(NULL), MP_EINVAL);
  /* A list handle is not a dict handle. */
  mp_list_t *l;
  ASSERT_OK(mp_list_create(&l, m, NULL));
  ASSERT_ERR(mp_dict_set((mp_dict_t *)l, &k, &k), MP_EINVAL);
  uint32_t id;
  ASSERT_OK(mp_list_id(l, &id));
  ASSERT_ERR(mp_dict_open_id(&d, m, id), MP_EINVAL);
  ASSERT_ERR(mp_dict_open_id(&d, m, 9999), MP_ENOENT);
  ASSERT_ERR(mp_dict_open(&d, m, "nope"), MP_ENOENT);
  ASSERT_ERR(mp_dict_open(&d, m, NULL), MP_EINVAL);
  ASSERT_ERR(mp_dict_open(&d, NULL, "x"), MP_EINVAL);
  ASSERT_OK(mp_list_close(l));
  /* Nothing was changed by the failed calls. */
  ASSERT_OK(mp_dict_len(d, &n));
  ASSERT_EQ(n, 0);
  ASSERT_OK(mp_dict_close(d));
  ASSERT_OK(mp_manager_destroy(m));
}

/* ---- list semantics ---------------------------------------------------------
 */

TEST(list_basic) {
  mp_manager_t *m = new_manager(0);
  mp_list_t *l;
  ASSERT_OK(mp_list_create(&l, m, NULL));
  ASSERT_LIST(l, "[]");
  mp_val_t one = mp_val_int(1), two = mp_val_int(2), v;
  ASSERT_OK(mp_list_append(l, &one));
  ASSERT_OK(mp_list_append(l, &two));
  ASSERT_LIST(l, "[1, 2]");
  mp_val_t more[] = {mp_val_str("three"), mp_val_nil(), mp_val_bool(true),
                     mp_val_bytes("\x00\xff", 2), mp_val_double(0.1)};
  ASSERT_OK(mp_list_extend(l, more, 5));
  ASSERT_OK(mp_list_extend(l, NULL, 0));
  ASSERT_LIST(l, "[1, 2, 'three', None, True, b'\\x00\\xff', 0.1]");
  ASSERT_OK(mp_list_get(l, -1, &v));
  ASSERT(v.type == MP_DOUBLE && v.u.d == 0.1);
  ASSERT_OK(mp_list_get(l, 2, &v));
  ASSERT_STR_EQ(v.u.s, "three");
  mp_val_free(&v);
  ASSERT_ERR(mp_list_get(l, 7, &v), MP_ERANGE);
  ASSERT_ERR(mp_list_get(l, -8, &v), MP_ERANGE);
  ASSERT_OK(mp_list_set(l, -7, &two));
  mp_val_t lng = mp_val_str("a string long enough for a blob");
  ASSERT_OK(mp_list_set(l, 1, &lng));
  ASSERT_ERR(mp_list_set(l, 7, &two), MP_ERANGE);
  ASSERT_LIST(l, "[2, 'a string long enough for a blob', 'three', None, True, "
                 "b'\\x00\\xff', 0.1]");
  /* insert clamps like Python */
  ASSERT_OK(mp_list_insert(l, 0, &one));
  ASSERT_OK(mp_list_insert(l, 100, &one));
  ASSERT_OK(mp_list_insert(l, -100, &two));
  ASSERT_OK(mp_list_insert(l, -1, &lng));
  ASSERT_LIST(l, "[2, 1, 2, 'a string long enough for a blob', 'three', "
                 "None, True, b'\\x00\\xff', 0.1, "
                 "'a string long enough for a blob', 1]");
  ASSERT_OK(mp_list_pop(l, -1, &v));
  ASSERT_EQ(v.u.i, 1);
  ASSERT_OK(mp_list_pop(l, 3, &v));
  ASSERT_STR_EQ(v.u.s, "a string long enough for a blob");
  mp_val_free(&v);
  ASSERT_OK(mp_list_pop(l, 0, NULL));
  ASSERT_ERR(mp_list_pop(l, 8, &v), MP_ERANGE);
  ASSERT_LIST(l, "[1, 2, 'three', None, True, b'\\x00\\xff', 0.1, "
                 "'a string long enough for a blob']");
  mp_val_t three = mp_val_str("three");
  ASSERT_OK(mp_list_remove(l, &three));
  ASSERT_ERR(mp_list_remove(l, &three), MP_ENOENT);
  ASSERT_OK(mp_list_remove(l, &lng));
  mp_val_t one_f = mp_val_double(1.0);
  ASSERT_ERR(mp_list_remove(l, &one_f), MP_ENOENT);
  ASSERT_LIST(l, "[1, 2, None, True, b'\\x00\\xff', 0.1]");
  size_t n;
  ASSERT_OK(mp_list_len(l, &n));
  ASSERT_EQ(n, 6);
  mp_val_t *vs;
  ASSERT_OK(mp_list_items(l, &vs, &n));
  ASSERT_EQ(n, 6);
  ASSERT_EQ(vs[4].type, MP_BYTES);
  ASSERT_EQ(vs[4].len, 2);
  ASSERT(memcmp(vs[4].u.p, "\x00\xff", 2) == 0);
  mp_vals_free(vs, n);
  ASSERT_OK(mp_list_clear(l));
  ASSERT_OK(mp_list_len(l, &n));
  ASSERT_EQ(n, 0);
  ASSERT_ERR(mp_list_pop(l, -1, &v), MP_ERANGE);
  ASSERT_OK(mp_list_items(l, &vs, &n));
  ASSERT_EQ(n, 0);
  ASSERT_LIST(l, "[]");
  ASSERT_OK(mp_list_insert(l, 5, &one));
  ASSERT_LIST(l, "[1]");
  ASSERT_OK(mp_list_close(l));
  ASSERT_OK(mp_manager_destroy(m));
}

TEST(list_errors) {
  mp_manager_t *m = new_manager(0);
  mp_list_t *l;
  mp_val_t v = mp_val_int(1), bad = mp_val_int(1);
  bad.type = (mp_val_type_t)-1;
  size_t n;
  mp_val_t *vs;
  ASSERT_ERR(mp_list_create(NULL, m, NULL), MP_EINVAL);
  ASSERT_ERR(mp_list_create(&l, NULL, NULL), MP_EINVAL);
  mp_list_opts_t o = {.name = "shared"};
  ASSERT_OK(mp_list_create(&l, m, &o));
  mp_list_t *l2;
  ASSERT_ERR(mp_list_create(&l2, m, &o), MP_EEXIST);
  mp_dict_opts_t dopts = {.name = "shared"};
  mp_dict_t *d;
  ASSERT_ERR(mp_dict_create(&d, m, &dopts), MP_EEXIST);
  ASSERT_ERR(mp_dict_open(&d, m, "shared"), MP_EINVAL); /* a list */
  ASSERT_ERR(mp_list_append(NULL, &v), MP_EINVAL);
  ASSERT_ERR(mp_list_append(l, NULL), MP_EINVAL);
  ASSERT_ERR(mp_list_append(l, &bad), MP_EINVAL);
  ASSERT_ERR(mp_list_extend(l, NULL, 1), MP_EINVAL);
  mp_val_t two[] = {v, bad};
  ASSERT_ERR(mp_list_extend(l, two, 2), MP_EINVAL);
  ASSERT_ERR(mp_list_get(l, 0, &v), MP_ERANGE);
  ASSERT_ERR(mp_list_get(l, 0, NULL), MP_EINVAL);
  ASSERT_ERR(mp_list_set(l, 0, &v), MP_ERANGE);
  ASSERT_ERR(mp_list_set(l, 0, &bad), MP_EINVAL);
  ASSERT_ERR(mp_list_insert(l, 0, &bad), MP_EINVAL);
  ASSERT_ERR(mp_list_insert(NULL, 0, &v), MP_EINVAL);
  ASSERT_ERR(mp_list_pop(NULL, 0, NULL), MP_EINVAL);
  ASSERT_ERR(mp_list_remove(l, &bad), MP_EINVAL);
  ASSERT_ERR(mp_list_remove(l, &v), MP_ENOENT);
  ASSERT_ERR(mp_list_len(l, NULL), MP_EINVAL);
  ASSERT_ERR(mp_list_clear(NULL), MP_EINVAL);
  ASSERT_ERR(mp_list_items(l, NULL, &n), MP_EINVAL);
  ASSERT_ERR(mp_list_items(l, &vs, NULL), MP_EINVAL);
  ASSERT_ERR(mp_list_repr(l, NULL), MP_EINVAL);
  ASSERT_ERR(mp_list_id(NULL, NULL), MP_EINVAL);
  ASSERT_ERR(mp_list_close(NULL), MP_EINVAL);
  ASSERT_ERR(mp_list_append((mp_list_t *)m, &v), MP_EINVAL);
  ASSERT_ERR(mp_list_open(&l2, m, "nope"), MP_ENOENT);
  ASSERT_ERR(mp_list_open_id(&l2, m, 12345), MP_ENOENT);
  ASSERT_OK(mp_list_len(l, &n));
  ASSERT_EQ(n, 0);
  ASSERT_OK(mp_list_close(l));
  ASSERT_OK(mp_manager_destroy(m));
}

TEST(value_repr) {
  struct {
    mp_val_t v;
    const char *want;
  } cases[] = {
      {mp_val_nil(), "None"},
      {mp_val_bool(false), "False"},
      {mp_val_int(-42), "-42"},
      {mp_val_int(INT64_MIN), "-9223372036854775808"},
      {mp_val_double(2.5), "2.5"},
      {mp_val_double(1.0), "1.0"},
      {mp_val_double(-0.0), "-0.0"},
      {mp_val_double(0.1), "0.1"},
      {mp_val_double(1e16), "1e+16"},
      {mp_val_double(1e15), "1000000000000000.0"},
      {mp_val_double(123456789.125), "123456789.125"},
      {mp_val_double(1e-5), "1e-05"},
      {mp_val_double(0.0001), "0.0001"},
      {mp_val_double(1.5e300), "1.5e+300"},
      {mp_val_double(1.0 / 3), "0.3333333333333333"},
      {mp_val_double(__builtin_inf()), "inf"},
      {mp_val_double(__builtin_nan("")), "nan"},
      {mp_val_str(""), "''"},
      {mp_val_str("it's"), "\"it's\""},
      {mp_val_str("say \"hi\""), "'say \"hi\"'"},
      {mp_val_str("both ' and \""), "'both \\' and \"'"},
      {mp_val_str("tab\there\nnl\\"), "'tab\\there\\nnl\\\\'"},
      {mp_val_str("\x01\x7f"), "'\\x01\\x7f'"},
      {mp_val_str("caf\xc3\xa9"), "'caf\xc3\xa9'"},
      {mp_val_bytes("ab\x80'", 4), "b\"ab\\x80'\""},
      {mp_val_bytes("", 0), "b''"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *s;
    ASSERT_OK(mp_val_repr(&cases[i].v, &s));
    ASSERT_STR_EQ(s, cases[i].want);
    free(s);
  }
  char *s;
  mp_val_t bad = mp_val_int(0);
  bad.type = (mp_val_type_t)9;
  ASSERT_ERR(mp_val_repr(&bad, &s), MP_EINVAL);
  ASSERT_ERR(mp_val_repr(NULL, &s), MP_EINVAL);
  ASSERT_ERR(mp_val_repr(&cases[0].v, NULL), MP_EINVAL);
  ASSERT_OK(mp_val_free(NULL));
  ASSERT_OK(mp_vals_free(NULL, 3));
}

/* ---- manager, sharing ------------------------------------------------------
 */

TEST(manager_errors) {
  mp_manager_t *m;
  mp_manager_opts_t o = {.reserve = 1000};
  ASSERT_ERR(mp_manager_create(NULL, NULL), MP_EINVAL);
  ASSERT_ERR(mp_manager_create(&m, &o), MP_EINVAL);
  o.reserve = (size_t)1 << 50;
  ASSERT_ERR(mp_manager_create(&m, &o), MP_EINVAL);
  o.reserve = 0;
  o.name = "inner/slash"; /* "x" and "/x" are both fine; a '/' inside is not */
  ASSERT_ERR(mp_manager_create(&m, &o), MP_EINVAL);
  ASSERT_ERR(mp_manager_open(&m, "/mp-does-not-exist"), MP_ENOENT);
  ASSERT_ERR(mp_manager_open(&m, NULL), MP_EINVAL);
  ASSERT_ERR(mp_manager_open(NULL, "/x"), MP_EINVAL);
  ASSERT_ERR(mp_manager_name(NULL, NULL), MP_EINVAL);
  ASSERT_ERR(mp_manager_destroy(NULL), MP_EINVAL);
  /* A segment that is not a manager. */
  mp__seg_t seg;
  ASSERT_OK(mp__seg_create(&seg, NULL, 8192, 0, true));
  ASSERT_ERR(mp_manager_open(&m, seg.name), MP_EINVAL);
  mp__seg_close(&seg);
  ASSERT_OK(mp__seg_unlink(seg.name));
  /* Name taken. */
  char name[64];
  snprintf(name, sizeof name, "/mp-test-mgr-%d", (int)getpid());
  o.name = name;
  ASSERT_OK(mp_manager_create(&m, &o));
  mp_manager_t *m2;
  ASSERT_ERR(mp_manager_create(&m2, &o), MP_EEXIST);
  const char *nm;
  ASSERT_OK(mp_manager_name(m, &nm));
  ASSERT_STR_EQ(nm, name);
  ASSERT_OK(mp_manager_destroy(m));
  ASSERT(!mpt_shm_exists(name));
}

TEST(open_by_name_and_id) {
  mp_manager_t *m = new_manager(0);
  const char *name;
  ASSERT_OK(mp_manager_name(m, &name));
  ASSERT(strncmp(name, "/mp-", 4) == 0);
  ASSERT(mpt_shm_exists(name));
  mp_dict_t *d;
  mp_list_t *l;
  mp_dict_opts_t o = {.name = "results"};
  ASSERT_OK(mp_dict_create(&d, m, &o));
  ASSERT_OK(mp_list_create(&l, m, NULL));
  uint32_t lid;
  ASSERT_OK(mp_list_id(l, &lid));
  pid_t pid = fork();
  if (pid == 0) {
    /* As an unrelated process would: by name and id only. */
    mp_manager_t *m2;
    mp_dict_t *d2;
    mp_list_t *l2;
    ASSERT_OK(mp_manager_open(&m2, name));
    ASSERT_OK(mp_dict_open(&d2, m2, "results"));
    ASSERT_OK(mp_list_open_id(&l2, m2, lid));
    mp_val_t k = mp_val_str("from child"), v = mp_val_int(getpid());
    ASSERT_OK(mp_dict_set(d2, &k, &v));
    ASSERT_OK(mp_list_append(l2, &v));
    ASSERT_OK(mp_dict_close(d2));
    ASSERT_OK(mp_list_close(l2));
    ASSERT_OK(mp_manager_destroy(m2));
    _exit(0);
  }
  mpt_wait_ok(pid);
  mp_val_t k = mp_val_str("from child");
  ASSERT_EQ(get_int(d, k), pid);
  mp_val_t v;
  ASSERT_OK(mp_list_get(l, 0, &v));
  ASSERT_EQ(v.u.i, pid);
  ASSERT(mpt_shm_exists(name)); /* the opener's destroy does not unlink */
  char saved[64];
  snprintf(saved, sizeof saved, "%s", name);
  drop_pair(m, d, l);
  ASSERT(!mpt_shm_exists(saved));
}

TEST(fork_children_share) {
  mp_manager_t *m;
  mp_dict_t *d;
  mp_list_t *l;
  make_pair(&m, &d, &l, 0);
  pid_t pids[5];
  for (int i = 0; i < 5; i++) {
    if ((pids[i] = fork()) == 0) {
      mp_val_t v = mp_val_int(getpid());
      ASSERT_OK(mp_dict_set(d, &v, &v));
      ASSERT_OK(mp_list_append(l, &v));
      _exit(0);
    }
  }
  for (int i = 0; i < 5; i++)
    mpt_wait_ok(pids[i]);
  size_t n;
  ASSERT_OK(mp_dict_len(d, &n));
  ASSERT_EQ(n, 5);
  ASSERT_OK(mp_list_len(l, &n));
  ASSERT_EQ(n, 5);
  for (int i = 0; i < 5; i++)
    ASSERT_EQ(get_int(d, mp_val_int(pids[i])), pids[i]);
  drop_pair(m, d, l);
}

#define WRITERS 4
#define PER_WRITER 5000

typedef struct {
  mp_dict_t *d;
  mp_list_t *l;
  int base;
} worker_arg_t;

static void *writer(void *p) {
  worker_arg_t *w = p;
  mp_val_t c = mp_val_str("counter");
  for (int i = 0; i < PER_WRITER; i++) {
    int64_t k = (int64_t)w->base * PER_WRITER + i;
    dict_put_int(w->d, k);
    if (i % 3 == 0)
      ASSERT_OK(dict_put_str(w->d, (long)k));
    ASSERT_OK(mp_dict_add(w->d, &c, 1, NULL));
    mp_val_t v = mp_val_int(k);
    ASSERT_OK(mp_list_append(w->l, &v));
    if (i % 10 == 9) {
      mp_val_t out;
      ASSERT_OK(mp_list_pop(w->l, -1, &out)); /* some item, maybe not ours */
      ASSERT_OK(mp_list_append(w->l, &out));
    }
  }
  return NULL;
}

TEST(concurrent_processes_and_threads) {
  mp_manager_t *m;
  mp_dict_t *d;
  mp_list_t *l;
  make_pair(&m, &d, &l, 0);
  pid_t pids[WRITERS];
  for (int p = 0; p < WRITERS; p++) {
    if ((pids[p] = fork()) == 0) {
      pthread_t t[2];
      worker_arg_t a[2] = {{d, l, p * 2}, {d, l, p * 2 + 1}};
      for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, writer, &a[i]);
      for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
      _exit(0);
    }
  }
  for (int p = 0; p < WRITERS; p++)
    mpt_wait_ok(pids[p]);
  int total = WRITERS * 2 * PER_WRITER,
      strs = WRITERS * 2 * ((PER_WRITER + 2) / 3);
  size_t n;
  ASSERT_OK(mp_dict_len(d, &n));
  ASSERT_EQ(n, (size_t)(total + strs + 1));
  ASSERT_EQ(get_int(d, mp_val_str("counter")), total);
  for (int k = 0; k < total; k++)
    ASSERT_EQ(get_int(d, mp_val_int(k)), k * 3);
  mp_val_t *vs;
  ASSERT_OK(mp_list_items(l, &vs, &n));
  ASSERT_EQ(n, (size_t)total);
  char *seen = calloc((size_t)total, 1);
  for (size_t i = 0; i < n; i++) {
    ASSERT(vs[i].type == MP_INT && vs[i].u.i >= 0 && vs[i].u.i < total);
    ASSERT(!seen[vs[i].u.i]);
    seen[vs[i].u.i] = 1;
  }
  free(seen);
  mp_vals_free(vs, n);
  mp_val_t c = mp_val_str("counter");
  ASSERT_OK(mp_dict_del(d, &c));
  check_dict(d);
  drop_pair(m, d, l);
}

/* ---- size
 * ---------------------------------------------------------------------- */

TEST(growth_1m_entries) {
  mp_manager_t *m;
  mp_dict_t *d;
  mp_list_t *l;
  make_pair(&m, &d, &l, 0);
  const int N = 1100000;
  mp_val_t chunk[1000];
  for (int i = 0; i < N; i++) {
    mp_val_t k = mp_val_int(i);
    ASSERT_OK(mp_dict_set(d, &k, &k));
    chunk[i % 1000] = k;
    if (i % 1000 == 999)
      ASSERT_OK(mp_list_extend(l, chunk, 1000));
  }
  size_t n;
  ASSERT_OK(mp_dict_len(d, &n));
  ASSERT_EQ(n, (size_t)N);
  ASSERT_OK(mp_list_len(l, &n));
  ASSERT_EQ(n, (size_t)N);
  for (int i = 0; i < N; i += 997) {
    ASSERT_EQ(get_int(d, mp_val_int(i)), i);
    mp_val_t v;
    ASSERT_OK(mp_list_get(l, i, &v));
    ASSERT_EQ(v.u.i, i);
  }
  mp_val_t v;
  ASSERT_OK(mp_list_get(l, -1, &v));
  ASSERT_EQ(v.u.i, N - 1);
  ASSERT_OK(mp_dict_clear(d));
  ASSERT_OK(mp_list_clear(l));
  drop_pair(m, d, l);
}

TEST(growth_1gib_values) {
  mp_manager_t *m = new_manager(0);
  mp_dict_t *d;
  ASSERT_OK(mp_dict_create(&d, m, NULL));
  const size_t sz = (size_t)16 << 20;
  const int count = 66; /* 1056 MiB */
  char *buf = malloc(sz);
  ASSERT(buf);
  for (int i = 0; i < count; i++) {
    memset(buf, 'a' + i % 26, sz);
    mp_val_t k = mp_val_int(i), v = mp_val_bytes(buf, sz);
    ASSERT_OK(mp_dict_set(d, &k, &v));
  }
  for (int i = 0; i < count; i += 21) {
    mp_val_t k = mp_val_int(i), v;
    ASSERT_OK(mp_dict_get(d, &k, &v));
    ASSERT_EQ(v.len, sz);
    const char *p = v.u.p;
    ASSERT(p[0] == 'a' + i % 26 && p[sz - 1] == 'a' + i % 26);
    mp_val_free(&v);
  }
  /* Freed big blocks are reused, not grown past. */
  uint64_t used = mp__arena_used(&m->a);
  for (int i = 0; i < 8; i++) {
    mp_val_t k = mp_val_int(i), v = mp_val_bytes(buf, sz);
    ASSERT_OK(mp_dict_set(d, &k, &v));
  }
  ASSERT(mp__arena_used(&m->a) <= used + 2 * sz);
  free(buf);
  ASSERT_OK(mp_dict_close(d));
  ASSERT_OK(mp_manager_destroy(m));
}

TEST(full_arena_enomem_intact) {
  mp_manager_t *m;
  mp_dict_t *d;
  mp_list_t *l;
  make_pair(&m, &d, &l, (size_t)2 << 20);
  int ok = 0, r = 0;
  for (long k = 0; k < 1000000; k++) {
    if ((r = dict_put_str(d, k)) != 0)
      break;
    ok++;
  }
  ASSERT_ERR(r, MP_ENOMEM);
  ASSERT(ok > 1000);
  size_t n;
  ASSERT_OK(mp_dict_len(d, &n));
  ASSERT_EQ(n, (size_t)ok);
  check_dict(d);
  /* Atomic when full: an update that does not fit changes nothing. */
  for (long k = 0; k < 200; k++) {
    char kb[32];
    snprintf(kb, sizeof kb, "s%ld", k);
    mp_val_t key = mp_val_str(kb);
    ASSERT_OK(mp_dict_del(d, &key));
  }
  mp_manager_t *m2 = new_manager(0);
  mp_dict_t *big;
  ASSERT_OK(mp_dict_create(&big, m2, NULL));
  for (int i = 0; i < 100000; i++)
    dict_put_int(big, 10000000 + i);
  char *before = dict_str(d);
  ASSERT_ERR(mp_dict_update(d, big), MP_ENOMEM);
  char *after = dict_str(d);
  ASSERT_STR_EQ(before, after);
  free(before);
  free(after);
  mp_val_t *many = calloc(100000, sizeof *many);
  for (int i = 0; i < 100000; i++)
    many[i] = mp_val_int(i);
  ASSERT_OK(mp_list_extend(l, many, 10));
  ASSERT_ERR(mp_list_extend(l, many, 100000), MP_ENOMEM);
  free(many);
  ASSERT_OK(mp_list_len(l, &n));
  ASSERT_EQ(n, 10);
  ASSERT_OK(mp_dict_close(big));
  ASSERT_OK(mp_manager_destroy(m2));
  /* Space freed by the deletes is reused by new values. */
  for (long k = 200; k < 400; k++)
    ASSERT_OK(dict_put_str(d, k));
  check_dict(d);
  drop_pair(m, d, l);
}

/* ---- crashes ----------------------------------------------------------------
 */

static long hook_countdown;
static void kill_hook(void) {
  if (--hook_countdown == 0)
    raise(SIGKILL);
}

/* One mixed operation keeping the invariants of check_dict/check_list. */
static void mixed_op(mp_dict_t *d, mp_list_t *l, unsigned *seed) {
  unsigned r = rand_r(seed);
  long k = (long)(r >> 8) % 3000;
  mp_val_t key = mp_val_int(k);
  switch (r % 12) {
  case 0:
  case 1:
    dict_put_int(d, k);
    break;
  case 2:
    dict_put_str(d, k);
    break;
  case 3:
    mp_dict_del(d, &key);
    break;
  case 4: {
    mp_dict_t *tmp;
    mp_manager_t *m = d->h.m;
    if (mp_dict_open_id(&tmp, m, 2) == 0) { /* the scratch dict */
      mp_dict_update(d, tmp);
      mp_dict_close(tmp);
    }
    break;
  }
  case 5: {
    mp_val_t v = mp_val_int(k);
    mp_list_append(l, &v);
    break;
  }
  case 6: {
    char b[64];
    memset(b, 'y', sizeof b);
    mp_val_t v = mp_val_strn(b, (size_t)k % 50);
    mp_list_insert(l, (int64_t)k % 100, &v);
    break;
  }
  case 7:
    mp_list_pop(l, (int64_t)(k % 7) - 3, NULL);
    break;
  case 8: {
    mp_val_t vals[5] = {mp_val_int(1), mp_val_int(2), mp_val_int(3),
                        mp_val_str("yyyyyyyyyyyyyyyyyyyyyy"), mp_val_str("yy")};
    mp_list_extend(l, vals, 5);
    break;
  }
  case 9: {
    mp_val_t v = mp_val_str("yyyyyyyyyyyyyy");
    mp_list_set(l, (int64_t)k % 10, &v);
    mp_list_remove(l, &v);
    break;
  }
  case 10:
    if (k % 40 == 0) {
      mp_dict_clear(d);
      mp_list_clear(l);
    }
    break;
  default: {
    mp_val_t v;
    if (mp_dict_get(d, &key, &v) == 0)
      mp_val_free(&v);
    break;
  }
  }
}

static void crash_setup(mp_manager_t **m, mp_dict_t **d, mp_list_t **l) {
  make_pair(m, d, l, 0);
  mp_dict_t *scratch;
  ASSERT_OK(mp_dict_create(&scratch, *m, NULL));
  uint32_t id;
  ASSERT_OK(mp_dict_id(scratch, &id));
  ASSERT_EQ(id, 2);
  for (int i = 5000; i < 5040; i++) {
    dict_put_int(scratch, i);
    dict_put_str(scratch, i);
  }
  ASSERT_OK(mp_dict_close(scratch));
}

TEST(crash_mid_operation_rounds) {
  mp_manager_t *m;
  mp_dict_t *d;
  mp_list_t *l;
  crash_setup(&m, &d, &l);
  unsigned seed = 12345;
  int killed = 0;
  for (int round = 0; round < 500; round++) {
    unsigned child_seed = seed + (unsigned)round * 7919;
    long countdown = 1 + rand_r(&seed) % 400;
    pid_t pid = fork();
    if (pid == 0) {
      hook_countdown = countdown;
      mp__manager_write_hook = kill_hook;
      for (;;)
        mixed_op(d, l, &child_seed);
    }
    int st;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    killed++;
    if (round % 10 == 0) {
      check_dict(d);
      check_list(l);
    }
  }
  ASSERT_EQ(killed, 500);
  check_dict(d);
  check_list(l);
  /* Still fully usable. */
  for (int i = 0; i < 1000; i++)
    dict_put_int(d, 100000 + i);
  ASSERT_EQ(get_int(d, mp_val_int(100999)), 100999 * 3);
  check_dict(d);
  drop_pair(m, d, l);
}

TEST(crash_random_sigkill_with_waiters) {
  mp_manager_t *m;
  mp_dict_t *d;
  mp_list_t *l;
  crash_setup(&m, &d, &l);
  unsigned seed = 777;
  for (int round = 0; round < 40; round++) {
    pid_t pids[3];
    for (int c = 0; c < 3; c++) {
      if ((pids[c] = fork()) == 0) {
        unsigned s = (unsigned)(round * 3 + c);
        for (;;)
          mixed_op(d, l, &s);
      }
    }
    mpt_sleep_ms(1 + rand_r(&seed) % 20);
    /* Kill one; the others must go on (taking over its lock if needed). */
    kill(pids[0], SIGKILL);
    mpt_sleep_ms(rand_r(&seed) % 10);
    /* Check while the victim is still an unreaped zombie. */
    size_t n;
    ASSERT_OK(mp_dict_len(d, &n));
    kill(pids[1], SIGKILL);
    kill(pids[2], SIGKILL);
    for (int c = 0; c < 3; c++) {
      int st;
      ASSERT_EQ(waitpid(pids[c], &st, 0), pids[c]);
    }
    check_dict(d);
    check_list(l);
  }
  drop_pair(m, d, l);
}

static void stall_hook(void) {
  for (;;)
    pause();
}

TEST(lock_holder_killed_no_hang) {
  mp_manager_t *m = new_manager(0);
  mp_dict_t *d;
  ASSERT_OK(mp_dict_create(&d, m, NULL));
  dict_put_int(d, 1);
  int pfd[2];
  ASSERT(pipe(pfd) == 0);
  pid_t pid = fork();
  if (pid == 0) {
    close(pfd[0]);
    mp__manager_write_hook = stall_hook;
    ASSERT(write(pfd[1], "x", 1) == 1);
    dict_put_int(d, 2); /* stalls holding the lock, after one write */
    _exit(1);
  }
  close(pfd[1]);
  char c;
  ASSERT(read(pfd[0], &c, 1) == 1);
  close(pfd[0]);
  mpt_sleep_ms(50); /* let it reach the stall */
  pid_t helper = fork();
  if (helper == 0) {
    /* Blocks on the stalled lock until the holder dies. */
    dict_put_int(d, 3);
    _exit(0);
  }
  mpt_sleep_ms(100);
  uint64_t t0 = mpt_now_ms();
  kill(pid, SIGKILL); /* left a zombie for now */
  mpt_wait_ok(helper);
  dict_put_int(d, 4);
  ASSERT(mpt_now_ms() - t0 < 60000);
  int st;
  ASSERT_EQ(waitpid(pid, &st, 0), pid);
  ASSERT_DICT(d, "{1: 3, 3: 9, 4: 12}");
  ASSERT_OK(mp_dict_close(d));
  ASSERT_OK(mp_manager_destroy(m));
}

TEST(no_shm_leftover_after_creator_killed) {
  int pfd[2];
  ASSERT(pipe(pfd) == 0);
  pid_t pid = fork();
  if (pid == 0) {
    close(pfd[0]);
    mp_manager_t *m = new_manager(0);
    const char *name;
    ASSERT_OK(mp_manager_name(m, &name));
    char buf[64] = {0};
    snprintf(buf, sizeof buf, "%s", name);
    ASSERT(write(pfd[1], buf, sizeof buf) == (ssize_t)sizeof buf);
    for (;;)
      pause();
  }
  close(pfd[1]);
  char name[64];
  ASSERT(read(pfd[0], name, sizeof name) == (ssize_t)sizeof name);
  close(pfd[0]);
  ASSERT(mpt_shm_exists(name));
  kill(pid, SIGKILL);
  int st;
  ASSERT_EQ(waitpid(pid, &st, 0), pid);
  for (int i = 0; i < 500 && mpt_shm_exists(name); i++)
    mpt_sleep_ms(10);
  ASSERT(!mpt_shm_exists(name));
}

TEST(dict_int_key_patterns) {
  /* Ints hash to themselves: keys that differ only in high bits, negative
   * keys and the extremes must still spread and be found. */
  mp_manager_t *m = new_manager(0);
  mp_dict_t *d;
  ASSERT_OK(mp_dict_create(&d, m, NULL));
  const int n = 20000;
  int64_t shifts[] = {0, 20, 40, 44};
  for (int s = 0; s < 4; s++)
    for (int64_t k = 1; k <= n; k++) {
      dict_put_int(d, (k << shifts[s]) + s);
      dict_put_int(d, -((k << shifts[s]) + s) - 1);
    }
  dict_put_int(d, INT64_MAX / 3);
  dict_put_int(d, INT64_MIN / 3);
  size_t len;
  ASSERT_OK(mp_dict_len(d, &len));
  ASSERT_EQ(len, (size_t)(8 * n + 2));
  for (int s = 0; s < 4; s++)
    for (int64_t k = 1; k <= n; k += 7) {
      int64_t key = (k << shifts[s]) + s;
      ASSERT_EQ(get_int(d, mp_val_int(key)), key * 3);
      ASSERT_EQ(get_int(d, mp_val_int(-key - 1)), (-key - 1) * 3);
    }
  for (int64_t k = 1; k <= n; k++) {
    mp_val_t key = mp_val_int((k << 40) + 2);
    if (k % 2 == 0)
      ASSERT_OK(mp_dict_del(d, &key));
  }
  mp_val_t gone = mp_val_int(((int64_t)4 << 40) + 2), v;
  ASSERT_ERR(mp_dict_get(d, &gone, &v), MP_ENOENT);
  check_dict(d);
  ASSERT_OK(mp_dict_close(d));
  ASSERT_OK(mp_manager_destroy(m));
}

TEST(crash_acknowledged_writes_kept) {
  /* Children set unique keys (and append them to the list) and acknowledge
   * each through a pipe once the calls returned; after SIGKILLs at random
   * moments every acknowledged key and item is there. */
  mp_manager_t *m;
  mp_dict_t *d;
  mp_list_t *l;
  make_pair(&m, &d, &l, 0);
  int64_t *acked = malloc(sizeof(int64_t) * 400000);
  size_t nacked = 0;
  unsigned seed = 99;
  for (int round = 0; round < 30; round++) {
    int pfd[2];
    ASSERT(pipe(pfd) == 0);
    pid_t pids[2];
    for (int c = 0; c < 2; c++) {
      if ((pids[c] = fork()) == 0) {
        close(pfd[0]);
        for (int64_t i = 0;; i++) {
          int64_t key = ((int64_t)round * 2 + c) * 1000000 + i;
          dict_put_int(d, key);
          mp_val_t v = mp_val_int(key);
          ASSERT_OK(mp_list_append(l, &v));
          ASSERT(write(pfd[1], &key, sizeof key) == (ssize_t)sizeof key);
        }
      }
    }
    close(pfd[1]);
    /* The first acknowledgement, then a random moment (a child may need a
     * while to start: a Redis manager connects first). */
    int64_t key;
    ASSERT(read(pfd[0], &key, sizeof key) == (ssize_t)sizeof key);
    acked[nacked++] = key;
    mpt_sleep_ms(rand_r(&seed) % 15);
    kill(pids[0], SIGKILL);
    kill(pids[1], SIGKILL);
    while (read(pfd[0], &key, sizeof key) == (ssize_t)sizeof key &&
           nacked < 400000)
      acked[nacked++] = key;
    close(pfd[0]);
    for (int c = 0; c < 2; c++)
      ASSERT_EQ(waitpid(pids[c], NULL, 0), pids[c]);
  }
  ASSERT(nacked > 0);
  for (size_t i = 0; i < nacked; i++)
    ASSERT_EQ(get_int(d, mp_val_int(acked[i])), acked[i] * 3);
  mp_val_t *vs;
  size_t n, dn;
  ASSERT_OK(mp_list_items(l, &vs, &n));
  ASSERT_OK(mp_dict_len(d, &dn));
  ASSERT(n >= nacked && dn >= nacked);
  /* A killed append is all or nothing, like its dict set before it. */
  ASSERT(n <= dn && dn <= n + 60);
  mp_vals_free(vs, n);
  check_dict(d);
  free(acked);
  drop_pair(m, d, l);
}

/* What a pool task gets to reach the shared dict and list: plain bytes. */
typedef struct {
  char manager[64];
  uint32_t dict_id, list_id;
  int64_t key;
} task_ref_t;

static int task_put(const void *arg, size_t len, mp_buf_t *result, void *ctx) {
  const task_ref_t *ref = arg;
  mp_manager_t *m;
  mp_dict_t *d;
  mp_list_t *l;
  (void)ctx;
  if (len != sizeof *ref || mp_manager_open(&m, ref->manager) < 0)
    return mp_task_error(result, 1, "open manager");
  int r = mp_dict_open_id(&d, m, ref->dict_id);
  if (r == 0) {
    if ((r = mp_list_open_id(&l, m, ref->list_id)) == 0) {
      mp_val_t k = mp_val_int(ref->key), v = mp_val_int(ref->key * 3);
      if ((r = mp_dict_set(d, &k, &v)) == 0)
        r = mp_list_append(l, &k);
      mp_list_close(l);
    }
    mp_dict_close(d);
  }
  mp_manager_destroy(m);
  return r == 0 ? 0 : mp_task_error(result, 2, "%s", mp_strerror(r));
}

static void run_pool_tasks(mp_pool_backend_t backend) {
  /* Workers exist before the manager: they reach it by name only. */
  mp_pool_t *pool;
  mp_pool_opts_t po = {.workers = 3, .backend = backend};
  ASSERT_OK(mp_pool_create(&pool, &po));
  mp_manager_t *m;
  mp_dict_t *d;
  mp_list_t *l;
  make_pair(&m, &d, &l, 0);
  task_ref_t ref = {0};
  const char *name;
  ASSERT_OK(mp_manager_name(m, &name));
  snprintf(ref.manager, sizeof ref.manager, "%s", name);
  ASSERT_OK(mp_dict_id(d, &ref.dict_id));
  ASSERT_OK(mp_list_id(l, &ref.list_id));
  mp_result_t *res[60];
  for (int i = 0; i < 60; i++) {
    ref.key = i;
    ASSERT_OK(
        mp_pool_apply_async(pool, task_put, &ref, sizeof ref, NULL, &res[i]));
  }
  for (int i = 0; i < 60; i++) {
    ASSERT_OK(mp_result_wait(res[i], MP_FOREVER));
    ASSERT_EQ(mp_result_successful(res[i]), 1);
    ASSERT_OK(mp_result_destroy(res[i]));
  }
  ASSERT_OK(mp_pool_close(pool));
  ASSERT_OK(mp_pool_join(pool, MP_FOREVER));
  ASSERT_OK(mp_pool_destroy(pool));
  size_t n;
  ASSERT_OK(mp_dict_len(d, &n));
  ASSERT_EQ(n, 60);
  ASSERT_OK(mp_list_len(l, &n));
  ASSERT_EQ(n, 60);
  for (int i = 0; i < 60; i++)
    ASSERT_EQ(get_int(d, mp_val_int(i)), i * 3);
  drop_pair(m, d, l);
}

TEST(pool_tasks_process_workers) {
  run_pool_tasks(MP_POOL_PROCESSES);
}

TEST(pool_tasks_thread_workers) {
  run_pool_tasks(MP_POOL_THREADS);
}

/* ---- trust boundary ---------------------------------------------------------
 * The arena header's layout (src/arena.c), as a peer would scribble it. */
enum {
  AH_RESERVE = 16,
  AH_ROOT_SIZE = 32,
  AH_TOP = 40,
  AH_SIZE = 48,
  AH_HEADS = 56
};

static void mgr_path(mp_manager_t *m, char *path, size_t cap) {
  const char *name;
  ASSERT_OK(mp_manager_name(m, &name));
  snprintf(path, cap, "/dev/shm%s", name);
}

/* Write a 64-bit word at off of the manager's object through a mapping of
 * our own, as another process would. */
static void mgr_poke(mp_manager_t *m, size_t off, uint64_t v) {
  char path[128];
  mgr_path(m, path, sizeof path);
  int fd = open(path, O_RDWR);
  ASSERT(fd >= 0);
  ASSERT_EQ(pwrite(fd, &v, sizeof v, (off_t)off), (ssize_t)sizeof v);
  close(fd);
}

static uint64_t mgr_peek(mp_manager_t *m, size_t off) {
  char path[128];
  uint64_t v = 0;
  mgr_path(m, path, sizeof path);
  int fd = open(path, O_RDONLY);
  ASSERT(fd >= 0);
  ASSERT_EQ(pread(fd, &v, sizeof v, (off_t)off), (ssize_t)sizeof v);
  close(fd);
  return v;
}

TEST(manager_open_refuses_foreign_or_shared_mode) {
  mp_manager_t *m = new_manager((size_t)64 << 20), *m2;
  const char *name;
  char path[128];
  ASSERT_OK(mp_manager_name(m, &name));
  mgr_path(m, path, sizeof path);
  ASSERT_EQ(chown(path, 65534, (gid_t)-1), 0);
  ASSERT_ERR(mp_manager_open(&m2, name), MP_EACCES);
  ASSERT_EQ(chown(path, geteuid(), (gid_t)-1), 0);
  ASSERT_EQ(chmod(path, 0666), 0);
  ASSERT_ERR(mp_manager_open(&m2, name), MP_EACCES);
  ASSERT_EQ(chmod(path, 0600), 0);
  ASSERT_OK(mp_manager_open(&m2, name));
  ASSERT_OK(mp_manager_destroy(m2));
  ASSERT_OK(mp_manager_destroy(m));
}

/* Each header field a peer could corrupt is caught at open with MP_EPROTO,
 * and a good header opens again once restored. */
TEST(manager_open_rejects_corrupt_header) {
  mp_manager_t *m = new_manager((size_t)64 << 20), *m2;
  mp_dict_t *d;
  ASSERT_OK(mp_dict_create(&d, m, &(mp_dict_opts_t){.name = "d"}));
  mp_val_t k = mp_val_int(1), v = mp_val_str("one");
  ASSERT_OK(mp_dict_set(d, &k, &v));
  const char *name;
  ASSERT_OK(mp_manager_name(m, &name));
  struct {
    size_t off;
    uint64_t val;
  } bad[] = {
      {AH_RESERVE, 4096 * 8},                /* smaller than the object */
      {AH_RESERVE, 4096 * 3 + 1},            /* not whole pages */
      {AH_TOP, (uint64_t)1 << 40},           /* past the object */
      {AH_SIZE, (uint64_t)1 << 40},          /* claims unbacked pages */
      {AH_ROOT_SIZE, (uint64_t)1 << 41},     /* root past the end */
      {AH_HEADS + 8 * 3, (uint64_t)1 << 36}, /* free list out of bounds */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    uint64_t saved = mgr_peek(m, bad[i].off);
    mgr_poke(m, bad[i].off, bad[i].val);
    ASSERT_ERR(mp_manager_open(&m2, name), MP_EPROTO);
    mgr_poke(m, bad[i].off, saved);
  }
  ASSERT_OK(mp_manager_open(&m2, name));
  mp_dict_t *d2;
  ASSERT_OK(mp_dict_open(&d2, m2, "d"));
  mp_val_t out;
  ASSERT_OK(mp_dict_get(d2, &k, &out));
  ASSERT_EQ(out.type, MP_STR);
  ASSERT_OK(mp_val_free(&out));
  ASSERT_OK(mp_dict_close(d2));
  ASSERT_OK(mp_manager_destroy(m2));
  ASSERT_OK(mp_dict_close(d));
  ASSERT_OK(mp_manager_destroy(m));
}

/* A directory entry pointing outside the arena is reported, not followed. */
TEST(manager_corrupt_directory_entry) {
  mp_manager_t *m = new_manager((size_t)64 << 20);
  mp_dict_t *d, *d2;
  ASSERT_OK(mp_dict_create(&d, m, &(mp_dict_opts_t){.name = "d"}));
  uint64_t good = m->root->dir[0].off;
  m->root->dir[0].off = (uint64_t)1 << 42;
  ASSERT_ERR(mp_dict_open(&d2, m, "d"), MP_EPROTO);
  m->root->dir[0].off = 8; /* inside the header */
  ASSERT_ERR(mp_dict_open(&d2, m, "d"), MP_EPROTO);
  m->root->dir[0].off = good;
  ASSERT_OK(mp_dict_open(&d2, m, "d"));
  ASSERT_OK(mp_dict_close(d2));
  ASSERT_OK(mp_dict_close(d));
  ASSERT_OK(mp_manager_destroy(m));
}

/* An undo-log offset written by a corrupt peer (outside the arena, or not
 * aligned) is never followed: with a pending log (rolled back at the next
 * lock) or an empty one (reused by the next write), the call works and the
 * dict keeps its items. */
TEST(manager_corrupt_undo_log_offset) {
  mp_manager_t *m = new_manager((size_t)64 << 20);
  mp_dict_t *d;
  ASSERT_OK(mp_dict_create(&d, m, NULL));
  dict_put_int(d, 1); /* the log exists now */
  mgr_obj_t *o = mgr_ptr(&m->a, d->h.off);
  uint64_t good = atomic_load(&o->undo_off);
  uint64_t bad[] = {good + 6, good + 8, (uint64_t)1 << 62, 3};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    for (uint64_t pending = 0; pending < 2; pending++) {
      atomic_store(&o->undo_off, bad[i]);
      atomic_store(&o->undo_n, pending);
      dict_put_int(d, (int64_t)(10 + 2 * i + pending));
      ASSERT_EQ(get_int(d, mp_val_int(1)), 3);
      check_dict(d);
    }
  }
  size_t n;
  ASSERT_OK(mp_dict_len(d, &n));
  ASSERT_EQ(n, 9);
  ASSERT_OK(mp_dict_close(d));
  ASSERT_OK(mp_manager_destroy(m));
}

static void manager_fill_small_dev_shm(void) {
  mp_manager_t *m = new_manager((size_t)64 << 20);
  mp_list_t *l;
  ASSERT_OK(mp_list_create(&l, m, NULL));
  static char blob[256 << 10];
  memset(blob, 7, sizeof blob);
  mp_val_t v = mp_val_bytes(blob, sizeof blob);
  int r, n = 0;
  /* 64 MiB of reservation on an 8 MiB /dev/shm: the manager runs out with
   * an error, never a SIGBUS on a page it could not back. */
  while ((r = mp_list_append(l, &v)) == 0)
    n++;
  ASSERT_ERR(r, MP_ENOMEM);
  ASSERT(n > 4);
  size_t len;
  ASSERT_OK(mp_list_len(l, &len));
  ASSERT_EQ(len, (size_t)n);
  ASSERT_OK(mp_list_close(l));
  ASSERT_OK(mp_manager_destroy(m));
}

TEST(manager_full_dev_shm_enomem) {
  int st = mpt_with_small_dev_shm((size_t)8 << 20, manager_fill_small_dev_shm);
  ASSERT(WIFEXITED(st));
  ASSERT_EQ(WEXITSTATUS(st), 0);
}
