/* The parent: walks the sources, creates destination directories up front,
 * hands entries to the workers in batches, shows progress, and finishes with
 * hard links and directory metadata (children before parents, so read-only
 * directories copy). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "mpcp.h"
#include "walk.h"

mpcp_opts_t mpcp_opt;
mpcp_root_t *mpcp_roots;
int mpcp_nroots;
bool mpcp_use_tmpfile;
uid_t mpcp_euid;
uint32_t mpcp_batch_files = MPCP_BATCH_FILES;
gid_t mpcp_egid;
uint64_t mpcp_chunk_min = MPCP_CHUNK_MIN, mpcp_chunk_size = MPCP_CHUNK_SIZE;

volatile sig_atomic_t mpcp_stop_sig;
mpcp_stats_t mpcp_stats;
mpcp_progress_t mpcp_prog;

/* ---- small vectors ------------------------------------------------------- */

typedef struct {
  int root;
  char *rel; /* destination-relative directory path ("" for the root) */
  mpcp_ent_t meta;
  bool created; /* made by us: without -a it still gets the source mode */
  bool meta_ok; /* has source metadata to apply */
} dir_rec_t;

typedef struct {
  int root_a, root_b;
  char *a, *b; /* existing copy, new name: root-relative paths */
  char *src;   /* source path of the new name (root-relative), for -v */
} link_rec_t;

typedef struct {
  uint64_t id;
  int root;
  char *dir, *name, *dname, *tmp;
  mpcp_ent_t meta;
  uint32_t flags, nchunks, next_chunk, chunks_left;
  bool failed, done;
} big_rec_t;

typedef struct {
  char *data;
  size_t len;
} blob_t;

static dir_rec_t *dirs;
static size_t ndirs, capdirs;
static link_rec_t *links;
static size_t nlinks, caplinks;
static big_rec_t *bigs;
static size_t nbigs, capbigs, bigs_pending_from;
static blob_t *verify_tasks;
static size_t nverify, capverify;
static uint64_t tasks_submitted, tasks_done, next_id = 1;
uint64_t mpcp_max_inflight = 512;
static int phase; /* 0 copy, 1 verify */
static bool worker_died;
static mode_t saved_umask;

#define GROW(arr, n, cap)                                                      \
  do {                                                                         \
    if ((n) == (cap)) {                                                        \
      size_t nc_ = (cap) ? (cap)*2 : 64;                                       \
      void *p_ = realloc((arr), nc_ * sizeof *(arr));                          \
      if (!p_) {                                                               \
        fprintf(stderr, "mpcp: out of memory\n");                              \
        exit(1);                                                               \
      }                                                                        \
      (arr) = p_;                                                              \
      (cap) = nc_;                                                             \
    }                                                                          \
  } while (0)

/* ---- hard-link map: (dev, ino) -> first destination path ----------------- */

typedef struct {
  uint64_t dev, ino;
  int root;
  char *path;
} hl_t;
static hl_t *hl;
static size_t hl_cap, hl_n;

static uint64_t hl_hash(uint64_t dev, uint64_t ino) {
  uint64_t h = ino * 0x9E3779B97F4A7C15ull ^ dev * 0xC2B2AE3D27D4EB4Full;
  return h ^ (h >> 29);
}

static hl_t *hl_find(uint64_t dev, uint64_t ino, bool insert) {
  if (insert && (hl_n + 1) * 2 > hl_cap) {
    size_t nc = hl_cap ? hl_cap * 2 : 1024;
    hl_t *n = calloc(nc, sizeof *n);
    if (!n) {
      fprintf(stderr, "mpcp: out of memory\n");
      exit(1);
    }
    for (size_t i = 0; i < hl_cap; i++) {
      if (!hl[i].path)
        continue;
      size_t j = hl_hash(hl[i].dev, hl[i].ino) & (nc - 1);
      while (n[j].path)
        j = (j + 1) & (nc - 1);
      n[j] = hl[i];
    }
    free(hl);
    hl = n;
    hl_cap = nc;
  }
  if (!hl_cap)
    return NULL;
  size_t j = hl_hash(dev, ino) & (hl_cap - 1);
  while (hl[j].path) {
    if (hl[j].dev == dev && hl[j].ino == ino)
      return &hl[j];
    j = (j + 1) & (hl_cap - 1);
  }
  if (!insert)
    return NULL;
  hl[j].dev = dev;
  hl[j].ino = ino;
  hl_n++;
  return &hl[j];
}

/* ---- messages --------------------------------------------------------------
 */

void (*mpcp_line_hook)(int kind, const char *text);

/* Names written '%s' in fmt are quoted as cp quotes them (mpcp_vformat). */
static void vline(int kind, const char *fmt, va_list ap) {
  char buf[4096];
  mpcp_vformat(buf, sizeof buf, fmt, ap);
  if (mpcp_line_hook) {
    mpcp_line_hook(kind, buf);
    return;
  }
  mpcp_progress_clear(&mpcp_prog);
  fputs(buf, stderr);
  fputc('\n', stderr);
}

void mpcp_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vline(MPCP_LINE_ERROR, fmt, ap);
  va_end(ap);
  mpcp_stats.errors++;
  mpcp_prog.errors++;
}

/* A message that does not change the exit status. */
void mpcp_warn(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vline(MPCP_LINE_WARN, fmt, ap);
  va_end(ap);
}

static void resubmit_singles(const char *task, size_t len);

/* A -v line printed by the parent (directories, hard links, big files). */
void mpcp_verbose_line(const char *src, const char *dst) {
  char *line = mpcp_verbose_text(src, dst);
  if (!line)
    return;
  if (mpcp_line_hook) {
    mpcp_line_hook(MPCP_LINE_TEXT, line);
    free(line);
    return;
  }
  mpcp_progress_clear(&mpcp_prog);
  fputs(line, mpcp_opt.json ? stderr : stdout);
  free(line);
}

