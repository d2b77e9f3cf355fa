/* mpcp --mpi: the copy on the ranks of an MPI job (`mpirun -n N mpcp --mpi
 * -a SRC DEST`), through mproc's MPI pool (MP_POOL_MPI), as local mpcp runs
 * on the local pool.
 *
 * Every rank parses the same command line and calls mp_pool_create; rank 0
 * (the root) gets the pool and runs main as local mpcp does, the N-1 others
 * serve its tasks inside mp_pool_create.
 *
 * - Tasks are the local ones (batches of entries, chunks of big files,
 *   --verify batches) plus MPCP_T_WALK: read one directory. Every task
 *   travels behind a small header with the run's settings and roots
 *   (absolute paths and display names), so a rank opens the roots itself on
 *   its first task, whichever it is.
 * - The walk is shared: the root hands out directories to walk, at most a
 *   few per rank at a time. A rank that walks one makes its subdirectories,
 *   copies the directory's first batch of entries itself and sends back:
 *   the subdirectories (the root records them for their metadata, then
 *   hands them out to walk), the further batches (handed out as copy tasks
 *   to whichever rank asks first), the entries that need the root's tables
 *   (hard links under -a, grouped by device and inode so that one rank
 *   copies the first and the root links the others at the end; files big
 *   enough to be split into chunks copied by several ranks), and counts of
 *   what it found for the progress line.
 * - Messages (progress, errors, -v lines) come back in each task's result
 *   and go onto the root's message queue as local workers' messages do; an
 *   error or warning gets " (rank R on HOST)" appended. The root answers
 *   every task's completion itself, once.
 * - The root alone: hard links, big files' temp files and final renames,
 *   directory metadata at the end (children first), the progress line and
 *   --json.
 * Everything read from a result or a task is bounded before use: the other
 * ranks are other processes, maybe on other hosts. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mpi.h"
#include "walk.h"

#define MAGIC 0x6d706370u /* "mpcp" */

/* The header in front of every task: the run's settings and roots. */
typedef struct {
  uint32_t magic, len; /* len: this header and the roots after it */
  uint32_t umask, flags;
  uint32_t batch_files, nroots;
  uint32_t jobs, pad;
  uint64_t chunk_min, chunk_size;
  char temp_prefix[64];
} hdr_t;
enum { H_VERIFY = 1, H_TMPFILE = 2 };

/* One root in the header: src path, dst path, src display, dst display. */
typedef struct {
  uint32_t usable, split;
  uint32_t len[4];
} wroot_t;

/* Records of a result (worker -> root): type, length, bytes. */
typedef struct {
  uint32_t type, len;
} rec_t;
enum {
  R_MSG = 1,   /* mpcp_msg_t + text, as mpcp_send */
  R_FOUND = 2, /* mpcp_msg_t MPCP_M_FOUND: what a walk found */
  R_DIR = 3,   /* wdir_t + path: a subdirectory made, to walk */
  R_ENTS = 4,  /* wents_t + dir + entries: for the root's tables */
  R_BATCH = 5, /* a batch task, to hand out */
};

/* struct stat on the wire. */
typedef struct {
  uint32_t mode, nlink, uid, gid, flags, pad;
  uint64_t size, blocks, rdev, dev, ino;
  int64_t atime_s, mtime_s;
  uint32_t atime_ns, mtime_ns;
} wstat_t;
enum { WS_ROOT_DEV = 1 }; /* on the filesystem of its root's source */

typedef struct {
  wstat_t st;
  uint32_t root, created, len;
} wdir_t;

typedef struct {
  uint32_t root, flags, dir_len, n;
} wents_t;

typedef struct {
  wstat_t st;
  uint32_t follow, name_len, dname_len;
} went_t;

bool mpcp_mpi_worker;
static mp_pool_t *made_pool;

/* ---- shared checks --------------------------------------------------------
 */

/* A name inside a directory, as a task carries it. */
static bool name_ok(const char *s, size_t n) {
  if (n == 0 || n > NAME_MAX || memchr(s, '\0', n) || memchr(s, '/', n))
    return false;
  return !(s[0] == '.' && (n == 1 || (n == 2 && s[1] == '.')));
}

/* A path below a root: relative, no empty, "." or ".." component. */
static bool rel_ok(const char *s, size_t n) {
  if (n == 0)
    return true;
  if (n >= PATH_MAX * 64 || memchr(s, '\0', n) || s[0] == '/')
    return false;
  size_t i = 0;
  while (i <= n) {
    const char *slash = memchr(s + i, '/', n - i);
    size_t j = slash ? (size_t)(slash - s) : n;
    if (!name_ok(s + i, j - i))
      return false;
    i = j + 1;
  }
  return true;
}

static bool root_usable(uint32_t root) {
  return root < (uint32_t)mpcp_nroots && mpcp_roots[root].src_fd >= 0 &&
         mpcp_roots[root].dst_fd >= 0;
}

