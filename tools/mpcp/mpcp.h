/* mpcp internals: shared between the walker (parent), the workers and the
 * executor. Only the public mproc API is used underneath (see exec.c).
 *
 * Shape of a run: the parent resolves SRC/DEST, opens one directory fd per
 * top-level source and destination ("roots"), then starts the workers, which
 * inherit those fds. The walker creates every destination directory itself
 * and hands regular files, symlinks and special files to the workers in
 * batches (one task per batch of entries of one directory, never one task per
 * file). Workers address everything relative to the root fds with openat, so
 * path length is not limited by PATH_MAX. Progress, errors and -v lines come
 * back to the parent as small messages on one queue, sent once per batch (or
 * every few MiB inside a big file). */
#ifndef MPCP_H
#define MPCP_H

#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#define MPCP_VERSION "0.1.0"

/* Files at least this big are split into chunks copied by several workers
 * when the destination is a network or cluster filesystem (mpcp_split_fs);
 * on a local one, writes to one file are serialized by its inode lock, so a
 * big file is copied whole by one worker (sendfile or copy_file_range) while
 * other workers copy other files. MPCP_CHUNK_MIN and MPCP_CHUNK_SIZE in the
 * environment override both sizes, and MPCP_CHUNK_MIN splits on any
 * filesystem. */
#define MPCP_CHUNK_MIN (64ull << 20)
#define MPCP_CHUNK_SIZE (32ull << 20)
extern uint64_t mpcp_chunk_min, mpcp_chunk_size;
/* Write-behind: a file of at least twice this many bytes, copied whole, is
 * flushed to disk in steps of this size by a helper thread while the copy
 * goes on (copy.c). MPCP_WRITEBEHIND in the environment sets the step in
 * MiB; 0 turns it off. */
#define MPCP_WB_STEP (64ull << 20)
extern uint64_t mpcp_wb_step;
/* A batch is flushed at this many entries or bytes. */
#define MPCP_BATCH_FILES 96
#define MPCP_BATCH_BYTES (8ull << 20)
extern uint32_t mpcp_batch_files; /* MPCP_BATCH_FILES in the environment */

typedef struct {
  bool recursive, archive, no_clobber, update, dry_run, verbose, verify, json;
  bool resume, checksum; /* --resume, --checksum */
  bool mpi;              /* --mpi: on the ranks of an MPI job (mpi.c) */
  int progress; /* -1: auto (stderr is a tty), 0 off, 1 on */
  int jobs;
  char **excludes;
  int nexcludes;
} mpcp_opts_t;

/* One top-level SRC: the directory fds everything is relative to. */
typedef struct {
  char *src_disp; /* display prefix of the source side ("" for none) */
  char *dst_disp;
  int src_fd, dst_fd;
  int no_clone; /* in a worker: 1 FICLONE, 2 copy_file_range, 4 sendfile
                   failed on this root (not tried again) */
  bool split;   /* big files are split into chunks (see mpcp_split_fs) */
} mpcp_root_t;

extern mpcp_opts_t mpcp_opt;
extern mpcp_root_t *mpcp_roots;
extern int mpcp_nroots;
extern bool mpcp_use_tmpfile;
extern uid_t mpcp_euid; /* cached: asked once per file otherwise */
extern gid_t mpcp_egid; /* O_TMPFILE + linkat, else temp name+rename */

/* ---- tasks (parent -> worker) ------------------------------------------ */
enum { MPCP_T_BATCH = 1, MPCP_T_CHUNK = 2, MPCP_T_VERIFY = 3,
       MPCP_T_WALK = 4 /* --mpi: walk one directory (mpi.c) */ };
enum {
  MPCP_TF_SETGID_DIR = 1, /* destination dir is setgid: always chown */
  MPCP_TF_RETRY = 2,      /* a retry after a worker died: not again */
  MPCP_TF_DEFACL = 4,     /* destination dir has a default ACL (-a: drop
                             what new entries inherit from it) */
  MPCP_TF_SWEEP = 8,      /* --resume: first batch of its directory: the
                             worker removes stale temp files there first */
};

typedef struct {
  uint32_t kind;
  uint32_t root;
  uint64_t id;
  uint32_t count;
  uint32_t dir_len; /* relative directory path follows the header */
  uint32_t flags;
  uint32_t regs; /* regular files among count (for --verify progress) */
} mpcp_task_hdr_t;

