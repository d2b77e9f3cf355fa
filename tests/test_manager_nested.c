/* Nested containers (a dict, list or namespace stored as a value, Python's
 * proxies inside proxies) and Namespace: semantics, other processes (forked
 * and by name), errors, corrupt references, and crashes under a CPU hog and
 * a 1 ms signal storm. */
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "manager_impl.h"
#include "runner.h"

/* ---- helpers ------------------------------------------------------------- */

/* The reserve is address space, touched only as used. The stress cases
 * append for two seconds without a bound on the count: their lists grow
 * with the machine's speed (64 MiB ran out in every run, 256 MiB in about
 * one of 30), so they get room to spare. */
static mp_manager_t *new_manager(void) {
  mp_manager_t *m;
  ASSERT_OK(mp_manager_create(&m, &(mp_manager_opts_t){.reserve = 4ull << 30}));
  return m;
}

#define ASSERT_REPR(fn, obj, want)                                             \
  do {                                                                         \
    char *s_;                                                                  \
    ASSERT_OK(fn(obj, &s_));                                                   \
    ASSERT_STR_EQ(s_, want);                                                   \
    free(s_);                                                                  \
  } while (0)

static uint32_t list_id(mp_list_t *l) {
  uint32_t id;
  ASSERT_OK(mp_list_id(l, &id));
  return id;
}

static uint32_t dict_id(mp_dict_t *d) {
  uint32_t id;
  ASSERT_OK(mp_dict_id(d, &id));
  return id;
}

static void append_int(mp_list_t *l, int64_t i) {
  mp_val_t v = mp_val_int(i);
  ASSERT_OK(mp_list_append(l, &v));
}

/* d[key] must be a list reference: a new handle, returned. */
static mp_list_t *get_list(mp_dict_t *d, const char *key) {
  mp_val_t k = mp_val_str(key), v;
  ASSERT_OK(mp_dict_get(d, &k, &v));
  ASSERT_EQ(v.type, MP_LIST);
  ASSERT(v.u.list != NULL);
  return v.u.list; /* the caller closes it (mp_list_close) */
}

static void set_val(mp_dict_t *d, const char *key, mp_val_t v) {
  mp_val_t k = mp_val_str(key);
  ASSERT_OK(mp_dict_set(d, &k, &v));
}

/* ---- semantics ------------------------------------------------------------ */

/* d["a"] = manager.list(); d["a"].append(...) through the handle a get
 * returns is seen through every other handle; repr as Python 3.11. */
TEST(nested_list_in_dict) {
  mp_manager_t *m = new_manager();
  mp_dict_t *d;
  mp_list_t *l;
  ASSERT_OK(mp_dict_create(&d, m, NULL));
  ASSERT_OK(mp_list_create(&l, m, NULL));
  append_int(l, 1);
  set_val(d, "a", mp_val_list(l));
  mp_list_t *got = get_list(d, "a");
  ASSERT_EQ(list_id(got), list_id(l));
  append_int(got, 2);
  ASSERT_OK(mp_list_close(got));
  ASSERT_REPR(mp_list_repr, l, "[1, 2]");
  ASSERT_REPR(mp_dict_repr, d,
              "{'a': <ListProxy object, typeid 'list' at 0x1>}");
  /* Deleting the key drops the reference only: the list lives on. */
  mp_val_t k = mp_val_str("a");
  ASSERT_OK(mp_dict_del(d, &k));
  ASSERT_REPR(mp_list_repr, l, "[1, 2]");
  mp_list_t *again;
  ASSERT_OK(mp_list_open_id(&again, m, list_id(l)));
  ASSERT_REPR(mp_list_repr, again, "[1, 2]");
  ASSERT_OK(mp_list_close(again));
  /* A value copied out by pop owns its handle too. */
  set_val(d, "b", mp_val_list(l));
  mp_val_t out;
  k = mp_val_str("b");
  ASSERT_OK(mp_dict_pop(d, &k, &out));
  ASSERT_EQ(out.type, MP_LIST);
  append_int(out.u.list, 3);
  ASSERT_OK(mp_val_free(&out));
  ASSERT_EQ(out.type, MP_NIL);
  ASSERT_REPR(mp_list_repr, l, "[1, 2, 3]");
  ASSERT_OK(mp_dict_close(d));
  ASSERT_OK(mp_list_close(l));
  ASSERT_OK(mp_manager_destroy(m));
}

/* Lists in lists, dicts in dicts, namespaces in both; every call that
 * copies values out or compares them knows references. */