/* Is this a whole, well-formed task of one of the kinds in `kinds`
 * (bit 1 << kind)? */
static bool task_ok(const char *t, size_t len, unsigned kinds) {
  mpcp_task_hdr_t h;
  if (!mpcp_task_hdr_read(&h, t, len) || h.kind > MPCP_T_WALK ||
      !(kinds & (1u << h.kind)) || !root_usable(h.root) ||
      !rel_ok(t + sizeof h, h.dir_len))
    return false;
  const char *p = t + sizeof h + h.dir_len, *end = t + len;
  if (h.kind == MPCP_T_WALK)
    return h.count == 0 && p == end;
  if (h.kind == MPCP_T_CHUNK) {
    mpcp_chunk_t c;
    if ((size_t)(end - p) < sizeof c)
      return false;
    memcpy(&c, p, sizeof c);
    p += sizeof c;
    if (c.name_len > NAME_MAX || c.tmp_len > NAME_MAX ||
        c.dname_len > NAME_MAX ||
        (size_t)c.name_len + c.tmp_len + c.dname_len != (size_t)(end - p))
      return false;
    return name_ok(p, c.name_len) && name_ok(p + c.name_len, c.tmp_len) &&
           name_ok(p + c.name_len + c.tmp_len, c.dname_len);
  }
  for (uint32_t i = 0; i < h.count; i++) {
    mpcp_ent_t e;
    if ((size_t)(end - p) < sizeof e)
      return false;
    memcpy(&e, p, sizeof e);
    p += sizeof e;
    if (e.name_len > NAME_MAX || e.dname_len > NAME_MAX ||
        (size_t)e.name_len + e.dname_len > (size_t)(end - p) ||
        !name_ok(p, e.name_len) ||
        (e.dname_len && !name_ok(p + e.name_len, e.dname_len)))
      return false;
    p += e.name_len + e.dname_len;
  }
  return p == end;
}

static void to_wstat(wstat_t *w, const struct stat *st, uint64_t root_dev) {
  memset(w, 0, sizeof *w);
  w->mode = st->st_mode;
  w->nlink = (uint32_t)st->st_nlink;
  w->uid = st->st_uid;
  w->gid = st->st_gid;
  w->size = (uint64_t)st->st_size;
  w->blocks = (uint64_t)st->st_blocks;
  w->rdev = st->st_rdev;
  w->dev = st->st_dev;
  w->ino = st->st_ino;
  w->atime_s = st->st_atim.tv_sec;
  w->atime_ns = (uint32_t)st->st_atim.tv_nsec;
  w->mtime_s = st->st_mtim.tv_sec;
  w->mtime_ns = (uint32_t)st->st_mtim.tv_nsec;
  if (st->st_dev == root_dev)
    w->flags |= WS_ROOT_DEV;
}

/* ---- root ------------------------------------------------------------------
 */

static char *hdr;
static size_t hdr_len;
static mode_t start_umask;
static uint64_t *root_dev; /* st_dev of each root's source, here */

/* Walk results waiting for the main thread (filled by the pool's callback
 * thread), oldest first. */
typedef struct blob {
  struct blob *next;
  size_t len;
  char data[];
} blob_t;
static pthread_mutex_t blob_lock = PTHREAD_MUTEX_INITIALIZER;
static blob_t *blob_head, *blob_tail;

/* Directories to hand out (a stack: depth first, as the local walk). */
typedef struct {
  int root;
  char *rel;
} walk_t;
static walk_t *walks;
static size_t nwalks, capwalks;
static size_t walks_out;   /* handed out, result not yet taken in */
static size_t walks_ready; /* results announced, not yet taken in */
static size_t walk_limit;
static int depth; /* > 0 while taking in a result (which may pump) */

static void oom(void) {
  fprintf(stderr, "mpcp: out of memory\n");
  exit(1);
}

static void destroy_at_exit(void) {
  /* The root returns from main without having copied (an error in the
   * arguments, nothing to do): the worker ranks wait in mp_pool_create. */
  if (made_pool) {
    mp_pool_close(made_pool);
    mp_pool_join(made_pool, MP_FOREVER);
    mp_pool_destroy(made_pool);
    made_pool = NULL;
  }
}

static void mpi_on_msg(const mpcp_msg_t *m, const char *text, size_t len);
static void worker_init(void *arg);