/* Copy the header of a task of len bytes (untrusted: from another process
 * or rank) into *h. False unless the header is whole, names a root below
 * mpcp_nroots and its directory path fits in the task. */
static inline bool mpcp_task_hdr_read(mpcp_task_hdr_t *h, const void *task,
                                      size_t len) {
  if (len < sizeof *h)
    return false;
  memcpy(h, task, sizeof *h);
  return h->root < (uint32_t)mpcp_nroots && h->dir_len <= len - sizeof *h;
}

enum {
  MPCP_EF_SPARSE = 1,
  MPCP_EF_FOLLOW = 2, /* a top-level SRC symlink copied as its target */
};

typedef struct {
  uint32_t mode; /* st_mode: type and permission bits */
  uint32_t flags;
  uint32_t uid, gid;
  uint64_t size;
  uint64_t rdev;
  int64_t atime_s, mtime_s;
  uint32_t atime_ns, mtime_ns;
  uint32_t name_len, dname_len; /* source name, then destination name */
} mpcp_ent_t;

typedef struct {
  uint64_t file_id, offset, len;
  uint32_t name_len, tmp_len, flags, dname_len; /* name, tmp, dname follow */
} mpcp_chunk_t;

/* ---- messages (worker -> parent) --------------------------------------- */
enum {
  MPCP_M_PROGRESS = 1, /* increments of files/bytes done */
  MPCP_M_DONE = 2,     /* task `id` finished (with last increments) */
  MPCP_M_ERROR = 3,    /* text: one line; counts an error if errors != 0
                          (else a warning: printed, exit status kept) */
  MPCP_M_TEXT = 4,     /* text: -v lines for stdout */
  MPCP_M_CHUNK = 5,    /* chunk of file `id` finished, errors = failed;
                          text: the error (the parent prints the first) */
  MPCP_M_RETRY = 6,    /* a batch's worker died: mpcp_exec_take_dead */
  MPCP_M_DIED = 7,     /* a worker died (its temp file may be left) */
  MPCP_M_FOUND = 8,    /* --mpi: what a rank's walk found (mpi.c) */
  MPCP_M_WALKED = 9,   /* --mpi: a walk's result is ready (mpi.c) */
};

/* On PROGRESS and DONE, `errors` counts entries that failed (they are in
 * `files` too: files is entries finished either way). */
typedef struct {
  uint32_t kind;
  uint32_t errors;
  uint64_t id;
  uint64_t files;
  uint64_t bytes;
  uint64_t mismatches;
  uint64_t same, same_bytes; /* --resume: entries found unchanged */
} mpcp_msg_t;

#define MPCP_MSG_MAX 4096

/* ---- executor (exec.c) --------------------------------------------------
 * The parent's view of the workers: submit task bytes, receive messages.
 * Workers run mpcp_worker_task() and talk back with mpcp_send(). */
int mpcp_exec_start(int nworkers);
/* The walk is over: a run with a single task so far runs it in the parent
 * (no pool is started); later tasks run there too. */
void mpcp_exec_walk_done(void);
/* Queues one task; copies the bytes. 0 or a negative errno. */
int mpcp_exec_submit(const void *task, size_t len);
/* Next message into buf (MPCP_MSG_MAX bytes): its length, 0 on timeout, or a
 * negative code. */
int mpcp_exec_recv(void *buf, int timeout_ms);
/* Waits for all workers to finish (abort: stop them now). */
void mpcp_exec_stop(bool abort);
/* Parent: takes back a batch whose worker died (malloc'd copy), if any. */
bool mpcp_exec_take_dead(char **task, size_t *len);
/* The source path of a task's first entry, for messages (malloc'd). Safe
 * from any thread of the parent. */
char *mpcp_task_path(const char *task, size_t len);
/* Worker side: sends one message to the parent. */
void mpcp_send(const mpcp_msg_t *m, const char *text, size_t text_len);

/* ---- worker (copy.c) ---------------------------------------------------- */
/* --resume: removes the temp files an interrupted run left in directory
 * dir (".mpcp-<pid>-..." whose mpcp is no longer running). */
void mpcp_remove_stale_temps(int dir);
/* Set by the parent's signal handler (the signal number); the copy loops
 * stop on it when a task runs inline in the parent. */