TEST(nested_every_call) {
  mp_manager_t *m = new_manager();
  mp_dict_t *d, *inner_d, *d2;
  mp_list_t *l, *inner_l;
  mp_namespace_t *ns;
  ASSERT_OK(mp_dict_create(&d, m, NULL));      /* id 0 */
  ASSERT_OK(mp_dict_create(&inner_d, m, NULL)); /* id 1 */
  ASSERT_OK(mp_list_create(&l, m, NULL));       /* id 2 */
  ASSERT_OK(mp_list_create(&inner_l, m, NULL)); /* id 3 */
  ASSERT_OK(mp_namespace_create(&ns, m, NULL)); /* id 4 */
  ASSERT_OK(mp_dict_create(&d2, m, NULL));      /* id 5 */
  mp_val_t vl = mp_val_list(inner_l), vd = mp_val_dict(inner_d),
           vn = mp_val_namespace(ns), one = mp_val_int(1);
  mp_val_t vals[4] = {vl, one, vd, vn};
  ASSERT_OK(mp_list_extend(l, vals, 4));
  ASSERT_REPR(mp_list_repr, l,
              "[<ListProxy object, typeid 'list' at 0x3>, 1, "
              "<DictProxy object, typeid 'dict' at 0x1>, "
              "<NamespaceProxy object, typeid 'Namespace' at 0x4>]");
  char *s;
  ASSERT_OK(mp_val_repr(&vd, &s));
  ASSERT_STR_EQ(s, "<DictProxy object, typeid 'dict' at 0x1>");
  free(s);
  /* Comparisons: by the object referred to. */
  size_t n, idx;
  ASSERT_OK(mp_list_count(l, &vl, &n));
  ASSERT_EQ(n, 1);
  ASSERT_OK(mp_list_index(l, &vn, 0, INT64_MAX, &idx));
  ASSERT_EQ(idx, 3);
  mp_val_t vl2 = mp_val_list(l); /* the outer list itself: not inside */
  ASSERT_ERR(mp_list_index(l, &vl2, 0, INT64_MAX, &idx), MP_ENOENT);
  ASSERT_ERR(mp_list_sort(l, false), MP_EINVAL); /* TypeError in Python */
  /* Snapshots hand out handles. */
  mp_val_t *items;
  ASSERT_OK(mp_list_items(l, &items, &n));
  ASSERT_EQ(n, 4);
  ASSERT_EQ(items[0].type, MP_LIST);
  ASSERT_EQ(items[2].type, MP_DICT);
  ASSERT_EQ(items[3].type, MP_NAMESPACE);
  mp_val_t k = mp_val_str("x"), v = mp_val_int(7);
  ASSERT_OK(mp_dict_set(items[2].u.dict, &k, &v));
  ASSERT_OK(mp_namespace_set(items[3].u.ns, "y", &v));
  append_int(items[0].u.list, 9);
  mp_vals_free(items, n);
  ASSERT_REPR(mp_dict_repr, inner_d, "{'x': 7}");
  ASSERT_REPR(mp_namespace_repr, ns, "Namespace(y=7)");
  ASSERT_REPR(mp_list_repr, inner_l, "[9]");
  ASSERT_OK(mp_list_get_slice(l, 0, 2, 1, &items, &n));
  ASSERT_EQ(n, 2);
  ASSERT_EQ(items[0].type, MP_LIST);
  ASSERT_EQ(list_id(items[0].u.list), 3);
  mp_vals_free(items, n);
  /* l *= 2 copies references, not objects. */
  ASSERT_OK(mp_list_repeat(l, 2));
  ASSERT_OK(mp_list_count(l, &vl, &n));
  ASSERT_EQ(n, 2);
  ASSERT_OK(mp_list_remove(l, &vd));
  ASSERT_OK(mp_list_count(l, &vd, &n));
  ASSERT_EQ(n, 1);
  /* l[0:1] = [d2]; l[-1] = d2 */
  mp_val_t vd2 = mp_val_dict(d2);
  ASSERT_OK(mp_list_set_slice(l, 0, 1, 1, &vd2, 1));
  ASSERT_OK(mp_list_set(l, -1, &vd2));
  ASSERT_OK(mp_list_insert(l, 0, &vl));
  ASSERT_OK(mp_list_count(l, &vd2, &n));
  ASSERT_EQ(n, 2);
  mp_val_t out;
  ASSERT_OK(mp_list_pop(l, 0, &out));
  ASSERT_EQ(out.type, MP_LIST);
  mp_val_free(&out);
  /* A dict in a dict: get_default, setdefault, cas, items, next, popitem,
   * update. */
  set_val(d, "inner", vd);
  mp_val_t miss = mp_val_str("missing");
  ASSERT_OK(mp_dict_get_default(d, &miss, &vl, &out));
  ASSERT_EQ(out.type, MP_LIST); /* a copy of the default: its own handle */
  ASSERT(out.u.list != inner_l);
  ASSERT_EQ(list_id(out.u.list), 3);
  mp_val_free(&out);
  mp_val_t sk = mp_val_str("sd");
  ASSERT_OK(mp_dict_setdefault(d, &sk, &vl, &out));
  ASSERT_EQ(out.type, MP_LIST);
  mp_val_free(&out);
  ASSERT_OK(mp_dict_setdefault(d, &sk, &one, &out)); /* present: kept */
  ASSERT_EQ(out.type, MP_LIST);
  mp_val_free(&out);
  bool swapped;
  ASSERT_OK(mp_dict_cas(d, &sk, &vd, &one, &swapped));
  ASSERT(!swapped);
  ASSERT_OK(mp_dict_cas(d, &sk, &vl, &vn, &swapped));
  ASSERT(swapped);
  ASSERT_REPR(mp_dict_repr, d,
              "{'inner': <DictProxy object, typeid 'dict' at 0x1>, "
              "'sd': <NamespaceProxy object, typeid 'Namespace' at 0x4>}");
  mp_val_t *ks, *vs;
  ASSERT_OK(mp_dict_items(d, &ks, &vs, &n));
  ASSERT_EQ(n, 2);
  ASSERT_EQ(vs[0].type, MP_DICT);
  ASSERT_EQ(dict_id(vs[0].u.dict), 1);
  mp_vals_free(ks, n);
  mp_vals_free(vs, n);
  size_t pos = 0;
  ASSERT_EQ(mp_dict_next(d, &pos, NULL, &out), 1);
  ASSERT_EQ(out.type, MP_DICT);
  mp_val_free(&out);
  ASSERT_OK(mp_dict_update(d2, d));
  ASSERT_REPR(mp_dict_repr, d2,
              "{'inner': <DictProxy object, typeid 'dict' at 0x1>, "
              "'sd': <NamespaceProxy object, typeid 'Namespace' at 0x4>}");
  ASSERT_OK(mp_dict_popitem(d2, &k, &out));
  ASSERT_EQ(out.type, MP_NAMESPACE);
  mp_val_t x;
  ASSERT_OK(mp_namespace_get(out.u.ns, "y", &x));
  ASSERT_EQ(x.u.i, 7);
  mp_val_free(&k);
  mp_val_free(&out);
  /* A container may hold itself, as in Python (l.append(l)). */
  ASSERT_OK(mp_list_clear(l));
  ASSERT_OK(mp_list_append(l, &vl2));
  ASSERT_REPR(mp_list_repr, l, "[<ListProxy object, typeid 'list' at 0x2>]");
  ASSERT_OK(mp_dict_close(d));
  ASSERT_OK(mp_dict_close(d2));
  ASSERT_OK(mp_dict_close(inner_d));
  ASSERT_OK(mp_list_close(l));
  ASSERT_OK(mp_list_close(inner_l));
  ASSERT_OK(mp_namespace_close(ns));
  ASSERT_OK(mp_manager_destroy(m));
}

