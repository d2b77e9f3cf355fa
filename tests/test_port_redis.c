/* The list and dict methods Python programs use (test_port.c) run again on
 * a Redis manager (RERUN lines), then the same random operations on a local
 * and a Redis manager side by side: every result and error must match. */
#define MPT_MANAGER_REDIS 1
#include "redis_server.h"

#include "test_port.c"

#include <math.h>

#define RERUN(name)
RERUN(manager_list_python_methods)
RERUN(manager_dict_python_methods)
RERUN(manager_methods_across_fork)

/* ---- local and Redis side by side ---------------------------------------- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next_rand(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static size_t pick(size_t n) {
  return (size_t)(next_rand() % n);
}

/* Awkward values by kind: 0 numbers (ints around 2^53 and 2^63, doubles
 * equal to them, 0.0 and -0.0, NaN, infinities, bools), 1 str, 2 bytes
 * (with NUL bytes), 3 anything (None too). */
static mp_val_t some_val(int kind) {
  static const int64_t ints[] = {0,  1, -1, 3, (1ll << 53), (1ll << 53) + 1,
                                 -(1ll << 53) - 1, INT64_MAX, INT64_MIN, 7};
  static const double dbls[] = {0.0, -0.0, 1.5, 9007199254740992.0,
                                9223372036854775808.0, -9223372036854775808.0,
                                -2.5, 3.0};
  static const char *strs[] = {"a", "ab", "b", "", "\xc3\xa9", "B", "aa"};
  static const char bytes[][3] = {{0, 'a', 0}, {0, 0, 0}, {'a', 0, 'b'},
                                  {(char)0xff, 0, 0}, {'a', 'b', 0}};
  if (kind == 3)
    kind = (int)pick(5);
  switch (kind) {
  case 0:
    switch (pick(6)) {
    case 0:
      return mp_val_bool(pick(2));
    case 1:
      return mp_val_double(pick(2) ? NAN : (pick(2) ? INFINITY : -INFINITY));
    case 2:
    case 3:
      return mp_val_double(dbls[pick(sizeof dbls / sizeof *dbls)]);
    default:
      return mp_val_int(ints[pick(sizeof ints / sizeof *ints)]);
    }
  case 1:
    return mp_val_str(strs[pick(sizeof strs / sizeof *strs)]);
  case 2:
    return mp_val_bytes(bytes[pick(5)], 1 + pick(3));
  default:
    return mp_val_nil();
  }
}

static int64_t some_bound(void) {
  static const int64_t b[] = {INT64_MIN, INT64_MAX, -(1ll << 52), 1ll << 52};
  return pick(4) ? (int64_t)pick(17) - 8 : b[pick(4)];
}

static int64_t some_step(void) {
  static const int64_t s[] = {1, 1, 1, -1, 2, -2, 3, -3, 0, INT64_MAX,
                              INT64_MIN, -INT64_MAX};
  return s[pick(sizeof s / sizeof *s)];
}

/* The local side (sa) and the Redis side (sb) read the same; frees both. */
static void same_repr(char *sa, char *sb) {
  ASSERT_STR_EQ(sb, sa);
  free(sa);
  free(sb);
}

/* Both sides returned the same code (both shown when not). */
static void same_rc(int round, int op, const int rc[2]) {
  if (rc[1] != rc[0])
    fprintf(stderr, "round %d op %d: local %d, redis %d\n", round, op,
            rc[0], rc[1]);
  ASSERT_EQ(rc[1], rc[0]);
}

static void same_list(mp_list_t *a, mp_list_t *b) {
  char *sa, *sb;
  ASSERT_OK(mp_list_repr(a, &sa));
  ASSERT_OK(mp_list_repr(b, &sb));
  same_repr(sa, sb);
}

static void same_vals(const mp_val_t *a, size_t na, const mp_val_t *b,
                      size_t nb) {
  ASSERT_EQ(nb, na);
  for (size_t i = 0; i < na; i++) {
    char *sa, *sb;
    ASSERT_OK(mp_val_repr(&a[i], &sa));
    ASSERT_OK(mp_val_repr(&b[i], &sb));
    same_repr(sa, sb);
  }
}

