/* Namespace (Python's manager.Namespace()): a dict of its own kind whose
 * keys are attribute names. Every call runs the dict's code on a dict view
 * of the handle, so it is as atomic and crash-safe as the dict. */
#include <stdlib.h>
#include <string.h>

#include "manager_impl.h"

static int ns_handle_check(const mp_namespace_t *ns) {
  return ns && ns->h.m && ns->h.kind == MGR_KIND_NS ? 0 : MP_EINVAL;
}

/* A local namespace (a Redis manager has none) seen as a dict in *tmp. */
static int ns_dict(const mp_namespace_t *ns, mp_dict_t *tmp) {
  if (ns_handle_check(ns) < 0)
    return MP_EINVAL;
  if (ns->h.m->redis)
    return MP_ENOTSUP;
  tmp->h = ns->h;
  tmp->h.kind = MGR_KIND_DICT;
  return 0;
}

/* An attribute name: a non-empty string not starting with '_' (Python keeps
 * those on the local proxy object), as a string key in *key. */
static int ns_key(const char *attr, mp_val_t *key) {
  if (!attr || !*attr || *attr == '_')
    return MP_EINVAL;
  *key = mp_val_str(attr);
  return 0;
}

/* ns_dict and ns_key at once. */
static int ns_begin(const mp_namespace_t *ns, const char *attr,
                    mp_dict_t *tmp, mp_val_t *key) {
  int r = ns_dict(ns, tmp);
  return r < 0 ? r : ns_key(attr, key);
}

static int ns_handle(mp_namespace_t **ns, mp_manager_t *m, const char *name,
                     int how, uint32_t id) {
  if (m && m->redis)
    return MP_ENOTSUP; /* not on Redis (yet) */
  return mp__mgr_handle_make(m, MGR_KIND_NS, mp__dict_shm_size(), name, how,
                             id, (mgr_handle_t **)ns);
}

int mp_namespace_create(mp_namespace_t **ns, mp_manager_t *m,
                        const mp_namespace_opts_t *opts) {
  return ns_handle(ns, m, opts ? opts->name : NULL, MGR_CREATE, 0);
}

int mp_namespace_open(mp_namespace_t **ns, mp_manager_t *m,
                      const char *name) {
  return ns_handle(ns, m, name, MGR_BY_NAME, 0);
}

int mp_namespace_open_id(mp_namespace_t **ns, mp_manager_t *m, uint32_t id) {
  return ns_handle(ns, m, NULL, MGR_BY_ID, id);
}

int mp_namespace_id(const mp_namespace_t *ns, uint32_t *id) {
  if (ns_handle_check(ns) < 0 || !id)
    return MP_EINVAL;
  *id = ns->h.id;
  return 0;
}

int mp_namespace_close(mp_namespace_t *ns) {
  if (ns_handle_check(ns) < 0)
    return MP_EINVAL;
  free(ns);
  return 0;
}

int mp_namespace_set(mp_namespace_t *ns, const char *attr,
                     const mp_val_t *val) {
  mp_dict_t d;
  mp_val_t key;
  int r = ns_begin(ns, attr, &d, &key);
  return r < 0 ? r : mp_dict_set(&d, &key, val);
}

int mp_namespace_get(mp_namespace_t *ns, const char *attr, mp_val_t *out) {
  mp_dict_t d;
  mp_val_t key;
  int r = ns_begin(ns, attr, &d, &key);
  return r < 0 ? r : mp_dict_get(&d, &key, out);
}

int mp_namespace_has(mp_namespace_t *ns, const char *attr, bool *found) {
  mp_dict_t d;
  mp_val_t key;
  int r = ns_begin(ns, attr, &d, &key);
  return r < 0 ? r : mp_dict_contains(&d, &key, found);
}

int mp_namespace_del(mp_namespace_t *ns, const char *attr) {
  mp_dict_t d;
  mp_val_t key;
  int r = ns_begin(ns, attr, &d, &key);
  return r < 0 ? r : mp_dict_del(&d, &key);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Python's Namespace.__repr__: "name=repr(value)" for each attribute,
 * sorted as strings (byte order of UTF-8 is code point order), joined. */
int mp_namespace_repr(mp_namespace_t *ns, char **out) {
  mp_dict_t d;
  mp_val_t *ks = NULL, *vs = NULL;
  size_t n = 0;
  int r = ns_dict(ns, &d);
  if (r < 0 || !out)
    return r < 0 ? r : MP_EINVAL;
  if ((r = mp_dict_items(&d, &ks, &vs, &n)) < 0)
    return r;
  char **items = n ? calloc(n, sizeof *items) : NULL;
  if (n && !items)
    r = MP_ENOMEM;
  for (size_t i = 0; i < n && r == 0; i++) {
    sbuf_t b = {0};
    char *v = NULL;
    if (ks[i].type != MP_STR) {
      r = MP_EPROTO; /* only set() writes here, with string keys */
      break;
    }
    mp__sb_put(&b, ks[i].u.s, ks[i].len);
    mp__sb_put(&b, "=", 1);
    if ((r = mp_val_repr(&vs[i], &v)) == 0)
      mp__sb_puts(&b, v);
    free(v);
    if (r < 0) {
      free(b.p);
      break;
    }
    r = mp__sb_finish(&b, &items[i]); /* frees b on error */
  }
  sbuf_t b = {0};
  if (r == 0) {
    if (n > 1)
      qsort(items, n, sizeof *items, cmp_str);
    mp__sb_puts(&b, "Namespace(");
    for (size_t i = 0; i < n; i++) {
      if (i)
        mp__sb_put(&b, ", ", 2);
      mp__sb_puts(&b, items[i]);
    }
    mp__sb_put(&b, ")", 1);
    r = mp__sb_finish(&b, out);
  }
  for (size_t i = 0; items && i < n; i++)
    free(items[i]);
  free(items);
  mp_vals_free(ks, n);
  mp_vals_free(vs, n);
  return r;
}