/* ---- other processes -------------------------------------------------------
 */

/* The child uses the dict through `m2` (the inherited manager handle, or one
 * it opened by name): appends through the reference it reads, and stores
 * a dict it creates itself. */
static void child_side(mp_manager_t *m2, mp_dict_t *d) {
  mp_list_t *got = get_list(d, "a");
  for (int i = 0; i < 100; i++)
    append_int(got, i);
  ASSERT_OK(mp_list_close(got));
  mp_dict_t *made;
  ASSERT_OK(mp_dict_create(&made, m2, NULL));
  mp_val_t k = mp_val_str("who"), v = mp_val_int(getpid());
  ASSERT_OK(mp_dict_set(made, &k, &v));
  set_val(d, "made", mp_val_dict(made));
  ASSERT_OK(mp_dict_close(made));
}

static void parent_check(mp_dict_t *d, mp_list_t *l, pid_t child) {
  size_t n;
  ASSERT_OK(mp_list_len(l, &n));
  ASSERT_EQ(n, 100);
  mp_val_t k = mp_val_str("made"), v, who = mp_val_str("who"), w;
  ASSERT_OK(mp_dict_get(d, &k, &v));
  ASSERT_EQ(v.type, MP_DICT);
  ASSERT_OK(mp_dict_get(v.u.dict, &who, &w));
  ASSERT_EQ(w.u.i, child);
  mp_val_free(&v);
}

TEST(nested_forked_child) {
  mp_manager_t *m = new_manager();
  mp_dict_t *d;
  mp_list_t *l;
  ASSERT_OK(mp_dict_create(&d, m, NULL));
  ASSERT_OK(mp_list_create(&l, m, NULL));
  set_val(d, "a", mp_val_list(l));
  pid_t pid = fork();
  if (pid == 0) {
    child_side(m, d);
    _exit(0);
  }
  mpt_wait_ok(pid);
  parent_check(d, l, pid);
  ASSERT_OK(mp_dict_close(d));
  ASSERT_OK(mp_list_close(l));
  ASSERT_OK(mp_manager_destroy(m));
}

/* The other process maps the manager anew by name (at another address):
 * references are ids, never addresses. */
TEST(nested_opened_by_name) {
  mp_manager_t *m = new_manager();
  mp_dict_t *d;
  mp_list_t *l;
  const char *name;
  ASSERT_OK(mp_manager_name(m, &name));
  ASSERT_OK(mp_dict_create(&d, m, &(mp_dict_opts_t){.name = "outer"}));
  ASSERT_OK(mp_list_create(&l, m, NULL));
  set_val(d, "a", mp_val_list(l));
  pid_t pid = fork();
  if (pid == 0) {
    mp_manager_t *m2;
    mp_dict_t *d2;
    ASSERT_OK(mp_manager_open(&m2, name));
    ASSERT(m2->a.seg.base != m->a.seg.base);
    ASSERT_OK(mp_dict_open(&d2, m2, "outer"));
    child_side(m2, d2);
    /* A reference made through the first handle, stored through the
     * second: the same manager. */
    mp_list_t *l1;
    ASSERT_OK(mp_list_open_id(&l1, m, list_id(l)));
    set_val(d2, "again", mp_val_list(l1));
    ASSERT_OK(mp_list_close(l1));
    ASSERT_OK(mp_dict_close(d2));
    ASSERT_OK(mp_manager_destroy(m2));
    _exit(0);
  }
  mpt_wait_ok(pid);
  parent_check(d, l, pid);
  mp_list_t *again = get_list(d, "again");
  ASSERT_EQ(list_id(again), list_id(l));
  ASSERT_OK(mp_list_close(again));
  ASSERT_OK(mp_dict_close(d));
  ASSERT_OK(mp_list_close(l));
  ASSERT_OK(mp_manager_destroy(m));
}

