/* Fuzz target: a manager opened from arbitrary arena bytes, then read.
 * The input is three parts laid into a 4 MiB object: 512 bytes of arena
 * header, 512 bytes of the manager's root (its head and first directory
 * entries), and the rest where the first allocations of a new manager go.
 * Magics are stamped and lock words freed so the bytes reach the checks
 * behind them; mp_manager_open must refuse the object or every dict, list
 * and namespace read must stay inside it, and a stored reference (nested
 * container) must be refused (MP_EPROTO) or name a real object, which is
 * then read through the handle the read returned. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "manager_impl.h"
#include "fuzz_common.h"
#include "mproc.h"

#define OBJ_SIZE ((size_t)4 << 20)
#define HDR_PART 512
#define ROOT_PART 512
#define ARENA_MAGIC_V 0x6d702d6172656e61ull
#define ROOT_OFF 4096
#define DATA_OFF ((ROOT_OFF + sizeof(mgr_root_t) + 63) / 64 * 64)

/* MP_FUZZ_SEED=path: write a real manager, in the input layout, as seed. */
static void write_seed(const char *path) {
  mp_manager_t *m;
  mp_dict_t *d;
  mp_list_t *l;
  if (mp_manager_create(&m, &(mp_manager_opts_t){.reserve = OBJ_SIZE}) < 0 ||
      mp_dict_create(&d, m, &(mp_dict_opts_t){.name = "d"}) < 0 ||
      mp_list_create(&l, m, NULL) < 0)
    abort();
  char longs[100];
  memset(longs, 'x', sizeof longs);
  for (int i = 0; i < 6; i++) {
    mp_val_t k = mp_val_int(i), v = mp_val_strn(longs, (size_t)i * 17);
    mp_dict_set(d, &k, &v);
    mp_val_t b = mp_val_bytes(longs, (size_t)i * 5), f = mp_val_double(i);
    mp_list_append(l, i % 2 ? &b : &f);
  }
  mp_val_t k = mp_val_str("a"), v = mp_val_bool(true);
  mp_dict_set(d, &k, &v);
  /* Nested: d["l"] = l, l.append(d), ns.x = inner, inner.append(1). */
  mp_namespace_t *ns;
  mp_list_t *inner;
  if (mp_namespace_create(&ns, m, NULL) < 0 ||
      mp_list_create(&inner, m, NULL) < 0)
    abort();
  mp_val_t rl = mp_val_list(l), rd = mp_val_dict(d), ri = mp_val_list(inner);
  mp_val_t kl = mp_val_str("l"), one = mp_val_int(1);
  if (mp_dict_set(d, &kl, &rl) < 0 || mp_list_append(l, &rd) < 0 ||
      mp_namespace_set(ns, "x", &ri) < 0 || mp_list_append(inner, &one) < 0)
    abort();
  mp_namespace_close(ns);
  mp_list_close(inner);
  const char *n;
  mp_manager_name(m, &n);
  char p[128];
  snprintf(p, sizeof p, "/dev/shm%s", n);
  int in = open(p, O_RDONLY), out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  static char buf[HDR_PART + ROOT_PART + (48 << 10)];
  if (pread(in, buf, HDR_PART, 0) != HDR_PART ||
      pread(in, buf + HDR_PART, ROOT_PART, ROOT_OFF) != ROOT_PART ||
      pread(in, buf + HDR_PART + ROOT_PART, 48 << 10, DATA_OFF) != 48 << 10 ||
      write(out, buf, sizeof buf) != (ssize_t)sizeof buf)
    abort();
  close(in);
  close(out);
  mp_dict_close(d);
  mp_list_close(l);
  mp_manager_destroy(m);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  fuzz_obj_create("m");
  if (getenv("MP_FUZZ_SEED"))
    write_seed(getenv("MP_FUZZ_SEED"));
  return 0;
}

/* A reference read back: use it through its handle, only when it names one
 * of the first objects, whose locks were freed above (a lock word from the
 * input naming a live process would be a wait). */
static void read_ref(const mp_val_t *v) {
  uint32_t id = UINT32_MAX;
  size_t n;
  char *s;
  if (v->type == MP_DICT && mp_dict_id(v->u.dict, &id) == 0 && id < 4)
    mp_dict_len(v->u.dict, &n);
  else if (v->type == MP_LIST && mp_list_id(v->u.list, &id) == 0 && id < 4)
    mp_list_len(v->u.list, &n);
  else if (v->type == MP_NAMESPACE && mp_namespace_id(v->u.ns, &id) == 0 &&
           id < 4 && mp_namespace_repr(v->u.ns, &s) == 0)
    free(s);
}

