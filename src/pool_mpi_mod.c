/* MPI backend: the table of loaded modules (main program and shared
 * libraries) with their GNU build-ids, so that a task function pointer of
 * the root can be named as (module, offset) and found again on a rank whose
 * program is loaded at other addresses, and so that ranks running different
 * binaries are refused instead of jumping into the wrong code. */
#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <stdlib.h>
#include <string.h>

#include "pool_mpi.h"

/* Copy the NT_GNU_BUILD_ID note of a loaded module (our own memory: the
 * note's sizes are still checked against the segment). */
static void read_build_id(struct dl_phdr_info *info, mp__mod_t *m) {
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_NOTE)
      continue;
    const uint8_t *p = (const uint8_t *)(info->dlpi_addr + ph->p_vaddr);
    size_t left = ph->p_memsz;
    while (left >= sizeof(ElfW(Nhdr))) {
      const ElfW(Nhdr) *nh = (const ElfW(Nhdr) *)(const void *)p;
      size_t nsz = (nh->n_namesz + 3) & ~(size_t)3;
      size_t dsz = (nh->n_descsz + 3) & ~(size_t)3;
      size_t rec = sizeof *nh + nsz + dsz;
      if (rec > left)
        break;
      const char *name = (const char *)(p + sizeof *nh);
      if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 &&
          memcmp(name, "GNU", 4) == 0 && nh->n_descsz > 0 &&
          nh->n_descsz <= sizeof m->id) {
        memcpy(m->id, p + sizeof *nh + nsz, nh->n_descsz);
        m->id_len = nh->n_descsz;
        return;
      }
      p += rec;
      left -= rec;
    }
  }
}

static int add_module(struct dl_phdr_info *info, size_t size, void *arg) {
  (void)size;
  mp__mods_t *t = arg;
  mp__mod_t *nm = realloc(t->m, (t->n + 1) * sizeof *nm);
  if (!nm)
    return -1;
  t->m = nm;
  mp__mod_t *m = &t->m[t->n];
  memset(m, 0, sizeof *m);
  m->name = strdup(info->dlpi_name ? info->dlpi_name : "");
  if (!m->name)
    return -1;
  m->base = (uintptr_t)info->dlpi_addr;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type == PT_LOAD && ph->p_vaddr + ph->p_memsz > m->extent)
      m->extent = ph->p_vaddr + ph->p_memsz;
  }
  read_build_id(info, m);
  t->n++;
  return 0;
}

void mp__mods_free(mp__mods_t *t) {
  for (size_t i = 0; i < t->n; i++)
    free(t->m[i].name);
  free(t->m);
  t->m = NULL;
  t->n = 0;
}

int mp__mods_load(mp__mods_t *t) {
  t->m = NULL;
  t->n = 0;
  if (dl_iterate_phdr(add_module, t) != 0 || t->n == 0) {
    mp__mods_free(t);
    return MP_ENOMEM;
  }
  return 0;
}

static const char *base_name(const char *path) {
  const char *s = strrchr(path, '/');
  return s ? s + 1 : path;
}

/* Packed table: u32 count, then per module u32 id_len, id, u32 name_len,
 * name (the base name: paths may differ between nodes). */
int mp__mods_pack(const mp__mods_t *t, uint8_t **out, size_t *len) {
  size_t n = 4;
  for (size_t i = 0; i < t->n; i++)
    n += 8 + t->m[i].id_len + strlen(base_name(t->m[i].name));
  uint8_t *b = malloc(n), *p = b;
  if (!b)
    return MP_ENOMEM;
  uint32_t c = (uint32_t)t->n;
  memcpy(p, &c, 4), p += 4;
  for (size_t i = 0; i < t->n; i++) {
    const char *nm = base_name(t->m[i].name);
    uint32_t nl = (uint32_t)strlen(nm);
    memcpy(p, &t->m[i].id_len, 4), p += 4;
    memcpy(p, t->m[i].id, t->m[i].id_len), p += t->m[i].id_len;
    memcpy(p, &nl, 4), p += 4;
    memcpy(p, nm, nl), p += nl;
  }
  *out = b;
  *len = n;
  return 0;
}

/* Read a u32 and n bytes from [*p, end), bounded. */
static bool take(const uint8_t **p, const uint8_t *end, const uint8_t **data,
                 uint32_t *n) {
  if ((size_t)(end - *p) < 4)
    return false;
  memcpy(n, *p, 4);
  *p += 4;
  if ((size_t)(end - *p) < *n)
    return false;
  *data = *p;
  *p += *n;
  return true;
}

int mp__mods_match(const mp__mods_t *ours, const uint8_t *buf, size_t len,
                   int32_t **map, size_t *n) {
  const uint8_t *p = buf, *end = buf + len;
  uint32_t count;
  if (len < 4)
    return MP_EIO;
  memcpy(&count, p, 4);
  p += 4;
  if (count == 0 || count > len / 8)
    return MP_EIO;
  int32_t *m = malloc(count * sizeof *m);
  if (!m)
    return MP_ENOMEM;
  int err = 0;
  for (uint32_t i = 0; i < count && !err; i++) {
    const uint8_t *id, *name;
    uint32_t id_len, name_len;
    if (!take(&p, end, &id, &id_len) || !take(&p, end, &name, &name_len) ||
        id_len > 64) {
      err = MP_EIO;
      break;
    }
    m[i] = -1;
    for (size_t k = 0; k < ours->n; k++) {
      const mp__mod_t *o = &ours->m[k];
      const char *on = base_name(o->name);
      bool same_name = strlen(on) == name_len && !memcmp(on, name, name_len);
      bool same_id = o->id_len == id_len && !memcmp(o->id, id, id_len);
      /* The main program (first in both tables) has no name to compare. */
      if (i == 0 || k == 0) {
        if (i == 0 && k == 0) {
          if (!same_id || id_len == 0)
            err = MP_EBINARY;
          m[i] = 0;
        }
        continue;
      }
      if (id_len ? same_id : (o->id_len == 0 && same_name)) {
        m[i] = (int32_t)k;
        break;
      }
      if (same_name && id_len && o->id_len && !same_id)
        err = MP_EBINARY; /* e.g. another build of libmproc.so */
    }
  }
  if (err) {
    free(m);
    return err;
  }
  *map = m;
  *n = count;
  return 0;
}

int mp__mods_locate(const mp__mods_t *t, const void *addr, uint32_t *mod,
                    uint64_t *off) {
  Dl_info di;
  uintptr_t a = (uintptr_t)addr;
  uintptr_t base = dladdr(addr, &di) ? (uintptr_t)di.dli_fbase : 0;
  /* dladdr's dli_fbase is the address of the first mapping, dlpi_addr the
   * load bias: they agree for shared objects and PIE programs; the range
   * check covers the rest. */
  for (int pass = 0; pass < 2; pass++)
    for (size_t i = 0; i < t->n; i++) {
      const mp__mod_t *m = &t->m[i];
      if (a < m->base || a - m->base >= m->extent)
        continue;
      if (pass == 0 && m->base != base)
        continue;
      *mod = (uint32_t)i;
      *off = a - m->base;
      return 0;
    }
  return MP_EINVAL;
}