/* ---- errors ----------------------------------------------------------------
 */

TEST(nested_errors) {
  mp_manager_t *m = new_manager(), *other = new_manager();
  mp_dict_t *d, *od;
  mp_list_t *l, *ol;
  ASSERT_OK(mp_dict_create(&d, m, NULL));
  ASSERT_OK(mp_list_create(&l, m, NULL));
  ASSERT_OK(mp_dict_create(&od, other, NULL));
  ASSERT_OK(mp_list_create(&ol, other, NULL));
  mp_val_t k = mp_val_str("k");
  /* A reference without a handle, or with a handle of another kind. */
  mp_val_t bad = mp_val_list(NULL);
  ASSERT_ERR(mp_dict_set(d, &k, &bad), MP_EINVAL);
  ASSERT_ERR(mp_list_append(l, &bad), MP_EINVAL);
  bad = mp_val_nil();
  bad.type = MP_LIST;
  bad.u.p = d; /* a dict handle called a list */
  ASSERT_ERR(mp_dict_set(d, &k, &bad), MP_EINVAL);
  bad.type = MP_NAMESPACE;
  ASSERT_ERR(mp_list_append(l, &bad), MP_EINVAL);
  char *s;
  ASSERT_ERR(mp_val_repr(&bad, &s), MP_EINVAL);
  bad.type = (mp_val_type_t)9;
  ASSERT_ERR(mp_list_append(l, &bad), MP_EINVAL);
  /* Another manager's object cannot be referred to (its id means nothing
   * here). */
  mp_val_t vo = mp_val_list(ol);
  ASSERT_ERR(mp_dict_set(d, &k, &vo), MP_EINVAL);
  ASSERT_ERR(mp_list_append(l, &vo), MP_EINVAL);
  ASSERT_ERR(mp_list_extend(l, &vo, 1), MP_EINVAL);
  ASSERT_ERR(mp_list_insert(l, 0, &vo), MP_EINVAL);
  ASSERT_ERR(mp_list_set_slice(l, 0, 0, 1, &vo, 1), MP_EINVAL);
  mp_val_t out;
  ASSERT_ERR(mp_dict_setdefault(d, &k, &vo, &out), MP_EINVAL);
  ASSERT_ERR(mp_dict_get_default(d, &k, &vo, &out), MP_EINVAL);
  /* A reference is not a key. */
  mp_val_t vl = mp_val_list(l), one = mp_val_int(1);
  ASSERT_ERR(mp_dict_set(d, &vl, &one), MP_EINVAL);
  ASSERT_ERR(mp_dict_get(d, &vl, &out), MP_EINVAL);
  /* update from another manager whose values refer to its own objects:
   * refused, unchanged. */
  mp_val_t ok = mp_val_int(5), k2 = mp_val_str("z");
  ASSERT_OK(mp_dict_set(od, &k2, &ok));
  ASSERT_OK(mp_dict_set(od, &k, &vo));
  ASSERT_ERR(mp_dict_update(d, od), MP_EINVAL);
  size_t n;
  ASSERT_OK(mp_dict_len(d, &n));
  ASSERT_EQ(n, 0);
  ASSERT_OK(mp_dict_del(od, &k));
  ASSERT_OK(mp_dict_update(d, od)); /* scalars only: fine */
  ASSERT_OK(mp_dict_len(d, &n));
  ASSERT_EQ(n, 1);
  ASSERT_OK(mp_list_len(l, &n));
  ASSERT_EQ(n, 0);
  ASSERT_OK(mp_dict_close(d));
  ASSERT_OK(mp_list_close(l));
  ASSERT_OK(mp_dict_close(od));
  ASSERT_OK(mp_list_close(ol));
  ASSERT_OK(mp_manager_destroy(m));
  ASSERT_OK(mp_manager_destroy(other));
}

/* The stored reference of list `l` in the arena: its sval (type MP_LIST,
 * pay = id), found by value (the only such pair in this test's arena). */
static sval_t *find_ref(mp_manager_t *m, uint32_t type, uint32_t id) {
  uint64_t lo = mp__arena_root(&m->a) + sizeof(mgr_root_t);
  uint64_t hi = mp__arena_used(&m->a);
  sval_t *found = NULL;
  for (uint64_t off = (lo + 15) & ~15ull; off + 16 <= hi; off += 16) {
    sval_t *s = mgr_ptr(&m->a, off);
    if (s->tl == type && s->pay == id) {
      ASSERT(found == NULL);
      found = s;
    }
  }
  ASSERT(found != NULL);
  return found;
}

/* A stored reference is checked when read: an id past the directory, an id
 * of another kind, a directory entry or object header that disagrees, a
 * length where none belongs: MP_EPROTO from every call that follows it,
 * never a crash; repr does not follow references and still works. */