extern volatile sig_atomic_t mpcp_stop_sig;
void mpcp_worker_init(void);
int mpcp_worker_task(const void *task, size_t len);
/* --resume: is the destination entry d (lstat) the same as the source st
 * (type, size, mtime; a symlink's target; a device's number)? 1 yes, 0 no,
 * 2 same size and --checksum: the contents decide. */
int mpcp_resume_same(int sdir, int ddir, const struct stat *st,
                     const struct stat *d, const char *name,
                     const char *dname);
/* Parent side helpers shared with the final phase. */
/* Prints a message about `path` (worker: sent to the parent). An error
 * counts (exit 1); a warning does not. */
typedef void (*mpcp_say_fn)(bool error, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
enum {
  MPCP_MF_DIR = 1,      /* a directory */
  MPCP_MF_CHOWN = 2,    /* always chown (setgid dir, preallocated file) */
  MPCP_MF_CHMOD = 4,    /* always chmod (mode not set at creation) */
  MPCP_MF_DEFACL = 8,   /* drop an ACL inherited from the parent */
};
/* -a metadata of an open destination: ownership, mode, xattrs/ACLs, times.
 * What cannot be kept is reported as cp -a does (ownership as root and
 * permissions: an error, exit 1; times: a warning; ownership for a normal
 * user and xattrs it may not set: nothing); the file itself always stays.
 * Returns -1 if an error was said. */
int mpcp_set_meta_fd(int fd, const mpcp_ent_t *e, int src_fd, unsigned flags,
                     const char *disp, mpcp_say_fn say);
int mpcp_copy_data(mpcp_root_t *r, int sfd, int dfd, uint64_t off, uint64_t len,
                   bool sparse, bool whole, uint64_t *copied);

/* Is the filesystem of fd one where writers of one file run in parallel
 * (NFS, SMB, Lustre, GPFS, BeeGFS, CephFS, FUSE)? */
bool mpcp_split_fs(int fd);

/* ---- paths (path.c) ----------------------------------------------------- */
/* openat() for a relative path of any length: long paths are opened in
 * pieces below PATH_MAX. */
int mpcp_open_rel(int dirfd, const char *rel, int flags, mode_t mode);
/* Joins display pieces, skipping empty and "." parts: malloc'd. */
char *mpcp_join(const char *a, const char *b, const char *c);
void mpcp_temp_name(char *buf, size_t len);
/* Closes a root's fds and frees its names. */
void mpcp_root_close(mpcp_root_t *r);
/* Quotes a name as cp does in -v lines and messages ('a', "it's",
 * 'a'$'\n''b', 'x'$'\377''y'): six bytes of out per byte of s always fit. */
void mpcp_quote(const char *s, char *out, size_t len);
/* snprintf for messages: knows %s, %.*s and %% only; a name written '%s' in
 * the format is quoted with mpcp_quote. Returns the length written. */
int mpcp_vformat(char *out, size_t len, const char *fmt, va_list ap);
int mpcp_format(char *out, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* "'src' -> 'dst'\n", quoted: malloc'd (NULL without memory). */
char *mpcp_verbose_text(const char *src, const char *dst);
/* getpid() of this process: set by the parent at start and by each worker
 * in mpcp_worker_init (temp names are made per file). */
extern pid_t mpcp_self_pid;
extern char mpcp_temp_prefix[64];

/* ---- verify (verify.c) --------------------------------------------------- */
/* XXH3-128 of the whole file: 0 or -errno. */
int mpcp_hash_fd(int fd, uint64_t out[2]);

/* ---- progress (progress.c) ---------------------------------------------- */
typedef struct {
  uint64_t files_total, bytes_total, files_done, bytes_done;
  uint64_t errors;
  bool walk_done;
  bool enabled, tty;
  uint64_t verify_done, verify_total; /* --verify phase when total != 0 */
  uint64_t rate_bytes;
  double start, last_draw, shown_frac, rate;
  int drawn_len;
} mpcp_progress_t;

double mpcp_now(void);
void mpcp_progress_draw(mpcp_progress_t *p, bool force);
void mpcp_progress_clear(mpcp_progress_t *p);
void mpcp_human_bytes(double v, char *buf, size_t len);

#endif