int mpcp_mpi_start(void) {
  start_umask = umask(0);
  umask(start_umask);
  mp_pool_opts_t o = {.backend = MP_POOL_MPI, .initializer = worker_init};
  int rc = mp_pool_create(&made_pool, &o);
  if (rc == MP_EWORKERRANK)
    return 1;
  if (rc == MP_ENOTSUP) {
    fprintf(stderr, "mpcp: --mpi: this mpcp was built without MPI (build "
                    "mproc with libopenmpi-dev installed)\n");
    return -1;
  }
  if (rc == MP_EINVAL) {
    fprintf(stderr, "mpcp: --mpi needs at least 2 MPI ranks: run it as "
                    "'mpirun -n N mpcp --mpi ...'\n");
    return -1;
  }
  if (rc == MP_EBINARY) {
    fprintf(stderr, "mpcp: --mpi: the ranks run different builds of mpcp "
                    "or of its libraries\n");
    return -1;
  }
  if (rc < 0) {
    fprintf(stderr, "mpcp: --mpi: cannot start the MPI pool: %s\n",
            mp_strerror(rc));
    return -1;
  }
  atexit(destroy_at_exit);
  mpcp_opt.jobs = mp_pool_size(made_pool);
  walk_limit = 4 * (size_t)mpcp_opt.jobs;
  if (walk_limit < 8)
    walk_limit = 8;
  if (mpcp_max_inflight < 8 * (uint64_t)mpcp_opt.jobs)
    mpcp_max_inflight = 8 * (uint64_t)mpcp_opt.jobs;
  mpcp_msg_hook = mpi_on_msg;
  return 0;
}

mp_pool_t *mpcp_mpi_take_pool(void) {
  mp_pool_t *p = made_pool;
  made_pool = NULL;
  return p;
}

/* The absolute path of a directory fd (the other ranks open it by name). */
static char *fd_path(int fd) {
  char link[64], buf[PATH_MAX];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, buf, sizeof buf - 1);
  if (n <= 0)
    return strdup("");
  buf[n] = '\0';
  return strdup(buf);
}

static void put(char **buf, size_t *len, size_t *cap, const void *p,
                size_t n) {
  if (n == 0)
    return;
  if (*len + n > *cap) {
    size_t nc = *cap ? *cap * 2 : 1024;
    while (nc < *len + n)
      nc *= 2;
    char *q = realloc(*buf, nc);
    if (!q)
      oom();
    *buf = q;
    *cap = nc;
  }
  memcpy(*buf + *len, p, n);
  *len += n;
}

/* The task header, made once all roots are resolved (before the first
 * task). */
static void make_hdr(void) {
  size_t cap = 0;
  hdr_t h = {.magic = MAGIC,
             .umask = start_umask,
             .flags = (mpcp_opt.verify ? H_VERIFY : 0) |
                      (mpcp_use_tmpfile ? H_TMPFILE : 0),
             .batch_files = mpcp_batch_files,
             .nroots = (uint32_t)mpcp_nroots,
             .jobs = (uint32_t)mpcp_opt.jobs,
             .chunk_min = mpcp_chunk_min,
             .chunk_size = mpcp_chunk_size};
  snprintf(h.temp_prefix, sizeof h.temp_prefix, "%s", mpcp_temp_prefix);
  put(&hdr, &hdr_len, &cap, &h, sizeof h);
  root_dev = calloc((size_t)mpcp_nroots + 1, sizeof *root_dev);
  if (!root_dev)
    oom();
  for (int i = 0; i < mpcp_nroots; i++) {
    mpcp_root_t *r = &mpcp_roots[i];
    bool usable = r->src_fd >= 0 && r->dst_fd >= 0;
    char *s[4] = {usable ? fd_path(r->src_fd) : strdup(""),
                  usable ? fd_path(r->dst_fd) : strdup(""),
                  strdup(r->src_disp ? r->src_disp : ""),
                  strdup(r->dst_disp ? r->dst_disp : "")};
    wroot_t w = {.usable = usable, .split = r->split};
    for (int k = 0; k < 4; k++) {
      if (!s[k])
        oom();
      w.len[k] = (uint32_t)strlen(s[k]);
    }
    put(&hdr, &hdr_len, &cap, &w, sizeof w);
    for (int k = 0; k < 4; k++) {
      put(&hdr, &hdr_len, &cap, s[k], w.len[k]);
      free(s[k]);
    }
    struct stat st;
    root_dev[i] = usable && fstat(r->src_fd, &st) == 0 ? st.st_dev : 0;
  }
  h.len = (uint32_t)hdr_len;
  memcpy(hdr, &h, sizeof h);
}

int mpcp_mpi_wrap(const void *task, size_t len, void **out, size_t *out_len) {
  if (!hdr)
    make_hdr();
  char *b = malloc(hdr_len + len);
  if (!b)
    return -ENOMEM;
  memcpy(b, hdr, hdr_len);
  memcpy(b + hdr_len, task, len);
  *out = b;
  *out_len = hdr_len + len;
  return 0;
}