TEST(nested_corrupt_reference_eproto) {
  mp_manager_t *m = new_manager();
  mp_list_t *outer, *inner;
  mp_dict_t *other;
  ASSERT_OK(mp_list_create(&outer, m, NULL)); /* id 0 */
  ASSERT_OK(mp_list_create(&inner, m, NULL)); /* id 1 */
  ASSERT_OK(mp_dict_create(&other, m, NULL)); /* id 2 */
  append_int(inner, 42);
  mp_val_t vi = mp_val_list(inner);
  ASSERT_OK(mp_list_append(outer, &vi));
  sval_t *s = find_ref(m, MP_LIST, 1);
  mgr_root_t *root = m->root;
  mgr_obj_t *io = mgr_ptr(&m->a, root->dir[1].off);
  struct {
    void *word; /* 8 bytes, written with memcpy */
    uint64_t bad;
  } cases[] = {
      {&s->pay, 3},                       /* past the directory */
      {&s->pay, 2},                       /* a dict's id */
      {&s->pay, (uint64_t)MGR_MAX_OBJ},   /* past any directory */
      {&s->pay, UINT64_MAX},              /* absurd */
      {&s->tl, MP_LIST | (5u << 8)},      /* a length on a reference */
      {&s->tl, MP_DICT},                  /* the list called a dict */
      {&root->dir[1].kind, MGR_KIND_DICT}, /* entry's kind */
      {&root->dir[1].off, 8},             /* entry outside the objects */
      {&root->dir[1].off, mp__arena_used(&m->a) + 4096},
      {&io->kind, MGR_KIND_DICT | (uint64_t)1 << 32}, /* header */
      {&io->kind, MGR_KIND_LIST | (uint64_t)7 << 32}, /* its id */
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    uint64_t save;
    memcpy(&save, cases[c].word, 8);
    memcpy(cases[c].word, &cases[c].bad, 8);
    mp_val_t out, *vs;
    size_t n;
    ASSERT_ERR(mp_list_get(outer, 0, &out), MP_EPROTO);
    ASSERT_ERR(mp_list_items(outer, &vs, &n), MP_EPROTO);
    ASSERT_ERR(mp_list_pop(outer, 0, &out), MP_EPROTO);
    ASSERT_OK(mp_list_len(outer, &n));
    ASSERT_EQ(n, 1); /* the failed pop changed nothing */
    char *str;
    ASSERT_OK(mp_list_repr(outer, &str));
    free(str);
    memcpy(cases[c].word, &save, 8);
    ASSERT_OK(mp_list_get(outer, 0, &out));
    ASSERT_EQ(out.type, MP_LIST);
    mp_val_t x;
    ASSERT_OK(mp_list_get(out.u.list, 0, &x));
    ASSERT_EQ(x.u.i, 42);
    mp_val_free(&out);
  }
  ASSERT_OK(mp_list_close(outer));
  ASSERT_OK(mp_list_close(inner));
  ASSERT_OK(mp_dict_close(other));
  ASSERT_OK(mp_manager_destroy(m));
}

/* ---- namespace ------------------------------------------------------------
 */