TEST(redis_list_methods_match_local) {
  mp_manager_t *lm, *rm;
  mp_list_t *l[2];
  ASSERT_OK(mp_manager_create(&lm, NULL));
  port_manager(&rm);
  ASSERT_OK(mp_list_create(&l[0], lm, NULL));
  ASSERT_OK(mp_list_create(&l[1], rm, NULL));
  /* Fixed cases first: zeros of both signs are equal, large ints against
   * the doubles next to them order exactly. */
  mp_val_t fixed[] = {mp_val_double(0.0), mp_val_int(0),
                      mp_val_double(-0.0), mp_val_bool(false),
                      mp_val_int((1ll << 53) + 1), mp_val_double(9007199254740992.0),
                      mp_val_int(1ll << 53), mp_val_int(INT64_MIN),
                      mp_val_double(-9223372036854775808.0)};
  mp_val_t nzero = mp_val_double(-0.0);
  for (int s = 0; s < 2; s++) {
    size_t c, at;
    ASSERT_OK(mp_list_extend(l[s], fixed, sizeof fixed / sizeof *fixed));
    ASSERT_OK(mp_list_count(l[s], &nzero, &c));
    ASSERT_EQ(c, 2u);
    ASSERT_OK(mp_list_index(l[s], &nzero, 1, INT64_MAX, &at));
    ASSERT_EQ(at, 2u);
    ASSERT_OK(mp_list_remove(l[s], &nzero));
    ASSERT_OK(mp_list_sort(l[s], false));
  }
  same_list(l[0], l[1]);
  int kind = 0;
  for (int round = 0; round < 1500; round++) {
    size_t len;
    ASSERT_OK(mp_list_len(l[0], &len));
    int op = (int)pick(11);
    if (op == 0 || len > 40) { /* refill with one kind, mostly */
      kind = pick(5) ? (int)pick(3) : 3;
      size_t n = pick(12);
      mp_val_t vs[12];
      for (size_t i = 0; i < n; i++)
        vs[i] = some_val(kind);
      for (int s = 0; s < 2; s++) {
        ASSERT_OK(mp_list_clear(l[s]));
        ASSERT_OK(mp_list_extend(l[s], vs, n));
      }
      continue;
    }
    int rc[2];
    if (op <= 2) {
      bool rev = pick(2);
      for (int s = 0; s < 2; s++)
        rc[s] = mp_list_sort(l[s], rev);
    } else if (op == 3) {
      for (int s = 0; s < 2; s++)
        rc[s] = mp_list_reverse(l[s]);
    } else if (op == 4) {
      int64_t a = some_bound(), b = some_bound(), st = some_step();
      mp_val_t *vs[2] = {NULL, NULL};
      size_t n[2] = {0, 0};
      for (int s = 0; s < 2; s++)
        rc[s] = mp_list_get_slice(l[s], a, b, st, &vs[s], &n[s]);
      ASSERT_EQ(rc[1], rc[0]);
      if (rc[0] == 0)
        same_vals(vs[0], n[0], vs[1], n[1]);
      for (int s = 0; s < 2; s++)
        mp_vals_free(vs[s], n[s]);
    } else if (op == 5) {
      int64_t a = some_bound(), b = some_bound(), st = some_step();
      size_t n = pick(5);
      mp_val_t vs[4];
      for (size_t i = 0; i < n && i < 4; i++)
        vs[i] = some_val(kind);
      if (n == 4)
        n = 0; /* l[a:b] = [] */
      for (int s = 0; s < 2; s++)
        rc[s] = mp_list_set_slice(l[s], a, b, st, n ? vs : NULL, n);
    } else if (op == 6) {
      int64_t a = some_bound(), b = some_bound(), st = some_step();
      for (int s = 0; s < 2; s++)
        rc[s] = mp_list_del_slice(l[s], a, b, st);
    } else if (op == 7) {
      mp_val_t v = some_val(kind);
      size_t c[2] = {0, 0};
      for (int s = 0; s < 2; s++)
        rc[s] = mp_list_count(l[s], &v, &c[s]);
      ASSERT_EQ(c[1], c[0]);
    } else if (op == 8) {
      mp_val_t v = some_val(kind);
      int64_t a = some_bound(), b = some_bound();
      size_t at[2] = {0, 0};
      for (int s = 0; s < 2; s++)
        rc[s] = mp_list_index(l[s], &v, a, b, &at[s]);
      ASSERT_EQ(at[1], at[0]);
    } else if (op == 9) {
      mp_val_t v = some_val(kind);
      for (int s = 0; s < 2; s++)
        rc[s] = mp_list_remove(l[s], &v);
    } else {
      int64_t t = (int64_t)pick(5) - 1;
      for (int s = 0; s < 2; s++)
        rc[s] = mp_list_repeat(l[s], t);
    }
    same_rc(round, op, rc);
    same_list(l[0], l[1]);
  }
  ASSERT_OK(mp_list_close(l[0]));
  ASSERT_OK(mp_list_close(l[1]));
  ASSERT_OK(mp_manager_destroy(lm));
  ASSERT_OK(mp_manager_destroy(rm));
}

static void same_dict(mp_dict_t *a, mp_dict_t *b) {
  char *sa, *sb;
  ASSERT_OK(mp_dict_repr(a, &sa));
  ASSERT_OK(mp_dict_repr(b, &sb));
  same_repr(sa, sb);
}

static mp_val_t some_key(void) {
  static const char *ks[] = {"a", "b", "c"};
  switch (pick(4)) {
  case 0:
    return mp_val_int((int64_t)pick(6) - 2);
  case 1:
    return mp_val_str(ks[pick(3)]);
  case 2:
    return mp_val_bool(pick(2));
  default:
    return mp_val_bytes("\0k", 1 + pick(2));
  }
}