/* Calls fn on each record of a result; false if it is not well formed. */
static bool each_rec(const char *p, size_t len,
                     void (*fn)(uint32_t type, const char *b, size_t n,
                                void *arg),
                     void *arg) {
  const char *end = p + len;
  while (p < end) {
    rec_t r;
    if ((size_t)(end - p) < sizeof r)
      return false;
    memcpy(&r, p, sizeof r);
    p += sizeof r;
    if (r.len > (size_t)(end - p))
      return false;
    fn(r.type, p, r.len, arg);
    p += r.len;
  }
  return true;
}

typedef struct {
  uint32_t kind; /* the task's */
  uint64_t file_id;
  bool found_pass, chunk_seen;
} fwd_t;

/* Callback thread: a message of a result onto the root's queue. */
static void forward(uint32_t type, const char *b, size_t n, void *arg) {
  fwd_t *f = arg;
  mpcp_msg_t m;
  if ((type != R_MSG && type != R_FOUND) || n < sizeof m ||
      (type == R_FOUND) != f->found_pass)
    return;
  memcpy(&m, b, sizeof m);
  const char *text = b + sizeof m;
  size_t tlen = n - sizeof m;
  if (tlen > MPCP_MSG_MAX - sizeof m)
    tlen = MPCP_MSG_MAX - sizeof m;
  if (type == R_FOUND) {
    m.kind = MPCP_M_FOUND;
    mpcp_send(&m, NULL, 0);
    return;
  }
  switch (m.kind) {
  case MPCP_M_DONE: /* the root answers the completion itself */
    m.kind = MPCP_M_PROGRESS;
    m.id = 0;
    /* fall through */
  case MPCP_M_PROGRESS:
    mpcp_send(&m, NULL, 0);
    break;
  case MPCP_M_ERROR:
  case MPCP_M_TEXT:
    mpcp_send(&m, text, tlen);
    break;
  case MPCP_M_CHUNK:
    /* One per chunk task, for the file that task copied. */
    if (f->kind == MPCP_T_CHUNK && !f->chunk_seen && m.id == f->file_id) {
      f->chunk_seen = true;
      mpcp_send(&m, text, tlen);
    }
    break;
  default:
    break;
  }
}

static void push_blob(const void *data, size_t len) {
  blob_t *b = malloc(sizeof *b + len);
  if (!b)
    oom();
  b->next = NULL;
  b->len = len;
  if (len)
    memcpy(b->data, data, len);
  pthread_mutex_lock(&blob_lock);
  if (blob_tail)
    blob_tail->next = b;
  else
    blob_head = b;
  blob_tail = b;
  pthread_mutex_unlock(&blob_lock);
  mpcp_msg_t w = {.kind = MPCP_M_WALKED};
  mpcp_send(&w, NULL, 0);
}

void mpcp_mpi_result(const void *data, size_t len, uint32_t kind, uint64_t id,
                     uint64_t file_id) {
  fwd_t f = {.kind = kind, .file_id = file_id, .found_pass = true};
  bool ok = each_rec(data, len, forward, &f);
  f.found_pass = false;
  ok = each_rec(data, len, forward, &f) && ok;
  if (kind == MPCP_T_WALK)
    push_blob(data, ok ? len : 0);
  if (!ok) {
    mpcp_msg_t e = {.kind = MPCP_M_ERROR, .errors = 1};
    const char *t = "mpcp: a worker rank sent a malformed answer";
    mpcp_send(&e, t, strlen(t));
  }
  if (kind == MPCP_T_CHUNK && !f.chunk_seen) {
    mpcp_msg_t c = {.kind = MPCP_M_CHUNK, .id = file_id, .errors = 1};
    mpcp_send(&c, NULL, 0);
  }
  mpcp_msg_t d = {.kind = MPCP_M_DONE, .id = id};
  mpcp_send(&d, NULL, 0);
}

void mpcp_mpi_failed(uint32_t kind) {
  if (kind == MPCP_T_WALK)
    push_blob(NULL, 0); /* nothing to take in; the error is said */
}

static void from_wstat(struct stat *st, const wstat_t *w, int root) {
  memset(st, 0, sizeof *st);
  st->st_mode = w->mode;
  st->st_nlink = w->nlink;
  st->st_uid = w->uid;
  st->st_gid = w->gid;
  st->st_size = (off_t)(w->size > INT64_MAX ? INT64_MAX : w->size);
  st->st_blocks = (blkcnt_t)(w->blocks > INT64_MAX ? INT64_MAX : w->blocks);
  st->st_rdev = w->rdev;
  /* Device numbers of one filesystem may differ between hosts: entries on
   * the filesystem of the root's source are grouped under its number
   * here. */
  st->st_dev = (w->flags & WS_ROOT_DEV) ? root_dev[root] : w->dev;
  st->st_ino = w->ino;
  st->st_atim.tv_sec = w->atime_s;
  st->st_atim.tv_nsec = w->atime_ns < 1000000000u ? w->atime_ns : 0;
  st->st_mtim.tv_sec = w->mtime_s;
  st->st_mtim.tv_nsec = w->mtime_ns < 1000000000u ? w->mtime_ns : 0;
}