static void read_dict(mp_dict_t *d) {
  size_t n;
  mp_dict_len(d, &n);
  for (int i = 0; i < 4; i++) {
    mp_val_t k = mp_val_int(i), out;
    if (mp_dict_get(d, &k, &out) == 0)
      mp_val_free(&out);
  }
  mp_val_t k = mp_val_str("a"), out;
  if (mp_dict_get(d, &k, &out) == 0)
    mp_val_free(&out);
  k = mp_val_str("l");
  if (mp_dict_get(d, &k, &out) == 0) {
    read_ref(&out);
    mp_val_free(&out);
  }
  mp_val_t *ks, *vs;
  if (mp_dict_items(d, &ks, &vs, &n) == 0) {
    for (size_t i = 0; i < n; i++)
      read_ref(&vs[i]);
    mp_vals_free(ks, n);
    mp_vals_free(vs, n);
  }
  char *s;
  if (mp_dict_repr(d, &s) == 0)
    free(s);
}

static void read_list(mp_list_t *l) {
  size_t n;
  mp_list_len(l, &n);
  mp_val_t out;
  if (mp_list_get(l, 0, &out) == 0)
    mp_val_free(&out);
  if (mp_list_get(l, -1, &out) == 0)
    mp_val_free(&out);
  mp_val_t *vs;
  if (mp_list_items(l, &vs, &n) == 0) {
    for (size_t i = 0; i < n; i++)
      read_ref(&vs[i]);
    mp_vals_free(vs, n);
  }
  char *s;
  if (mp_list_repr(l, &s) == 0)
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < HDR_PART + 64)
    return 0;
  if (ftruncate(fuzz_obj_fd, 0) < 0 || ftruncate(fuzz_obj_fd, OBJ_SIZE) < 0)
    abort();
  unsigned char *p =
      mmap(NULL, OBJ_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fuzz_obj_fd, 0);
  if (p == MAP_FAILED)
    abort();
  size_t k = size < HDR_PART ? size : HDR_PART;
  memcpy(p, data, k);
  size_t r = size - k < ROOT_PART ? size - k : ROOT_PART;
  memcpy(p + ROOT_OFF, data + k, r);
  size_t rest = size - k - r;
  if (rest > OBJ_SIZE - DATA_OFF)
    rest = OBJ_SIZE - DATA_OFF;
  memcpy(p + DATA_OFF, data + k + r, rest);
  uint64_t magic = ARENA_MAGIC_V;
  uint32_t version = 1;
  memcpy(p, &magic, 8);
  memcpy(p + 8, &version, 4);
  mgr_root_t *root = (mgr_root_t *)(void *)(p + ROOT_OFF);
  root->magic = MGR_MAGIC;
  atomic_store(&root->dir_lock.word, 0);
  /* Free the locks of the first objects (a lock word naming a live
   * process is a wait, not a fault). */
  for (int i = 0; i < 4; i++) {
    uint64_t o = root->dir[i].off;
    if (o >= ROOT_OFF && o < OBJ_SIZE - sizeof(mgr_obj_t) && !(o & 7))
      atomic_store(&((mgr_obj_t *)(void *)(p + o))->lock.word, 0);
  }
  munmap(p, OBJ_SIZE);
  mp_manager_t *m;
  if (mp_manager_open(&m, fuzz_obj_name) < 0)
    return 0;
  for (uint32_t id = 0; id < 4; id++) {
    mp_dict_t *d;
    mp_list_t *l;
    mp_namespace_t *ns;
    if (mp_dict_open_id(&d, m, id) == 0) {
      read_dict(d);
      mp_dict_close(d);
    } else if (mp_list_open_id(&l, m, id) == 0) {
      read_list(l);
      mp_list_close(l);
    } else if (mp_namespace_open_id(&ns, m, id) == 0) {
      mp_val_t out;
      char *s;
      if (mp_namespace_get(ns, "x", &out) == 0) {
        read_ref(&out);
        mp_val_free(&out);
      }
      if (mp_namespace_repr(ns, &s) == 0)
        free(s);
      mp_namespace_close(ns);
    }
  }
  mp_manager_destroy(m);
  return 0;
}