TEST(namespace_basic) {
  mp_manager_t *m = new_manager();
  mp_namespace_t *ns;
  ASSERT_OK(mp_namespace_create(&ns, m, &(mp_namespace_opts_t){.name = "ns"}));
  ASSERT_REPR(mp_namespace_repr, ns, "Namespace()");
  mp_val_t one = mp_val_int(1), x = mp_val_str("x"), out;
  ASSERT_OK(mp_namespace_set(ns, "b", &x));
  ASSERT_OK(mp_namespace_set(ns, "a", &one));
  ASSERT_OK(mp_namespace_set(ns, "ab", &one));
  /* Sorted as Python sorts "name=value" strings. */
  ASSERT_REPR(mp_namespace_repr, ns, "Namespace(a=1, ab=1, b='x')");
  ASSERT_OK(mp_namespace_get(ns, "b", &out));
  ASSERT_EQ(out.type, MP_STR);
  ASSERT_STR_EQ(out.u.s, "x");
  mp_val_free(&out);
  bool found;
  ASSERT_OK(mp_namespace_has(ns, "a", &found));
  ASSERT(found);
  ASSERT_OK(mp_namespace_del(ns, "a"));
  ASSERT_OK(mp_namespace_has(ns, "a", &found));
  ASSERT(!found);
  /* AttributeError */
  ASSERT_ERR(mp_namespace_get(ns, "a", &out), MP_ENOENT);
  ASSERT_ERR(mp_namespace_del(ns, "a"), MP_ENOENT);
  /* Bad names and arguments. */
  ASSERT_ERR(mp_namespace_set(ns, "_private", &one), MP_EINVAL);
  ASSERT_ERR(mp_namespace_set(ns, "", &one), MP_EINVAL);
  ASSERT_ERR(mp_namespace_set(ns, NULL, &one), MP_EINVAL);
  ASSERT_ERR(mp_namespace_set(ns, "a", NULL), MP_EINVAL);
  ASSERT_ERR(mp_namespace_set(NULL, "a", &one), MP_EINVAL);
  ASSERT_ERR(mp_namespace_get(ns, "a", NULL), MP_EINVAL);
  ASSERT_ERR(mp_namespace_get(NULL, "a", &out), MP_EINVAL);
  ASSERT_ERR(mp_namespace_has(ns, "a", NULL), MP_EINVAL);
  ASSERT_ERR(mp_namespace_has(ns, "_a", &found), MP_EINVAL);
  ASSERT_ERR(mp_namespace_del(ns, "_a"), MP_EINVAL);
  ASSERT_ERR(mp_namespace_del(NULL, "a"), MP_EINVAL);
  ASSERT_ERR(mp_namespace_repr(ns, NULL), MP_EINVAL);
  char *s;
  ASSERT_ERR(mp_namespace_repr(NULL, &s), MP_EINVAL);
  ASSERT_ERR(mp_namespace_create(NULL, m, NULL), MP_EINVAL);
  mp_namespace_t *ns2;
  ASSERT_ERR(mp_namespace_create(&ns2, NULL, NULL), MP_EINVAL);
  ASSERT_ERR(mp_namespace_create(&ns2, m, &(mp_namespace_opts_t){.name = "ns"}),
             MP_EEXIST);
  ASSERT_ERR(mp_namespace_open(&ns2, m, "nope"), MP_ENOENT);
  ASSERT_ERR(mp_namespace_open(&ns2, m, NULL), MP_EINVAL);
  ASSERT_ERR(mp_namespace_open_id(&ns2, m, 99), MP_ENOENT);
  uint32_t id;
  ASSERT_ERR(mp_namespace_id(NULL, &id), MP_EINVAL);
  ASSERT_ERR(mp_namespace_id(ns, NULL), MP_EINVAL);
  ASSERT_ERR(mp_namespace_close(NULL), MP_EINVAL);
  /* Kinds do not mix: a namespace is not a dict, nor the other way. */
  ASSERT_OK(mp_namespace_id(ns, &id));
  mp_dict_t *d;
  ASSERT_ERR(mp_dict_open_id(&d, m, id), MP_EINVAL);
  ASSERT_ERR(mp_dict_open(&d, m, "ns"), MP_EINVAL);
  ASSERT_OK(mp_dict_create(&d, m, &(mp_dict_opts_t){.name = "d"}));
  ASSERT_ERR(mp_namespace_open(&ns2, m, "d"), MP_EINVAL);
  ASSERT_ERR(mp_namespace_open_id(&ns2, m, dict_id(d)), MP_EINVAL);
  ASSERT_ERR(mp_namespace_set((mp_namespace_t *)d, "a", &one), MP_EINVAL);
  ASSERT_ERR(mp_dict_set((mp_dict_t *)ns, &x, &one), MP_EINVAL);
  /* Any value, a reference too; repr shows references as Python does. */
  mp_val_t vd = mp_val_dict(d);
  ASSERT_OK(mp_namespace_set(ns, "d", &vd));
  ASSERT_REPR(mp_namespace_repr, ns,
              "Namespace(ab=1, b='x', d=<DictProxy object, typeid 'dict' at "
              "0x1>)");
  ASSERT_OK(mp_namespace_get(ns, "d", &out));
  ASSERT_EQ(out.type, MP_DICT);
  ASSERT_OK(mp_dict_set(out.u.dict, &x, &one));
  mp_val_free(&out);
  ASSERT_REPR(mp_dict_repr, d, "{'x': 1}");
  ASSERT_OK(mp_namespace_open(&ns2, m, "ns"));
  ASSERT_OK(mp_namespace_get(ns2, "ab", &out));
  ASSERT_EQ(out.u.i, 1);
  ASSERT_OK(mp_namespace_close(ns2));
  ASSERT_OK(mp_dict_close(d));
  ASSERT_OK(mp_namespace_close(ns));
  ASSERT_OK(mp_manager_destroy(m));
}

TEST(namespace_across_processes) {
  mp_manager_t *m = new_manager();
  mp_namespace_t *ns;
  const char *name;
  ASSERT_OK(mp_manager_name(m, &name));
  ASSERT_OK(mp_namespace_create(&ns, m, &(mp_namespace_opts_t){.name = "ns"}));
  mp_val_t zero = mp_val_int(0);
  ASSERT_OK(mp_namespace_set(ns, "forked", &zero));
  pid_t pid = fork();
  if (pid == 0) {
    mp_val_t v = mp_val_int(getpid());
    ASSERT_OK(mp_namespace_set(ns, "forked", &v));
    _exit(0);
  }
  mpt_wait_ok(pid);
  mp_val_t out;
  ASSERT_OK(mp_namespace_get(ns, "forked", &out));
  ASSERT_EQ(out.u.i, pid);
  pid_t pid2 = fork();
  if (pid2 == 0) {
    mp_manager_t *m2;
    mp_namespace_t *ns2;
    ASSERT_OK(mp_manager_open(&m2, name));
    ASSERT_OK(mp_namespace_open(&ns2, m2, "ns"));
    mp_val_t v = mp_val_str("by name"), got;
    ASSERT_OK(mp_namespace_get(ns2, "forked", &got));
    ASSERT_EQ(got.u.i, pid);
    ASSERT_OK(mp_namespace_set(ns2, "opened", &v));
    ASSERT_OK(mp_namespace_del(ns2, "forked"));
    ASSERT_OK(mp_namespace_close(ns2));
    ASSERT_OK(mp_manager_destroy(m2));
    _exit(0);
  }
  mpt_wait_ok(pid2);
  ASSERT_REPR(mp_namespace_repr, ns, "Namespace(opened='by name')");
  ASSERT_OK(mp_namespace_close(ns));
  ASSERT_OK(mp_manager_destroy(m));
}