static void push_walk(int root, char *rel) {
  if (nwalks == capwalks) {
    size_t nc = capwalks ? capwalks * 2 : 64;
    walk_t *n = realloc(walks, nc * sizeof *n);
    if (!n)
      oom();
    walks = n;
    capwalks = nc;
  }
  walks[nwalks++] = (walk_t){root, rel};
}

static void take_ents(const char *b, size_t n) {
  wents_t h;
  if (n < sizeof h)
    return;
  memcpy(&h, b, sizeof h);
  const char *p = b + sizeof h, *end = b + n;
  if (!root_usable(h.root) || h.dir_len > (size_t)(end - p) ||
      !rel_ok(p, h.dir_len) || h.n > (size_t)(end - p) / sizeof(went_t))
    return;
  char *dir = strndup(p, h.dir_len);
  p += h.dir_len;
  struct stat *st = calloc(h.n + 1, sizeof *st);
  char **names = calloc(h.n + 1, sizeof *names);
  char **dnames = calloc(h.n + 1, sizeof *dnames);
  bool *follow = calloc(h.n + 1, sizeof *follow);
  if (!dir || !st || !names || !dnames || !follow)
    oom();
  size_t k = 0;
  for (; k < h.n; k++) {
    went_t e;
    if ((size_t)(end - p) < sizeof e)
      break;
    memcpy(&e, p, sizeof e);
    p += sizeof e;
    if ((size_t)e.name_len + e.dname_len > (size_t)(end - p) ||
        !name_ok(p, e.name_len) || !name_ok(p + e.name_len, e.dname_len))
      break;
    from_wstat(&st[k], &e.st, (int)h.root);
    names[k] = strndup(p, e.name_len);
    dnames[k] = strndup(p + e.name_len, e.dname_len);
    if (!names[k] || !dnames[k])
      oom();
    follow[k] = e.follow != 0;
    p += e.name_len + e.dname_len;
    if (S_ISDIR(st[k].st_mode)) { /* never a directory here */
      free(names[k]);
      free(dnames[k]);
      k--;
    }
  }
  depth++;
  mpcp_add_entries((int)h.root, dir, h.flags & (MPCP_TF_SETGID_DIR |
                                                MPCP_TF_DEFACL),
                   k, st, names, dnames, follow);
  depth--;
  for (size_t i = 0; i < k; i++) {
    free(names[i]);
    free(dnames[i]);
  }
  free(names);
  free(dnames);
  free(st);
  free(follow);
  free(dir);
}

/* Main thread: one record of a walk's result. */
static void take_rec(uint32_t type, const char *b, size_t n, void *arg) {
  (void)arg;
  if (mpcp_stop_sig)
    return;
  if (type == R_DIR) {
    wdir_t d;
    if (n < sizeof d)
      return;
    memcpy(&d, b, sizeof d);
    if (!root_usable(d.root) || d.len != n - sizeof d || d.len == 0 ||
        !rel_ok(b + sizeof d, d.len))
      return;
    char *rel = strndup(b + sizeof d, d.len);
    if (!rel)
      oom();
    struct stat st;
    from_wstat(&st, &d.st, (int)d.root);
    if (!S_ISDIR(st.st_mode)) {
      free(rel);
      return;
    }
    mpcp_add_dir((int)d.root, rel, &st, d.created != 0);
    push_walk((int)d.root, rel);
  } else if (type == R_ENTS) {
    take_ents(b, n);
  } else if (type == R_BATCH) {
    if (!task_ok(b, n, 1u << MPCP_T_BATCH))
      return;
    char *t = malloc(n);
    if (!t)
      oom();
    memcpy(t, b, n);
    depth++;
    mpcp_submit_task(t, n, true);
    depth--;
    free(t);
  }
}

/* Main thread: takes in the walk results announced so far. */
static void take_walks(void) {
  if (depth > 0)
    return; /* the outer call goes on with them */
  while (walks_ready > 0) {
    pthread_mutex_lock(&blob_lock);
    blob_t *b = blob_head;
    if (b && !(blob_head = b->next))
      blob_tail = NULL;
    pthread_mutex_unlock(&blob_lock);
    if (!b)
      break;
    walks_ready--;
    walks_out--;
    depth++;
    each_rec(b->data, b->len, take_rec, NULL);
    depth--;
    free(b);
  }
}

static void mpi_on_msg(const mpcp_msg_t *m, const char *text, size_t len) {
  (void)text;
  (void)len;
  if (m->kind == MPCP_M_FOUND) {
    mpcp_prog.files_total += m->files;
    mpcp_prog.bytes_total += m->bytes;
    mpcp_stats.skipped += m->same;
    mpcp_stats.excluded += m->mismatches;
  } else if (m->kind == MPCP_M_WALKED) {
    walks_ready++;
    take_walks();
  }
}