TEST(redis_dict_methods_match_local) {
  mp_manager_t *lm, *rm;
  mp_dict_t *d[2];
  ASSERT_OK(mp_manager_create(&lm, NULL));
  port_manager(&rm);
  ASSERT_OK(mp_dict_create(&d[0], lm, NULL));
  ASSERT_OK(mp_dict_create(&d[1], rm, NULL));
  for (int round = 0; round < 1500; round++) {
    int op = (int)pick(7), rc[2];
    mp_val_t k = some_key(), v = some_val(3);
    if (op <= 1) {
      for (int s = 0; s < 2; s++)
        rc[s] = mp_dict_set(d[s], &k, &v);
    } else if (op == 2) {
      for (int s = 0; s < 2; s++)
        rc[s] = mp_dict_del(d[s], &k);
    } else if (op == 3) {
      mp_val_t pk[2], pv[2];
      for (int s = 0; s < 2; s++)
        rc[s] = mp_dict_popitem(d[s], &pk[s], &pv[s]);
      if (rc[0] == 0 && rc[1] == 0) {
        same_vals(&pk[0], 1, &pk[1], 1);
        same_vals(&pv[0], 1, &pv[1], 1);
      }
      for (int s = 0; s < 2 && rc[0] == 0 && rc[1] == 0; s++) {
        mp_val_free(&pk[s]);
        mp_val_free(&pv[s]);
      }
    } else if (op == 4) {
      mp_val_t out[2];
      const mp_val_t *def = pick(2) ? &v : NULL;
      for (int s = 0; s < 2; s++)
        rc[s] = mp_dict_setdefault(d[s], &k, def, &out[s]);
      if (rc[0] == 0 && rc[1] == 0) {
        same_vals(&out[0], 1, &out[1], 1);
        mp_val_free(&out[0]);
        mp_val_free(&out[1]);
      }
    } else if (op == 5) {
      /* cas with an expected double: 0.0 and -0.0 are equal */
      if (pick(2))
        v = mp_val_double(pick(2) ? 0.0 : -0.0);
      mp_val_t e = mp_val_double(pick(2) ? 0.0 : -0.0);
      bool sw[2] = {false, false}, with = pick(3);
      for (int s = 0; s < 2; s++)
        rc[s] = mp_dict_cas(d[s], &k, with ? &e : NULL, &v, &sw[s]);
      ASSERT_EQ(rc[1], rc[0]);
      ASSERT_EQ(sw[1], sw[0]);
    } else {
      /* Iteration in insertion order, one item at a time. */
      char got[2][512];
      for (int s = 0; s < 2; s++) {
        size_t pos = 0;
        mp_val_t ik, iv;
        got[s][0] = '\0';
        while ((rc[s] = mp_dict_next(d[s], &pos, &ik, &iv)) == 1) {
          char *a, *b;
          ASSERT_OK(mp_val_repr(&ik, &a));
          ASSERT_OK(mp_val_repr(&iv, &b));
          snprintf(got[s] + strlen(got[s]), sizeof got[s] - strlen(got[s]),
                   "%s=%s,", a, b);
          free(a);
          free(b);
          mp_val_free(&ik);
          mp_val_free(&iv);
        }
      }
      ASSERT_STR_EQ(got[1], got[0]);
    }
    same_rc(round, op, rc);
    same_dict(d[0], d[1]);
  }
  ASSERT_OK(mp_dict_close(d[0]));
  ASSERT_OK(mp_dict_close(d[1]));
  ASSERT_OK(mp_manager_destroy(lm));
  ASSERT_OK(mp_manager_destroy(rm));
}

/* mp_dict_next goes on from where it was when items before it are deleted
 * and new ones added meanwhile (another process's work). */
TEST(redis_dict_next_survives_changes) {
  mp_manager_t *m;
  mp_dict_t *d;
  port_manager(&m);
  ASSERT_OK(mp_dict_create(&d, m, NULL));
  for (int i = 0; i < 6; i++)
    ASSERT_OK(mp_dict_set(d, &(mp_val_t){.type = MP_INT, .u.i = i},
                          &(mp_val_t){.type = MP_INT, .u.i = i}));
  size_t pos = 0;
  mp_val_t k;
  ASSERT_EQ(mp_dict_next(d, &pos, &k, NULL), 1);
  ASSERT_EQ(k.u.i, 0);
  ASSERT_EQ(mp_dict_next(d, &pos, &k, NULL), 1);
  ASSERT_EQ(k.u.i, 1);
  ASSERT_OK(mp_dict_del(d, &(mp_val_t){.type = MP_INT, .u.i = 0}));
  ASSERT_OK(mp_dict_del(d, &(mp_val_t){.type = MP_INT, .u.i = 1}));
  ASSERT_OK(mp_dict_set(d, &(mp_val_t){.type = MP_INT, .u.i = 9},
                        &(mp_val_t){.type = MP_INT, .u.i = 9}));
  int64_t want[] = {2, 3, 4, 5, 9};
  for (int i = 0; i < 5; i++) {
    ASSERT_EQ(mp_dict_next(d, &pos, &k, NULL), 1);
    ASSERT_EQ(k.u.i, want[i]);
  }
  ASSERT_EQ(mp_dict_next(d, &pos, &k, NULL), 0);
  ASSERT_OK(mp_dict_close(d));
  ASSERT_OK(mp_manager_destroy(m));
}