/* ---- crashes: SIGKILL mid-update, CPU hog, 1 ms signal storm --------------
 * Shared state: an outer dict D whose int keys k map to a reference to
 * inner list k % NI, inner lists holding only their own number, a list R of
 * references to inner lists, a namespace whose attribute "a<i>" is a
 * reference to inner list i or the int i, and per worker slot a sequence
 * list (D[1000 + slot]) it appends 1, 2, 3... to through a reference it
 * reads from D, recording in shared memory the last append acknowledged. */

#define NI 8
#define SLOTS 3

typedef struct {
  _Atomic int stop;
  _Atomic long acked[SLOTS];
  _Atomic long ops;
} ctl_t;

typedef struct {
  mp_manager_t *m;
  mp_dict_t *d;
  mp_list_t *r;
  mp_namespace_t *ns;
  mp_list_t *inner[NI];
  uint32_t inner_id[NI];
  ctl_t *ctl;
} world_t;

static void world_make(world_t *w) {
  w->m = new_manager();
  ASSERT_OK(mp_dict_create(&w->d, w->m, NULL));
  ASSERT_OK(mp_list_create(&w->r, w->m, NULL));
  ASSERT_OK(mp_namespace_create(&w->ns, w->m, NULL));
  for (int i = 0; i < NI; i++) {
    ASSERT_OK(mp_list_create(&w->inner[i], w->m, NULL));
    w->inner_id[i] = list_id(w->inner[i]);
  }
  for (int s = 0; s < SLOTS; s++) {
    mp_list_t *seq;
    ASSERT_OK(mp_list_create(&seq, w->m, NULL));
    mp_val_t k = mp_val_int(1000 + s), v = mp_val_list(seq);
    ASSERT_OK(mp_dict_set(w->d, &k, &v));
    ASSERT_OK(mp_list_close(seq));
  }
  w->ctl = mmap(NULL, sizeof *w->ctl, PROT_READ | PROT_WRITE,
                MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT(w->ctl != MAP_FAILED);
  memset(w->ctl, 0, sizeof *w->ctl);
}

static void world_drop(world_t *w) {
  for (int i = 0; i < NI; i++)
    ASSERT_OK(mp_list_close(w->inner[i]));
  ASSERT_OK(mp_dict_close(w->d));
  ASSERT_OK(mp_list_close(w->r));
  ASSERT_OK(mp_namespace_close(w->ns));
  ASSERT_OK(mp_manager_destroy(w->m));
  munmap(w->ctl, sizeof *w->ctl);
}

/* Calls here may fail only as the state allows (a missing key, an empty
 * list); a corrupt structure would show as MP_EPROTO or a wrong type, which
 * the final check catches. */
static void nested_op(world_t *w, unsigned *seed) {
  unsigned r = (unsigned)rand_r(seed);
  int64_t k = (int64_t)((r >> 8) % 64);
  int i = (int)(k % NI);
  mp_val_t key = mp_val_int(k), ref = mp_val_list(w->inner[i]), out;
  switch (r % 9) {
  case 0:
    mp_dict_set(w->d, &key, &ref);
    break;
  case 1:
    if (mp_dict_get(w->d, &key, &out) == 0) {
      mp_val_t v = mp_val_int(i);
      if (out.type == MP_LIST)
        mp_list_append(out.u.list, &v);
      mp_val_free(&out);
    }
    break;
  case 2:
    mp_dict_del(w->d, &key);
    break;
  case 3:
    mp_list_append(w->r, &ref);
    break;
  case 4:
    if (mp_list_pop(w->r, 0, &out) == 0)
      mp_val_free(&out);
    break;
  case 5: {
    char attr[8];
    snprintf(attr, sizeof attr, "a%d", i);
    mp_val_t iv = mp_val_int(i);
    mp_namespace_set(w->ns, attr, r & 0x100 ? &ref : &iv);
    break;
  }
  case 6:
    if (mp_dict_setdefault(w->d, &key, &ref, &out) == 0)
      mp_val_free(&out);
    break;
  case 7: { /* keep the inner lists short */
    size_t n;
    if (mp_list_len(w->inner[i], &n) == 0 && n > 50)
      mp_list_del_slice(w->inner[i], 0, 40, 1);
    break;
  }
  default: {
    mp_val_t vals[3] = {ref, mp_val_list(w->inner[(i + 1) % NI]), ref};
    mp_list_extend(w->r, vals, 3);
    size_t n;
    if (mp_list_len(w->r, &n) == 0 && n > 60)
      mp_list_del_slice(w->r, 0, 30, 1);
    break;
  }
  }
}

/* The sequence list of slot s, read through D: 1, 2, ... n in order. */
static mp_list_t *seq_list(world_t *w, int s) {
  mp_val_t k = mp_val_int(1000 + s), v;
  ASSERT_OK(mp_dict_get(w->d, &k, &v));
  ASSERT_EQ(v.type, MP_LIST);
  return v.u.list;
}

/* A worker: append the next sequence number through the reference, then
 * acknowledge it; mixed operations in between. */
static void worker(world_t *w, int s) {
  mp_list_t *seq = seq_list(w, s);
  mp_val_t last;
  int64_t next = 1;
  if (mp_list_get(seq, -1, &last) == 0)
    next = last.u.i + 1; /* a killed predecessor may have appended unacked */
  unsigned seed = (unsigned)getpid();
  while (!atomic_load(&w->ctl->stop)) {
    mp_val_t v = mp_val_int(next);
    ASSERT_OK(mp_list_append(seq, &v));
    atomic_store(&w->ctl->acked[s], next);
    next++;
    for (int j = 0; j < 4; j++)
      nested_op(w, &seed);
    atomic_fetch_add(&w->ctl->ops, 5);
  }
  mp_list_close(seq);
}

static void world_check(world_t *w) {
  mp_val_t *ks, *vs;
  size_t n;
  ASSERT_OK(mp_dict_items(w->d, &ks, &vs, &n));
  for (size_t j = 0; j < n; j++) {
    ASSERT_EQ(ks[j].type, MP_INT);
    ASSERT_EQ(vs[j].type, MP_LIST);
    if (ks[j].u.i < 1000)
      ASSERT_EQ(list_id(vs[j].u.list), w->inner_id[ks[j].u.i % NI]);
  }
  mp_vals_free(ks, n);
  mp_vals_free(vs, n);
  for (int i = 0; i < NI; i++) {
    ASSERT_OK(mp_list_items(w->inner[i], &vs, &n));
    for (size_t j = 0; j < n; j++) {
      ASSERT_EQ(vs[j].type, MP_INT);
      ASSERT_EQ(vs[j].u.i, i);
    }
    mp_vals_free(vs, n);
  }
  ASSERT_OK(mp_list_items(w->r, &vs, &n));
  for (size_t j = 0; j < n; j++) {
    ASSERT_EQ(vs[j].type, MP_LIST);
    bool known = false;
    for (int i = 0; i < NI; i++)
      known |= list_id(vs[j].u.list) == w->inner_id[i];
    ASSERT(known);
  }
  mp_vals_free(vs, n);
  for (int i = 0; i < NI; i++) {
    char attr[8];
    snprintf(attr, sizeof attr, "a%d", i);
    mp_val_t v;
    int r = mp_namespace_get(w->ns, attr, &v);
    if (r == MP_ENOENT)
      continue;
    ASSERT_OK(r);
    if (v.type == MP_INT)
      ASSERT_EQ(v.u.i, i);
    else
      ASSERT(v.type == MP_LIST && list_id(v.u.list) == w->inner_id[i]);
    mp_val_free(&v);
  }
  char *s;
  ASSERT_OK(mp_namespace_repr(w->ns, &s));
  free(s);
  /* Nothing acknowledged is lost, nothing is there twice. */
  for (int s2 = 0; s2 < SLOTS; s2++) {
    long acked = atomic_load(&w->ctl->acked[s2]); /* before the snapshot */
    mp_list_t *seq = seq_list(w, s2);
    ASSERT_OK(mp_list_items(seq, &vs, &n));
    ASSERT((long)n >= acked);
    for (size_t j = 0; j < n; j++)
      ASSERT_EQ(vs[j].u.i, (int64_t)j + 1);
    mp_vals_free(vs, n);
    ASSERT_OK(mp_list_close(seq));
  }
}

static pid_t spawn_worker(world_t *w, int s) {
  pid_t pid = fork();
  if (pid == 0) {
    mpt_storm_start(1000, false); /* SIGALRM every 1 ms, no SA_RESTART */
    worker(w, s);
    _exit(0);
  }
  ASSERT(pid > 0);
  return pid;
}

TEST(nested_sigkill_under_hog_and_storm) {
  world_t w;
  world_make(&w);
  pid_t hog = mpt_hog_start();
  pid_t pids[SLOTS];
  for (int s = 0; s < SLOTS; s++)
    pids[s] = spawn_worker(&w, s);
  unsigned seed = (unsigned)getpid();
  long kills = 0;
  uint64_t end = mpt_now_ms() + 2000;
  while (mpt_now_ms() < end) {
    usleep((useconds_t)(rand_r(&seed) % 20000));
    int s = (int)(rand_r(&seed) % SLOTS);
    kill(pids[s], SIGKILL);
    int st;
    ASSERT_EQ(waitpid(pids[s], &st, 0), pids[s]);
    kills++;
    if (kills % 16 == 0)
      world_check(&w); /* while the others run */
    pids[s] = spawn_worker(&w, s);
  }
  atomic_store(&w.ctl->stop, 1);
  for (int s = 0; s < SLOTS; s++)
    mpt_wait_ok(pids[s]);
  mpt_hog_stop(hog);
  ASSERT(kills > 0);
  ASSERT(atomic_load(&w.ctl->ops) > 0);
  world_check(&w);
  world_drop(&w);
}

/* A child killed at a random logged write of a nested operation, hundreds
 * of times: the structures are always as before or after the call. */
static long countdown;
static void kill_hook(void) {
  if (--countdown == 0)
    raise(SIGKILL);
}

TEST(nested_sigkill_mid_operation_rounds) {
  world_t w;
  world_make(&w);
  unsigned seed = 4242;
  for (int round = 0; round < 300; round++) {
    long c = 1 + rand_r(&seed) % 200;
    pid_t pid = fork();
    if (pid == 0) {
      countdown = c;
      mp__manager_write_hook = kill_hook;
      worker(&w, round % SLOTS);
      _exit(0);
    }
    int st;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    if (round % 20 == 0)
      world_check(&w);
  }
  world_check(&w);
  world_drop(&w);
}