/* Hands out one directory to walk. */
static void hand_out_walk(void) {
  walk_t w = walks[--nwalks];
  size_t n = strlen(w.rel);
  mpcp_task_hdr_t h = {.kind = MPCP_T_WALK,
                       .root = (uint32_t)w.root,
                       .dir_len = (uint32_t)n};
  char *t = malloc(sizeof h + n);
  if (!t)
    oom();
  memcpy(t, &h, sizeof h);
  memcpy(t + sizeof h, w.rel, n);
  walks_out++;
  depth++;
  if (!mpcp_submit_task(t, sizeof h + n, false))
    walks_out--; /* the error was said (or we were interrupted) */
  depth--;
  free(t);
  free(w.rel);
}

void mpcp_mpi_walk(int root, const struct stat *top_st, bool top_created) {
  /* A dry run copies nothing: the root walks alone, as locally. So does
   * MPCP_MPI_ROOT_WALK=1 (to measure what sharing the walk gains). */
  const char *rw = getenv("MPCP_MPI_ROOT_WALK");
  if (mpcp_opt.dry_run || (rw && *rw == '1')) {
    mpcp_walk(root, top_st, top_created);
    return;
  }
  mpcp_walk_top(root, top_st, top_created);
  char *top = strdup("");
  if (!top)
    oom();
  push_walk(root, top);
  while (!mpcp_stop_sig && (nwalks || walks_out)) {
    while (nwalks && walks_out < walk_limit && !mpcp_stop_sig)
      hand_out_walk();
    if (walks_out)
      mpcp_pump(100);
    take_walks();
  }
  while (nwalks)
    free(walks[--nwalks].rel);
}

/* ---- worker rank -------------------------------------------------------------
 */

static mp_buf_t *cur;          /* the running task's result */
static char suffix[128];       /* " (rank R on HOST)" */
static char *hdr_seen;         /* the header the roots were opened from */
static size_t hdr_seen_len;
static bool run_verify;        /* the root's --verify: no batch copied here */
static bool in_walk;           /* a walk task runs: its batches are held */
static char *held;             /* the walk's batches: u32 length + bytes */
static size_t held_len, held_cap;
static uint32_t nsubdirs;
static uint64_t *my_root_dev;  /* st_dev of each root's source, here */
static char *ents;             /* entries for the root, of the running walk */
static size_t ents_len, ents_cap;
static wents_t ents_h;

static void worker_init(void *arg) {
  (void)arg;
  mpcp_mpi_worker = true;
  mpcp_euid = geteuid();
  mpcp_egid = getegid();
  mpcp_worker_init();
  mpcp_prog.enabled = false;
  /* The root decides what needs verifying and keeps the batches for it;
   * a walk here never waits for its own batches (they are not counted
   * back here). */
  mpcp_opt.verify = false;
  mpcp_max_inflight = UINT64_MAX;
}

static void add_rec(uint32_t type, const void *a, size_t an, const void *b,
                    size_t bn, const void *c, size_t cn) {
  if (!cur)
    return;
  rec_t r = {.type = type, .len = (uint32_t)(an + bn + cn)};
  mp_buf_append(cur, &r, sizeof r);
  if (an)
    mp_buf_append(cur, a, an);
  if (bn)
    mp_buf_append(cur, b, bn);
  if (cn)
    mp_buf_append(cur, c, cn);
}

void mpcp_mpi_send(const mpcp_msg_t *m, const char *text, size_t text_len) {
  size_t room = MPCP_MSG_MAX - sizeof *m;
  bool tag = text_len &&
             (m->kind == MPCP_M_ERROR || m->kind == MPCP_M_CHUNK);
  size_t slen = tag ? strlen(suffix) : 0;
  if (text_len + slen > room) {
    if (slen > room)
      slen = 0;
    text_len = room - slen;
  }
  add_rec(R_MSG, m, sizeof *m, text, text_len, suffix, slen);
}

static void line_hook(int kind, const char *text) {
  mpcp_msg_t m = {.kind = kind == MPCP_LINE_TEXT ? MPCP_M_TEXT : MPCP_M_ERROR,
                  .errors = kind == MPCP_LINE_ERROR};
  mpcp_mpi_send(&m, text, strlen(text));
}

static void entry_hook(int root, const char *dir, uint32_t flags,
                       const struct stat *st, const char *name,
                       const char *dname, bool follow) {
  went_t e = {.follow = follow,
              .name_len = (uint32_t)strlen(name),
              .dname_len = (uint32_t)strlen(dname)};
  to_wstat(&e.st, st, my_root_dev[root]);
  if (!ents_h.n) {
    ents_h.root = (uint32_t)root;
    ents_h.flags = flags;
    ents_h.dir_len = (uint32_t)strlen(dir);
    put(&ents, &ents_len, &ents_cap, dir, ents_h.dir_len);
  }
  ents_h.n++;
  put(&ents, &ents_len, &ents_cap, &e, sizeof e);
  put(&ents, &ents_len, &ents_cap, name, e.name_len);
  put(&ents, &ents_len, &ents_cap, dname, e.dname_len);
}