/* mpcp_say_fn of the parent. */
static void psay(bool error, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void psay(bool error, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  mpcp_vformat(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (error)
    mpcp_error("%s", buf);
  else
    mpcp_warn("%s", buf);
}

void (*mpcp_msg_hook)(const mpcp_msg_t *m, const char *text, size_t len);

/* Entries the walk passed on unstat'ed (MPCP_EF_NOSTAT) that a worker
 * handed back: a file with several links (-a, for the hard-link map), or
 * the rest of a batch that had much to copy (to be spread over the workers
 * in batches of sizes known). Stat'ed here and handled as the walk handles
 * an entry; the walk counted each once already. Text: mpcp_handback_t, the
 * directory, then names each ending in '\0'. */
static void take_handback(uint64_t root, const char *text, size_t len) {
  mpcp_handback_t h;
  if (root >= (uint64_t)mpcp_nroots || len < sizeof h)
    return;
  memcpy(&h, text, sizeof h);
  if (h.dir_len > len - sizeof h || !mpcp_rel_ok(text + sizeof h, h.dir_len))
    return;
  char *dir = strndup(text + sizeof h, h.dir_len);
  size_t cap = (len - sizeof h - h.dir_len) / 2 + 1, n = 0;
  struct stat *st = malloc(cap * sizeof *st);
  char **names = malloc(cap * sizeof *names);
  bool *follow = calloc(cap, sizeof *follow);
  mpcp_root_t *r = &mpcp_roots[root];
  int sdir = dir ? mpcp_open_rel(r->src_fd, dir, O_PATH | O_DIRECTORY, 0) : -1;
  if (!dir || !st || !names || !follow)
    goto out;
  const char *p = text + sizeof h + h.dir_len, *end = text + len;
  while (p < end) {
    const char *nul = memchr(p, '\0', (size_t)(end - p));
    if (!nul || !mpcp_name_ok(p, (size_t)(nul - p)))
      break;
    if (mpcp_prog.files_total)
      mpcp_prog.files_total--;
    if (sdir < 0 || fstatat(sdir, p, &st[n], AT_SYMLINK_NOFOLLOW) < 0) {
      char *q = mpcp_join(r->src_disp, dir, p);
      mpcp_error("mpcp: cannot stat '%s': %s", q, strerror(errno));
      free(q);
    } else if (S_ISDIR(st[n].st_mode)) {
      char *q = mpcp_join(r->src_disp, dir, p);
      mpcp_error("mpcp: '%s': file changed as we read it", q);
      free(q);
    } else {
      names[n++] = (char *)p;
    }
    p = nul + 1;
  }
  if (n)
    mpcp_add_entries((int)root, dir,
                     h.flags & (MPCP_TF_SETGID_DIR | MPCP_TF_DEFACL), n, st,
                     names, names, follow);
out:
  if (sdir >= 0)
    close(sdir);
  free(dir);
  free(st);
  free(names);
  free(follow);
}

static void on_msg(const char *buf, size_t len) {
  mpcp_msg_t m;
  if (len < sizeof m)
    return;
  memcpy(&m, buf, sizeof m);
  const char *text = buf + sizeof m;
  size_t tlen = len - sizeof m;
  switch (m.kind) {
  case MPCP_M_DONE:
    tasks_done++;
    /* fall through */
  case MPCP_M_PROGRESS:
    if (phase == 0) {
      mpcp_prog.files_done += m.files;
      mpcp_prog.bytes_done += m.bytes;
      mpcp_stats.failed += m.errors;
      mpcp_stats.same += m.same; /* --resume: unchanged, not copied */
      mpcp_prog.bytes_total += m.more_bytes;
      mpcp_prog.bytes_total -= m.same_bytes < mpcp_prog.bytes_total
                                   ? m.same_bytes
                                   : mpcp_prog.bytes_total;
    } else {
      mpcp_stats.verified += m.files;
      mpcp_prog.verify_done += m.files;
      mpcp_stats.mismatches += m.mismatches;
    }
    break;
  case MPCP_M_ERROR:
    if (m.errors)
      mpcp_error("%.*s", (int)tlen, text);
    else
      mpcp_warn("%.*s", (int)tlen, text);
    break;
  case MPCP_M_TEXT:
    mpcp_progress_clear(&mpcp_prog);
    fwrite(text, 1, tlen, mpcp_opt.json ? stderr : stdout);
    fflush(mpcp_opt.json ? stderr : stdout);
    break;
  case MPCP_M_DIED:
    worker_died = true;
    break;
  case MPCP_M_RETRY: {
    char *task;
    size_t tlen2;
    while (mpcp_exec_take_dead(&task, &tlen2)) {
      resubmit_singles(task, tlen2);
      free(task);
    }
    break;
  }
  case MPCP_M_HANDBACK:
    take_handback(m.id, text, tlen);
    break;
  case MPCP_M_CHUNK:
    for (size_t i = 0; i < nbigs; i++) {
      big_rec_t *b = &bigs[i];
      if (b->id != m.id)
        continue;
      if (m.errors && !b->failed && tlen) /* one message per file */
        mpcp_error("%.*s", (int)tlen, text);
      if (m.errors)
        b->failed = true;
      if (--b->chunks_left == 0)
        mpcp_finish_big(i);
      break;
    }
    break;
  default:
    if (mpcp_msg_hook)
      mpcp_msg_hook(&m, text, tlen);
    break;
  }
}

/* Drains the workers' messages: waits up to timeout_ms for the first. */
void mpcp_pump(int timeout_ms) {
  char buf[MPCP_MSG_MAX];
  int n = mpcp_exec_recv(buf, timeout_ms);
  while (n > 0) {
    on_msg(buf, (size_t)n);
    n = mpcp_exec_recv(buf, 0);
  }
  mpcp_progress_draw(&mpcp_prog, false);
}

bool mpcp_tasks_pending(void) {
  return tasks_done < tasks_submitted;
}

static bool submit(void *task, size_t len, bool keep_for_verify) {
  mpcp_task_hdr_t h;
  memcpy(&h, task, sizeof h);
  h.id = next_id++;
  memcpy(task, &h, sizeof h);
  /* Bound the work queued ahead of the workers (memory), while still letting
   * the walk run far enough ahead to count the totals early. */
  while (tasks_submitted - tasks_done >= mpcp_max_inflight && !mpcp_stop_sig)
    mpcp_pump(100);
  if (mpcp_stop_sig)
    return false;
  int rc = mpcp_exec_submit(task, len);
  if (rc < 0) {
    mpcp_error("mpcp: cannot queue work: %s", strerror(-rc));
    return false;
  }
  tasks_submitted++;
  if (keep_for_verify && mpcp_opt.verify) {
    GROW(verify_tasks, nverify, capverify);
    char *copy = malloc(len);
    if (copy) {
      memcpy(copy, task, len);
      verify_tasks[nverify++] = (blob_t){copy, len};
    }
  }
  return true;
}

/* ---- batch building ------------------------------------------------------ */

typedef struct {
  char *buf;
  size_t len, cap;
  uint32_t count, regs, nostat;
  uint64_t bytes;
  int root;
  const char *dir;
  uint32_t flags;
} batch_t;

static void put(batch_t *b, const void *p, size_t n) {
  if (b->len + n > b->cap) {
    size_t nc = b->cap ? b->cap * 2 : 8192;
    while (nc < b->len + n)
      nc *= 2;
    char *q = realloc(b->buf, nc);
    if (!q) {
      fprintf(stderr, "mpcp: out of memory\n");
      exit(1);
    }
    b->buf = q;
    b->cap = nc;
  }
  memcpy(b->buf + b->len, p, n);
  b->len += n;
}

static void batch_begin(batch_t *b, uint32_t kind) {
  b->len = 0;
  b->count = b->regs = b->nostat = 0;
  b->bytes = 0;
  mpcp_task_hdr_t h = {.kind = kind,
                       .root = (uint32_t)b->root,
                       .dir_len = (uint32_t)strlen(b->dir),
                       .flags = b->flags};
  put(b, &h, sizeof h);
  put(b, b->dir, h.dir_len);
}

/* Parses the entry at p: its header and names. Returns the next entry. */
static const char *next_entry(const char *p, const char *end, mpcp_ent_t *e,
                              const char **name) {
  if (p + sizeof *e > end)
    return NULL;
  memcpy(e, p, sizeof *e);
  *name = p + sizeof *e;
  const char *next = *name + e->name_len + e->dname_len;
  return next > end ? NULL : next;
}

char *mpcp_task_path(const char *task, size_t len) {
  mpcp_task_hdr_t h;
  if (len < sizeof h)
    return NULL;
  memcpy(&h, task, sizeof h);
  const char *p = task + sizeof h, *end = task + len, *name;
  if (h.root >= (uint32_t)mpcp_nroots || h.dir_len > len - sizeof h)
    return NULL;
  char *dir = strndup(p, h.dir_len);
  mpcp_ent_t e;
  mpcp_chunk_t c;
  char *out = NULL;
  if (dir && h.kind == MPCP_T_WALK) {
    out = mpcp_join(mpcp_roots[h.root].src_disp, dir, NULL);
  } else if (dir && h.kind == MPCP_T_CHUNK) {
    const char *q = p + h.dir_len;
    if ((size_t)(end - q) >= sizeof c) {
      memcpy(&c, q, sizeof c);
      if (c.name_len <= (size_t)(end - q) - sizeof c) {
        char *n = strndup(q + sizeof c, c.name_len);
        if (n)
          out = mpcp_join(mpcp_roots[h.root].src_disp, dir, n);
        free(n);
      }
    }
  } else if (dir && next_entry(p + h.dir_len, end, &e, &name)) {
    char *n = strndup(name, e.name_len);
    if (n)
      out = mpcp_join(mpcp_roots[h.root].src_disp, dir, n);
    free(n);
  }
  free(dir);
  return out;
}

/* A batch whose worker died: each entry again in a task of its own, so only
 * the entry that kills its worker fails. Entries done before the death are
 * copied again (over themselves). */
static void resubmit_singles(const char *task, size_t len) {
  mpcp_task_hdr_t h;
  memcpy(&h, task, sizeof h);
  if (h.kind == MPCP_T_CHUNK) { /* the same chunk, by another worker */
    char *copy = malloc(len);
    if (!copy)
      return;
    memcpy(copy, task, len);
    h.flags |= MPCP_TF_RETRY;
    memcpy(copy, &h, sizeof h);
    submit(copy, len, false);
    free(copy);
    return;
  }
  const char *p = task + sizeof h + h.dir_len, *end = task + len, *name;
  mpcp_ent_t e;
  batch_t b = {.root = (int)h.root, .flags = h.flags | MPCP_TF_RETRY};
  char *dir = strndup(task + sizeof h, h.dir_len);
  if (!dir)
    return;
  b.dir = dir;
  const char *next;
  while ((next = next_entry(p, end, &e, &name))) {
    batch_begin(&b, h.kind);
    put(&b, p, (size_t)(next - p));
    mpcp_task_hdr_t nh;
    memcpy(&nh, b.buf, sizeof nh);
    nh.count = 1;
    nh.regs = S_ISREG(e.mode) ? 1 : 0;
    memcpy(b.buf, &nh, sizeof nh);
    submit(b.buf, b.len, false);
    p = next;
  }
  free(b.buf);
  free(dir);
}

static void batch_flush(batch_t *b) {
  if (b->count == 0)
    return;
  mpcp_task_hdr_t h;
  memcpy(&h, b->buf, sizeof h);
  h.count = b->count;
  h.regs = b->regs;
  memcpy(b->buf, &h, sizeof h);
  submit(b->buf, b->len, true);
  b->flags &= ~(uint32_t)MPCP_TF_SWEEP; /* the first batch sweeps */
  batch_begin(b, MPCP_T_BATCH);
}

static void batch_add(batch_t *b, const mpcp_ent_t *e, const char *name,
                      const char *dname) {
  mpcp_ent_t x = *e;
  x.name_len = (uint32_t)strlen(name);
  x.dname_len = dname && strcmp(dname, name) ? (uint32_t)strlen(dname) : 0;
  put(b, &x, sizeof x);
  put(b, name, x.name_len);
  if (x.dname_len)
    put(b, dname, x.dname_len);
  b->count++;
  if (S_ISREG(e->mode)) {
    b->bytes += e->size;
    b->regs++;
  }
  /* An unstat'ed --resume entry is mostly two stats: it counts an eighth
   * (a worker that finds much to copy hands the rest back: copy.c). */
  if (e->flags & MPCP_EF_NOSTAT)
    b->nostat++;
  if (b->count - b->nostat + b->nostat / 8 >= mpcp_batch_files ||
      b->bytes >= MPCP_BATCH_BYTES)
    batch_flush(b);
}

void mpcp_ent_from_stat(mpcp_ent_t *e, const struct stat *st) {
  memset(e, 0, sizeof *e);
  e->mode = st->st_mode;
  e->uid = st->st_uid;
  e->gid = st->st_gid;
  e->size = (uint64_t)st->st_size;
  e->rdev = st->st_rdev;
  e->atime_s = st->st_atim.tv_sec;
  e->atime_ns = (uint32_t)st->st_atim.tv_nsec;
  e->mtime_s = st->st_mtim.tv_sec;
  e->mtime_ns = (uint32_t)st->st_mtim.tv_nsec;
  /* Fewer allocated blocks than the size needs: worth looking for holes. */
  if (S_ISREG(st->st_mode) && st->st_size > 0 &&
      (uint64_t)st->st_blocks * 512 + 4096 < (uint64_t)st->st_size)
    e->flags |= MPCP_EF_SPARSE;
}

/* ---- big files: split into chunks ------------------------------------------
 */

static void batch_begin(batch_t *b, uint32_t kind);
static void batch_add(batch_t *b, const mpcp_ent_t *e, const char *name,
                      const char *dname);
static void batch_flush(batch_t *b);

/* All chunks of big file i are in: check the source did not change while
 * it was read (else copy it again whole, as one entry), set metadata and
 * give the temp file its final name. */
void mpcp_finish_big(size_t i) {
  big_rec_t *b = &bigs[i];
  mpcp_root_t *r = &mpcp_roots[b->root];
  b->done = true;
  int dirfd = mpcp_open_rel(r->dst_fd, b->dir, O_PATH | O_DIRECTORY, 0);
  char *disp = mpcp_join(r->dst_disp, b->dir, b->dname);
  int sdir = -1, sfd = -1;
  bool ok = false;
  if (dirfd < 0) {
    mpcp_error("mpcp: cannot access '%s': %s", disp, strerror(errno));
    goto out;
  }
  if (b->failed) {
    unlinkat(dirfd, b->tmp, 0);
    goto out_dir;
  }
  sdir = mpcp_open_rel(r->src_fd, b->dir, O_PATH | O_DIRECTORY, 0);
  sfd = sdir < 0 ? -1
                 : openat(sdir, b->name,
                          O_RDONLY | O_CLOEXEC |
                              ((b->meta.flags & MPCP_EF_FOLLOW) ? 0
                                                                : O_NOFOLLOW));
  struct stat now;
  if (sfd < 0 || fstat(sfd, &now) < 0 ||
      (uint64_t)now.st_size != b->meta.size ||
      now.st_mtim.tv_sec != b->meta.mtime_s ||
      (uint64_t)now.st_mtim.tv_nsec != b->meta.mtime_ns) {
    unlinkat(dirfd, b->tmp, 0);
    if (sfd >= 0) {
      /* Changed while its chunks were read: copy it again as one entry
       * (which checks again and reports a file that keeps changing). */
      batch_t bt = {.root = b->root, .dir = b->dir, .flags = b->flags};
      batch_begin(&bt, MPCP_T_BATCH);
      mpcp_ent_t e = b->meta;
      e.size = (uint64_t)now.st_size;
      batch_add(&bt, &e, b->name, b->dname);
      batch_flush(&bt);
      free(bt.buf);
      goto keep_count;
    }
    char *s = mpcp_join(r->src_disp, b->dir, b->name);
    if (sfd < 0)
      mpcp_error("mpcp: cannot open '%s': %s", s, strerror(errno));
    else
      mpcp_error("mpcp: '%s': file changed as we read it", s);
    free(s);
    goto out_dir;
  }
  int fd = openat(dirfd, b->tmp, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    mpcp_error("mpcp: cannot open '%s': %s", disp, strerror(errno));
    unlinkat(dirfd, b->tmp, 0);
    goto out_dir;
  }
  if (mpcp_opt.archive) {
    /* Created 0600 by us: ownership and mode are always set. */
    mpcp_set_meta_fd(fd, &b->meta, sfd,
                     MPCP_MF_CHOWN | MPCP_MF_CHMOD |
                         ((b->flags & MPCP_TF_DEFACL) ? MPCP_MF_DEFACL : 0),
                     disp, psay);
  } else if (fchmod(fd, b->meta.mode & 0777 & ~saved_umask) < 0) {
    mpcp_error("mpcp: setting permissions for '%s': %s", disp,
               strerror(errno));
  }
  close(fd);
  if (renameat(dirfd, b->tmp, dirfd, b->dname) < 0) {
    mpcp_error("mpcp: cannot create regular file '%s': %s", disp,
               strerror(errno));
    unlinkat(dirfd, b->tmp, 0);
  } else {
    ok = true;
    if (mpcp_opt.verbose) {
      char *s = mpcp_join(r->src_disp, b->dir, b->name);
      mpcp_progress_clear(&mpcp_prog);
      mpcp_verbose_line(s, disp);
      free(s);
    }
  }
out_dir:
  close(dirfd);
out:
  if (!ok)
    mpcp_stats.failed++;
  mpcp_prog.files_done++;
keep_count:
  if (sfd >= 0)
    close(sfd);
  if (sdir >= 0)
    close(sdir);
  free(disp);
}

/* Chunk k of big file i, as one task. */
static void submit_chunk(size_t i, uint32_t k) {
  big_rec_t *b = &bigs[i];
  batch_t c = {.root = b->root, .dir = b->dir, .flags = b->flags};
  batch_begin(&c, MPCP_T_CHUNK);
  uint64_t off = (uint64_t)k * mpcp_chunk_size;
  uint64_t size = b->meta.size;
  mpcp_chunk_t ch = {.file_id = b->id,
                     .offset = off,
                     .len = size - off < mpcp_chunk_size ? size - off
                                                         : mpcp_chunk_size,
                     .name_len = (uint32_t)strlen(b->name),
                     .tmp_len = (uint32_t)strlen(b->tmp),
                     .flags = b->meta.flags,
                     .dname_len = (uint32_t)strlen(b->dname)};
  put(&c, &ch, sizeof ch);
  put(&c, b->name, ch.name_len);
  put(&c, b->tmp, ch.tmp_len);
  put(&c, b->dname, ch.dname_len);
  submit(c.buf, c.len, false);
  free(c.buf);
}

/* Hands out the chunks of the big files seen so far, round robin across the
 * files: workers then mostly write different files (a filesystem may take
 * a per-file lock for writes), and one huge file still gets every worker. */
static void flush_bigs(void) {
  bool more = true;
  while (more && !mpcp_stop_sig) {
    more = false;
    for (size_t i = bigs_pending_from; i < nbigs && !mpcp_stop_sig; i++) {
      if (bigs[i].next_chunk >= bigs[i].nchunks)
        continue;
      submit_chunk(i, bigs[i].next_chunk++);
      more = true;
    }
  }
  bigs_pending_from = nbigs;
}

static void add_big(batch_t *bt, int ddir, const mpcp_ent_t *e,
                    const char *name, const char *dname) {
  char tmp[128];
  mpcp_temp_name(tmp, sizeof tmp);
  int fd = openat(ddir, tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0 || ftruncate(fd, (off_t)e->size) < 0) {
    char *d = mpcp_join(mpcp_roots[bt->root].dst_disp, bt->dir, dname);
    mpcp_error("mpcp: cannot create regular file '%s': %s", d, strerror(errno));
    free(d);
    if (fd >= 0) {
      close(fd);
      unlinkat(ddir, tmp, 0);
    }
    mpcp_prog.files_done++;
    mpcp_stats.failed++;
    return;
  }
  close(fd);
  GROW(bigs, nbigs, capbigs);
  big_rec_t *b = &bigs[nbigs++];
  uint64_t nchunks = (e->size + mpcp_chunk_size - 1) / mpcp_chunk_size;
  *b = (big_rec_t){.id = nbigs,
                   .root = bt->root,
                   .dir = strdup(bt->dir),
                   .name = strdup(name),
                   .dname = strdup(dname),
                   .tmp = strdup(tmp),
                   .meta = *e,
                   .flags = bt->flags,
                   .nchunks = (uint32_t)nchunks,
                   .chunks_left = (uint32_t)nchunks};
  if (mpcp_opt.verify) {
    batch_t c = {.root = bt->root, .dir = bt->dir, .flags = bt->flags};
    batch_begin(&c, MPCP_T_VERIFY);
    mpcp_ent_t x = *e;
    x.name_len = (uint32_t)strlen(name);
    x.dname_len = (uint32_t)strlen(dname);
    put(&c, &x, sizeof x);
    put(&c, name, x.name_len);
    put(&c, dname, x.dname_len);
    mpcp_task_hdr_t h;
    memcpy(&h, c.buf, sizeof h);
    h.count = h.regs = 1;
    memcpy(c.buf, &h, sizeof h);
    GROW(verify_tasks, nverify, capverify);
    verify_tasks[nverify++] = (blob_t){c.buf, c.len};
  }
  if (nbigs - bigs_pending_from >= 2 * (size_t)mpcp_opt.jobs)
    flush_bigs();
}

/* ---- walking
 * ----------------------------------------------------------------- */

/* PAT matches the name, or (if it has a '/') the path below SRC; a PAT
 * ending in '/' matches directories only (as rsync). */
static bool excluded(const char *name, const char *relpath, bool is_dir) {
  for (int i = 0; i < mpcp_opt.nexcludes; i++) {
    const char *pat = mpcp_opt.excludes[i];
    char buf[4096];
    size_t n = strlen(pat);
    if (n > 1 && pat[n - 1] == '/') {
      if (!is_dir || n >= sizeof buf)
        continue;
      memcpy(buf, pat, n - 1);
      buf[n - 1] = '\0';
      pat = buf;
    }
    if (fnmatch(pat, name, 0) == 0)
      return true;
    if (strchr(pat, '/') && fnmatch(pat, relpath, FNM_PATHNAME) == 0)
      return true;
  }
  return false;
}

static bool newer_or_same(const struct stat *d, const mpcp_ent_t *e) {
  if (d->st_mtim.tv_sec != e->mtime_s)
    return d->st_mtim.tv_sec > e->mtime_s;
  return (uint64_t)d->st_mtim.tv_nsec >= e->mtime_ns;
}

static void dry_line(int root, const char *dir, const char *name,
                     const char *dname) {
  if (!mpcp_opt.dry_run && !mpcp_opt.verbose)
    return;
  char *s = mpcp_join(mpcp_roots[root].src_disp, dir, name);
  char *d = mpcp_join(mpcp_roots[root].dst_disp, dir, dname);
  if (mpcp_opt.dry_run)
    fputs("would copy ", mpcp_opt.json ? stderr : stdout);
  mpcp_verbose_line(s, d);
  free(s);
  free(d);
}

/* A regular file split into chunks copied by several workers. */
static bool is_big(int root, const struct stat *st) {
  return S_ISREG(st->st_mode) && (uint64_t)st->st_size >= mpcp_chunk_min &&
         mpcp_opt.jobs > 1 && mpcp_roots[root].split && !mpcp_opt.resume;
}

void (*mpcp_root_entry_hook)(int root, const char *dir, uint32_t flags,
                             const struct stat *st, const char *name,
                             const char *dname, bool follow);

/* Hands one non-directory entry to the copy: a hard link to remember, a big
 * file to split, or an entry in the current batch. */
static void mpcp_add_entry(batch_t *b, int sdir, int ddir,
                           const struct stat *st, const char *name,
                           const char *dname, bool follow) {
  if (mpcp_root_entry_hook &&
      ((mpcp_opt.archive && st->st_nlink > 1) || is_big(b->root, st))) {
    mpcp_root_entry_hook(b->root, b->dir, b->flags, st, name, dname, follow);
    return;
  }
  mpcp_ent_t e;
  mpcp_ent_from_stat(&e, st);
  if (follow)
    e.flags |= MPCP_EF_FOLLOW;
  (void)sdir;
  /* --resume compares in the workers (copy.c), spread over them. */
  if (ddir >= 0 && (mpcp_opt.no_clobber || mpcp_opt.update)) {
    struct stat d;
    bool skip = false;
    if (fstatat(ddir, dname, &d, AT_SYMLINK_NOFOLLOW) == 0)
      skip = mpcp_opt.no_clobber ||
             (mpcp_opt.update && newer_or_same(&d, &e));
    if (skip) {
      mpcp_stats.skipped++;
      /* Later links to this inode link to the entry kept (as cp -au). */
      if (mpcp_opt.archive && st->st_nlink > 1) {
        hl_t *h = hl_find(st->st_dev, st->st_ino, true);
        if (!h->path) {
          h->root = b->root;
          h->path = mpcp_join(b->dir, dname, NULL);
        }
      }
      return;
    }
  }
  mpcp_prog.files_total++;
  if (S_ISREG(e.mode))
    mpcp_prog.bytes_total += e.size;
  if (mpcp_opt.archive && st->st_nlink > 1) {
    char *path = mpcp_join(b->dir, dname, NULL);
    hl_t *h = hl_find(st->st_dev, st->st_ino, true);
    if (h->path) {
      GROW(links, nlinks, caplinks);
      links[nlinks++] = (link_rec_t){h->root, b->root, strdup(h->path), path,
                                     mpcp_join(b->dir, name, NULL)};
      if (S_ISREG(e.mode))
        mpcp_prog.bytes_total -= e.size;
      if (mpcp_opt.dry_run) {
        mpcp_prog.files_done++;
        dry_line(b->root, b->dir, name, dname);
      }
      return;
    }
    h->root = b->root;
    h->path = path;
  }
  if (mpcp_opt.dry_run) {
    mpcp_prog.files_done++;
    if (S_ISREG(e.mode))
      mpcp_prog.bytes_done += e.size;
    dry_line(b->root, b->dir, name, dname);
    return;
  }
  if (is_big(b->root, st))
    add_big(b, ddir, &e, name, dname);
  else
    batch_add(b, &e, name, dname);
}

static void add_dir_rec(int root, const char *rel, const struct stat *st,
                        bool created) {
  GROW(dirs, ndirs, capdirs);
  dir_rec_t *d = &dirs[ndirs++];
  d->root = root;
  d->rel = strdup(rel);
  mpcp_ent_from_stat(&d->meta, st);
  d->created = created;
  d->meta_ok = true;
  mpcp_stats.dirs++;
}

/* Does the directory have a default ACL (that new entries inherit)? */
static bool has_default_acl(int dirfd) {
  int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return false;
  bool yes = fgetxattr(fd, "system.posix_acl_default", NULL, 0) > 0;
  close(fd);
  return yes;
}

/* Reads the source directory rel of root: makes each subdirectory in the
 * destination and passes it to subdir (which takes the malloc'd path), and
 * hands the other entries to the copy in batches. */
static void walk_dir(int root, const char *rel, bool fresh,
                     mpcp_subdir_fn subdir, void *arg);

void mpcp_walk_dir(int root, const char *rel, mpcp_subdir_fn subdir,
                   void *arg) {
  walk_dir(root, rel, false, subdir, arg);
}

/* fresh: the destination directory was made by this run (so it is empty). */
static void walk_dir(int root, const char *rel, bool fresh,
                     mpcp_subdir_fn subdir, void *arg) {
  static uint64_t walked;
  mpcp_root_t *r = &mpcp_roots[root];
  int sfd = mpcp_open_rel(r->src_fd, rel, O_RDONLY | O_DIRECTORY, 0);
  DIR *d = sfd < 0 ? NULL : fdopendir(sfd);
  if (!d) {
    char *p = mpcp_join(r->src_disp, rel, NULL);
    mpcp_error("mpcp: cannot access '%s': %s", p, strerror(errno));
    free(p);
    if (sfd >= 0)
      close(sfd);
    return;
  }
  int ddir = mpcp_open_rel(r->dst_fd, rel, O_PATH | O_DIRECTORY, 0);
  if (ddir < 0 && !mpcp_opt.dry_run) {
    char *p = mpcp_join(r->dst_disp, rel, NULL);
    mpcp_error("mpcp: cannot access '%s': %s", p, strerror(errno));
    free(p);
    closedir(d);
    return;
  }
  batch_t b = {.root = root, .dir = rel};
  /* Stale temp files go with the directory's first batch, in a worker
   * (off the walk's path: on a cold cache the scan reads the directory
   * from disk). */
  if (mpcp_opt.resume && ddir >= 0 && !mpcp_opt.dry_run && !fresh)
    b.flags |= MPCP_TF_SWEEP;
  struct stat dst;
  if (ddir >= 0 && fstat(ddir, &dst) == 0 && (dst.st_mode & S_ISGID))
    b.flags |= MPCP_TF_SETGID_DIR;
  if (ddir >= 0 && mpcp_opt.archive && has_default_acl(ddir))
    b.flags |= MPCP_TF_DEFACL;
  batch_begin(&b, MPCP_T_BATCH);
  /* --resume over a local pool: entries that are not directories go to the
   * workers by name and type, unstat'ed, so that the two stats that decide
   * "unchanged" (source and destination) both run in parallel in the
   * workers instead of one of them in this one walking process. Not where
   * the walk itself must see a stat: -n/-u decide here, --dry-run and
   * --verify keep the entry records, and an MPI rank's walk sends hard
   * links and big files to the root. */
  bool nostat = mpcp_opt.resume && !fresh && !mpcp_opt.dry_run &&
                !mpcp_opt.verify &&
                !mpcp_opt.no_clobber && !mpcp_opt.update &&
                !mpcp_root_entry_hook && !mpcp_opt.mpi && ddir >= 0 &&
                /* a hand-back message holds the directory and a name */
                strlen(rel) + NAME_MAX + 1 + sizeof(mpcp_handback_t) <=
                    MPCP_MSG_MAX - sizeof(mpcp_msg_t);
  struct dirent *de;
  while (!mpcp_stop_sig && (errno = 0, de = readdir(d))) {
    const char *name = de->d_name;
    if (name[0] == '.' &&
        (name[1] == '\0' || (name[1] == '.' && name[2] == '\0')))
      continue;
    if (nostat && de->d_type != DT_DIR && de->d_type != DT_UNKNOWN) {
      /* --resume: the type is enough here; a worker stats both sides. */
      if (mpcp_opt.nexcludes) {
        char *path = mpcp_join(rel, name, NULL);
        bool ex = excluded(name, path, false);
        free(path);
        if (ex) {
          mpcp_stats.excluded++;
          continue;
        }
      }
      mpcp_ent_t e = {.mode = DTTOIF(de->d_type), .flags = MPCP_EF_NOSTAT};
      mpcp_prog.files_total++;
      batch_add(&b, &e, name, name);
      if ((++walked & 31) == 0)
        mpcp_pump(0);
      continue;
    }
    char *path = mpcp_join(rel, name, NULL);
    struct stat st;
    if (fstatat(dirfd(d), name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
      char *p = mpcp_join(r->src_disp, path, NULL);
      mpcp_error("mpcp: cannot stat '%s': %s", p, strerror(errno));
      free(p);
      free(path);
      continue;
    }
    if (mpcp_opt.nexcludes && excluded(name, path, S_ISDIR(st.st_mode))) {
      mpcp_stats.excluded++;
      free(path);
      continue;
    }
    if (S_ISDIR(st.st_mode)) {
      bool created = true;
      if (!mpcp_opt.dry_run && mkdirat(ddir, name, 0700) < 0) {
        struct stat ex;
        created = false;
        int e = errno;
        /* An existing symlink is never followed (cp refuses it too). */
        bool exists = e == EEXIST &&
                      fstatat(ddir, name, &ex, AT_SYMLINK_NOFOLLOW) == 0;
        if (!exists || !S_ISDIR(ex.st_mode)) {
          char *p = mpcp_join(r->dst_disp, path, NULL);
          char *sp = mpcp_join(r->src_disp, path, NULL);
          if (exists)
            mpcp_error("mpcp: cannot overwrite non-directory '%s' with "
                       "directory '%s'",
                       p, sp);
          else
            mpcp_error("mpcp: cannot create directory '%s': %s", p,
                       strerror(e));
          free(p);
          free(sp);
          free(path);
          continue;
        }
        if (ex.st_dev == st.st_dev && ex.st_ino == st.st_ino) {
          char *p = mpcp_join(r->dst_disp, path, NULL);
          char *sp = mpcp_join(r->src_disp, path, NULL);
          mpcp_error("mpcp: '%s' and '%s' are the same file", sp, p);
          free(p);
          free(sp);
          free(path);
          continue;
        }
      }
      if (created && mpcp_opt.verbose) {
        char *p = mpcp_join(r->dst_disp, path, NULL);
        char *sp = mpcp_join(r->src_disp, path, NULL);
        mpcp_verbose_line(sp, p);
        free(p);
        free(sp);
      }
      subdir(root, path, &st, created, arg);
      continue;
    }
    free(path);
    mpcp_add_entry(&b, dirfd(d), ddir, &st, name, name, false);
    if ((++walked & 31) == 0)
      mpcp_pump(0); /* drain the queue, redraw (at most every 100 ms) */
  }
  if (errno && !mpcp_stop_sig) {
    char *p = mpcp_join(r->src_disp, rel, NULL);
    mpcp_error("mpcp: cannot read directory '%s': %s", p, strerror(errno));
    free(p);
  }
  batch_flush(&b);
  if (b.flags & MPCP_TF_SWEEP) /* no batch went out for it */
    mpcp_remove_stale_temps(ddir);
  free(b.buf);
  closedir(d);
  if (ddir >= 0)
    close(ddir);
}

typedef struct {
  char *rel;
  bool created; /* made by this run */
} dir_todo_t;

typedef struct {
  dir_todo_t *v;
  size_t n, cap;
} dir_stack_t;

/* mpcp_walk_dir's subdir of the local walk: recorded (for its metadata at
 * the end) and walked next. */
static void push_subdir(int root, char *path, const struct stat *st,
                        bool created, void *arg) {
  dir_stack_t *s = arg;
  add_dir_rec(root, path, st, created);
  GROW(s->v, s->n, s->cap);
  s->v[s->n++] = (dir_todo_t){path, created && !mpcp_opt.dry_run};
}

/* Walks the tree under root `root`, depth first, one directory at a time. */
void mpcp_walk(int root, const struct stat *top_st, bool top_created) {
  mpcp_walk_top(root, top_st, top_created);
  dir_stack_t s = {0};
  GROW(s.v, s.n, s.cap);
  s.v[s.n++] = (dir_todo_t){strdup(""), top_created && !mpcp_opt.dry_run};
  while (s.n && !mpcp_stop_sig) {
    dir_todo_t t = s.v[--s.n];
    walk_dir(root, t.rel, t.created, push_subdir, &s);
    free(t.rel);
  }
  while (s.n)
    free(s.v[--s.n].rel);
  free(s.v);
}

/* The top directory of a walk: recorded, and its -v line. */
void mpcp_walk_top(int root, const struct stat *top_st, bool top_created) {
  mpcp_root_t *r = &mpcp_roots[root];
  add_dir_rec(root, "", top_st, top_created);
  if (top_created && mpcp_opt.verbose && !mpcp_opt.dry_run)
    mpcp_verbose_line(r->src_disp, r->dst_disp);
}

/* MPI root: a directory made by a worker rank's walk (for its metadata at
 * the end). */
void mpcp_add_dir(int root, const char *rel, const struct stat *st,
                  bool created) {
  add_dir_rec(root, rel, st, created);
}

/* MPI root: entries of one directory that a worker rank's walk passed on
 * (hard links, big files): handled as the local walk handles them. */
void mpcp_add_entries(int root, const char *dir, uint32_t flags, size_t n,
                      const struct stat *st, char *const *names,
                      char *const *dnames, const bool *follow) {
  mpcp_root_t *r = &mpcp_roots[root];
  int sdir = mpcp_open_rel(r->src_fd, dir, O_PATH | O_DIRECTORY, 0);
  int ddir = mpcp_open_rel(r->dst_fd, dir, O_PATH | O_DIRECTORY, 0);
  if (ddir < 0) {
    char *p = mpcp_join(r->dst_disp, dir, NULL);
    mpcp_error("mpcp: cannot access '%s': %s", p, strerror(errno));
    free(p);
    mpcp_stats.failed += n;
    mpcp_prog.files_done += n;
    mpcp_prog.files_total += n;
  } else {
    batch_t b = {.root = root, .dir = dir, .flags = flags};
    batch_begin(&b, MPCP_T_BATCH);
    for (size_t i = 0; i < n && !mpcp_stop_sig; i++)
      mpcp_add_entry(&b, sdir, ddir, &st[i], names[i], dnames[i], follow[i]);
    batch_flush(&b);
    free(b.buf);
    close(ddir);
  }
  if (sdir >= 0)
    close(sdir);
}

/* MPI root: a task made elsewhere (a worker rank's walk), submitted as it
 * is (a new id). */
bool mpcp_submit_task(void *task, size_t len, bool keep_for_verify) {
  return submit(task, len, keep_for_verify);
}

/* A top-level non-directory SRC: one entry in a batch of its own. */
void mpcp_copy_single(int root, const struct stat *st, const char *name,
                      const char *dname, bool follow) {
  batch_t b = {.root = root, .dir = ""};
  if (!mpcp_opt.dry_run && mpcp_opt.archive &&
      has_default_acl(mpcp_roots[root].dst_fd))
    b.flags |= MPCP_TF_DEFACL;
  batch_begin(&b, MPCP_T_BATCH);
  mpcp_add_entry(&b, mpcp_roots[root].src_fd,
                 mpcp_opt.dry_run ? -1 : mpcp_roots[root].dst_fd, st, name,
                 dname, follow);
  batch_flush(&b);
  free(b.buf);
}

/* ---- the end of the run ----------------------------------------------------
 */

static int open_parent(int rootfd, const char *path, const char **base) {
  const char *slash = strrchr(path, '/');
  if (!slash) {
    *base = path;
    return dup(rootfd);
  }
  *base = slash + 1;
  char *dir = strndup(path, (size_t)(slash - path));
  int fd = dir ? mpcp_open_rel(rootfd, dir, O_PATH | O_DIRECTORY, 0) : -1;
  free(dir);
  return fd;
}

static void make_links(void) {
  for (size_t i = 0; i < nlinks && !mpcp_stop_sig; i++) {
    link_rec_t *l = &links[i];
    mpcp_root_t *ra = &mpcp_roots[l->root_a], *rb = &mpcp_roots[l->root_b];
    const char *ba, *bb;
    int da = open_parent(ra->dst_fd, l->a, &ba);
    int db = open_parent(rb->dst_fd, l->b, &bb);
    int rc = -1;
    struct stat sa, sb;
    if (mpcp_opt.resume && da >= 0 && db >= 0 &&
        fstatat(da, ba, &sa, AT_SYMLINK_NOFOLLOW) == 0 &&
        fstatat(db, bb, &sb, AT_SYMLINK_NOFOLLOW) == 0 &&
        sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino) {
      rc = 1; /* linked by an earlier run */
    } else if (da >= 0 && db >= 0) {
      rc = linkat(da, ba, db, bb, 0);
      if (rc < 0 && errno == EEXIST) {
        char tmp[128];
        mpcp_temp_name(tmp, sizeof tmp);
        rc = linkat(da, ba, db, tmp, 0);
        if (rc == 0 && (rc = renameat(db, tmp, db, bb)) < 0) {
          int e = errno;
          unlinkat(db, tmp, 0);
          errno = e;
        }
      }
    }
    char *p = mpcp_join(rb->dst_disp, l->b, NULL);
    if (rc == 1) {
      mpcp_stats.same++;
    } else if (rc < 0) {
      char *q = mpcp_join(ra->dst_disp, l->a, NULL);
      mpcp_error("mpcp: cannot create hard link '%s' to '%s': %s", p, q,
                 strerror(errno));
      free(q);
      mpcp_stats.failed++;
    } else {
      mpcp_stats.links++;
      if (mpcp_opt.verbose && l->src) {
        char *s = mpcp_join(rb->src_disp, l->src, NULL);
        mpcp_verbose_line(s, p);
        free(s);
      }
    }
    free(p);
    if (da >= 0)
      close(da);
    if (db >= 0)
      close(db);
    mpcp_prog.files_done++;
    mpcp_progress_draw(&mpcp_prog, false);
  }
}

static bool dir_unchanged(int fd, const mpcp_ent_t *m) {
  struct stat st;
  return fstat(fd, &st) == 0 && st.st_uid == m->uid && st.st_gid == m->gid &&
         (st.st_mode & 07777) == (m->mode & 07777) &&
         st.st_mtim.tv_sec == m->mtime_s &&
         (uint64_t)st.st_mtim.tv_nsec == m->mtime_ns;
}

static void dir_meta(void) {
  for (size_t i = ndirs; i-- > 0 && !mpcp_stop_sig;) {
    dir_rec_t *d = &dirs[i];
    mpcp_root_t *r = &mpcp_roots[d->root];
    if (!d->meta_ok || (!mpcp_opt.archive && !d->created))
      continue;
    int fd = mpcp_open_rel(r->dst_fd, d->rel, O_RDONLY | O_DIRECTORY, 0);
    char err[256];
    int rc = 0;
    if (fd < 0) {
      snprintf(err, sizeof err, "%s", strerror(errno));
      rc = -1;
    } else if (mpcp_opt.archive && mpcp_opt.resume && !d->created &&
               dir_unchanged(fd, &d->meta)) {
      /* --resume: nothing to write */
    } else if (mpcp_opt.archive) {
      int sfd = mpcp_open_rel(r->src_fd, d->rel, O_RDONLY | O_DIRECTORY, 0);
      char *p = mpcp_join(r->dst_disp, d->rel, NULL);
      mpcp_set_meta_fd(fd, &d->meta, sfd,
                       MPCP_MF_DIR | MPCP_MF_CHOWN | MPCP_MF_DEFACL, p, psay);
      free(p);
      if (sfd >= 0)
        close(sfd);
    } else {
      /* As cp without -p: the source's permission bits under the umask,
       * no setuid/setgid of the source (a setgid inherited from the parent
       * directory stays). */
      struct stat cur;
      mode_t m = d->meta.mode & 01777 & ~saved_umask;
      if (fstat(fd, &cur) == 0)
        m |= cur.st_mode & S_ISGID;
      if (fchmod(fd, m) < 0) {
        snprintf(err, sizeof err, "%s", strerror(errno));
        rc = -1;
      }
    }
    if (fd >= 0)
      close(fd);
    if (rc < 0) {
      char *p = mpcp_join(r->dst_disp, d->rel, NULL);
      mpcp_error("mpcp: setting permissions for '%s': %s", p, err);
      free(p);
    }
  }
}

void mpcp_wait_tasks(void) {
  while (mpcp_tasks_pending() && !mpcp_stop_sig)
    mpcp_pump(100);
}

void mpcp_finish(void) {
  flush_bigs();
  /* One task in all (one file, one small folder): copied by the parent
   * itself, as starting workers would cost more than they could give. */
  if (!mpcp_stop_sig)
    mpcp_exec_walk_done();
  mpcp_wait_tasks();
  if (mpcp_stop_sig)
    return;
  mpcp_prog.walk_done = true;
  if (!mpcp_opt.dry_run) {
    make_links();
    /* A dead worker's temp file goes before the folders get their times
     * (removing it later would change its folder's mtime). */
    if (worker_died) {
      mpcp_cleanup_temps();
      worker_died = false;
    }
    dir_meta();
  }
  mpcp_progress_draw(&mpcp_prog, true);
  if (mpcp_opt.verify && !mpcp_opt.dry_run && !mpcp_stop_sig) {
    phase = 1;
    for (size_t i = 0; i < nverify; i++) {
      mpcp_task_hdr_t h;
      memcpy(&h, verify_tasks[i].data, sizeof h);
      mpcp_prog.verify_total += h.regs;
    }
    for (size_t i = 0; i < nverify && !mpcp_stop_sig; i++) {
      mpcp_task_hdr_t h;
      memcpy(&h, verify_tasks[i].data, sizeof h);
      h.kind = MPCP_T_VERIFY;
      memcpy(verify_tasks[i].data, &h, sizeof h);
      submit(verify_tasks[i].data, verify_tasks[i].len, false);
      mpcp_pump(0);
    }
    mpcp_wait_tasks();
    /* A re-copy (or a dead worker's temp file) changed a folder after its
     * times were set. */
    if ((mpcp_stats.mismatches || worker_died) && !mpcp_stop_sig) {
      if (worker_died)
        mpcp_cleanup_temps();
      worker_died = false;
      dir_meta();
    }
  }
  if (worker_died)
    mpcp_cleanup_temps(); /* a killed worker leaves its temp file */
}

/* After an interrupt: remove the temp files the workers or we left. */
void mpcp_cleanup_temps(void) {
  size_t plen = strlen(mpcp_temp_prefix);
  for (size_t i = 0; i < nbigs; i++) {
    if (bigs[i].done)
      continue;
    int fd = mpcp_open_rel(mpcp_roots[bigs[i].root].dst_fd, bigs[i].dir,
                           O_PATH | O_DIRECTORY, 0);
    if (fd >= 0) {
      unlinkat(fd, bigs[i].tmp, 0);
      close(fd);
    }
  }
  for (size_t i = 0; i < ndirs; i++) {
    int fd = mpcp_open_rel(mpcp_roots[dirs[i].root].dst_fd, dirs[i].rel,
                           O_RDONLY | O_DIRECTORY, 0);
    DIR *d = fd < 0 ? NULL : fdopendir(fd);
    if (!d) {
      if (fd >= 0)
        close(fd);
      continue;
    }
    struct dirent *de;
    while ((de = readdir(d)))
      if (strncmp(de->d_name, mpcp_temp_prefix, plen) == 0)
        unlinkat(dirfd(d), de->d_name, 0);
    closedir(d);
  }
}

void mpcp_walk_init(mode_t umask_value) {
  saved_umask = umask_value;
  snprintf(mpcp_temp_prefix, sizeof mpcp_temp_prefix, ".mpcp-%ld-",
           (long)getpid());
}

void mpcp_add_top_dir_for_cleanup(int root) {
  GROW(dirs, ndirs, capdirs);
  dirs[ndirs++] = (dir_rec_t){.root = root, .rel = strdup("")};
}