static void subdir_found(int root, char *rel, const struct stat *st,
                         bool created, void *arg) {
  (void)arg;
  wdir_t d = {.root = (uint32_t)root,
              .created = created,
              .len = (uint32_t)strlen(rel)};
  to_wstat(&d.st, st, my_root_dev[root]);
  add_rec(R_DIR, &d, sizeof d, rel, d.len, NULL, 0);
  nsubdirs++;
  free(rel);
}

int mpcp_mpi_worker_submit(const void *task, size_t len) {
  if (!in_walk || len > UINT32_MAX)
    return -EINVAL;
  uint32_t n = (uint32_t)len;
  put(&held, &held_len, &held_cap, &n, sizeof n);
  put(&held, &held_len, &held_cap, task, len);
  return 0;
}

/* The batches of a walked directory. One with subdirectories sends them
 * all out at once, so that the walk spreads to the other ranks without
 * waiting for a copy here. A leaf copies its first MPI_INLINE batches here
 * (while its entries are fresh in this host's caches, and without a round
 * trip through the root: the most of a tree's files are in leaves) and
 * sends out the rest, so that a huge directory still gets every rank. */
#define MPI_INLINE 4
static void release_held(void) {
  uint32_t inline_left = run_verify || nsubdirs ? 0 : MPI_INLINE;
  for (size_t off = 0; off < held_len;) {
    uint32_t n;
    memcpy(&n, held + off, sizeof n);
    off += sizeof n;
    if (inline_left > 0) {
      inline_left--;
      mpcp_worker_task(held + off, n);
    } else {
      add_rec(R_BATCH, held + off, n, NULL, 0, NULL, 0);
    }
    off += n;
  }
  held_len = 0;
}

static void free_roots(void) {
  for (int i = 0; i < mpcp_nroots; i++)
    mpcp_root_close(&mpcp_roots[i]);
  free(mpcp_roots);
  mpcp_roots = NULL;
  mpcp_nroots = 0;
  free(my_root_dev);
  my_root_dev = NULL;
}

/* Takes the run's settings and opens the roots, from a task's header.
 * 0, or an error written into result. */
static int open_roots(const char *p, size_t len, mp_buf_t *result) {
  hdr_t h;
  memcpy(&h, p, sizeof h);
  if (h.nroots > (len - sizeof h) / sizeof(wroot_t) ||
      h.chunk_size < 4096 || h.batch_files == 0 || h.jobs == 0 ||
      !memchr(h.temp_prefix, '\0', sizeof h.temp_prefix))
    return mp_task_error(result, MP_EINVAL, "mpcp: malformed task%s",
                         suffix);
  free_roots();
  mpcp_roots = calloc(h.nroots + 1, sizeof *mpcp_roots);
  my_root_dev = calloc(h.nroots + 1, sizeof *my_root_dev);
  if (!mpcp_roots || !my_root_dev)
    return mp_task_error(result, MP_ENOMEM, "mpcp: out of memory%s", suffix);
  const char *q = p + sizeof h, *end = p + len;
  int rc = 0;
  bool malformed = false;
  for (uint32_t i = 0; i < h.nroots; i++) {
    mpcp_roots[i].src_fd = mpcp_roots[i].dst_fd = -1;
    mpcp_nroots = (int)i + 1;
    wroot_t w;
    if ((size_t)(end - q) < sizeof w) {
      malformed = true;
      break;
    }
    memcpy(&w, q, sizeof w);
    q += sizeof w;
    char *s[4];
    for (int k = 0; k < 4; k++) {
      s[k] = NULL;
      if (w.len[k] <= (size_t)(end - q) && !memchr(q, '\0', w.len[k])) {
        s[k] = strndup(q, w.len[k]);
        q += w.len[k];
      }
    }
    if (!s[0] || !s[1] || !s[2] || !s[3]) {
      for (int k = 0; k < 4; k++)
        free(s[k]);
      malformed = true;
      break;
    }
    mpcp_roots[i].src_disp = s[2];
    mpcp_roots[i].dst_disp = s[3];
    mpcp_roots[i].split = w.split != 0;
    if (w.usable) {
      int fd = open(s[0], O_PATH | O_DIRECTORY | O_CLOEXEC);
      int e = errno;
      if (fd >= 0) {
        struct stat st;
        my_root_dev[i] = fstat(fd, &st) == 0 ? st.st_dev : 0;
        mpcp_roots[i].src_fd = fd;
        fd = open(s[1], O_PATH | O_DIRECTORY | O_CLOEXEC);
        e = errno;
        if (fd >= 0)
          mpcp_roots[i].dst_fd = fd;
      }
      if (fd < 0) {
        rc = mp_task_error(result, -e, "mpcp: cannot open directory '%s': "
                           "%s%s",
                           mpcp_roots[i].src_fd < 0 ? s[0] : s[1],
                           strerror(e), suffix);
        free(s[0]);
        free(s[1]);
        break;
      }
    }
    free(s[0]);
    free(s[1]);
  }
  if (malformed)
    rc = mp_task_error(result, MP_EINVAL, "mpcp: malformed task%s", suffix);
  if (rc != 0) {
    free_roots();
    return rc;
  }
  /* The root's settings: what it read from its environment. */
  mpcp_walk_init(h.umask);
  umask(mpcp_opt.archive ? 0 : h.umask);
  snprintf(mpcp_temp_prefix, sizeof mpcp_temp_prefix, "%.40sr%d-", h.temp_prefix,
           mp_pool_worker_index() + 1);
  mpcp_opt.jobs = (int)(h.jobs > 4096 ? 4096 : h.jobs);
  mpcp_chunk_min = h.chunk_min;
  mpcp_chunk_size = h.chunk_size;
  mpcp_batch_files = h.batch_files;
  mpcp_use_tmpfile = (h.flags & H_TMPFILE) != 0;
  run_verify = (h.flags & H_VERIFY) != 0;
  free(hdr_seen);
  hdr_seen = malloc(h.len);
  if (hdr_seen)
    memcpy(hdr_seen, p, h.len);
  hdr_seen_len = hdr_seen ? h.len : 0;
  return 0;
}

/* Walks one directory (see the top of the file for what goes back). */
static void walk_task(const mpcp_task_hdr_t *h, const char *dir) {
  uint64_t files = mpcp_prog.files_total, bytes = mpcp_prog.bytes_total;
  uint64_t skipped = mpcp_stats.skipped, excluded = mpcp_stats.excluded;
  ents_len = 0;
  memset(&ents_h, 0, sizeof ents_h);
  nsubdirs = 0;
  in_walk = true;
  mpcp_walk_dir((int)h->root, dir, subdir_found, NULL);
  in_walk = false;
  if (ents_h.n)
    add_rec(R_ENTS, &ents_h, sizeof ents_h, ents, ents_len, NULL, 0);
  release_held();
  mpcp_msg_t f = {.kind = MPCP_M_FOUND,
                  .files = mpcp_prog.files_total - files,
                  .bytes = mpcp_prog.bytes_total - bytes,
                  .same = mpcp_stats.skipped - skipped,
                  .mismatches = mpcp_stats.excluded - excluded};
  add_rec(R_FOUND, &f, sizeof f, NULL, 0, NULL, 0);
}

int mpcp_mpi_task(const void *arg, size_t len, mp_buf_t *result, void *ctx) {
  (void)ctx;
  if (!suffix[0]) {
    char host[64] = "?";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    snprintf(suffix, sizeof suffix, " (rank %d on %s)",
             mp_pool_worker_index() + 1, host);
    mpcp_line_hook = line_hook;
    mpcp_root_entry_hook = entry_hook;
  }
  const char *p = arg;
  hdr_t h;
  if (len < sizeof h)
    return mp_task_error(result, MP_EINVAL, "mpcp: malformed task%s", suffix);
  memcpy(&h, p, sizeof h);
  if (h.magic != MAGIC || h.len < sizeof h || h.len > len)
    return mp_task_error(result, MP_EINVAL, "mpcp: malformed task%s", suffix);
  if (h.len != hdr_seen_len || memcmp(p, hdr_seen, h.len) != 0) {
    int rc = open_roots(p, h.len, result);
    if (rc != 0)
      return rc;
  }
  const char *task = p + h.len;
  size_t tlen = len - h.len;
  if (!task_ok(task, tlen,
               (1u << MPCP_T_BATCH) | (1u << MPCP_T_CHUNK) |
                   (1u << MPCP_T_VERIFY) | (1u << MPCP_T_WALK)))
    return mp_task_error(result, MP_EINVAL, "mpcp: malformed task%s", suffix);
  mpcp_task_hdr_t th;
  memcpy(&th, task, sizeof th);
  cur = result;
  int rc = 0;
  if (th.kind == MPCP_T_WALK) {
    char *dir = strndup(task + sizeof th, th.dir_len);
    if (dir)
      walk_task(&th, dir);
    else
      rc = mp_task_error(result, MP_ENOMEM, "mpcp: out of memory%s", suffix);
    free(dir);
  } else {
    mpcp_worker_task(task, tlen);
  }
  cur = NULL;
  return rc;
}
