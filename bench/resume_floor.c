/* The least kernel work that decides "unchanged" for every entry of a tree
 * copied before: what `mpcp -a --resume` and `rsync -a` over an unchanged
 * destination cannot do less of. Not part of mpcp; a yardstick for the
 * copy_resume benchmark rows.
 *
 *   resume_floor [-t THREADS] [-x] [-D] [-m] SRC DST
 *
 * Per directory: getdents64 of the source directory with a 256 KiB buffer
 * (with -D also of the destination directory, as a sweep for stale temp
 * files would); per entry: one stat of the source entry and one of the
 * destination entry, relative to the directories' fds, by a single name
 * component, never following symlinks (fstatat, or statx with only the
 * fields the comparison needs with -x). An entry whose type, size or mtime
 * differs (or, with -m, mode/owner) is counted as changed. Directories are
 * handed out to THREADS threads (default 1) through one locked stack.
 * Prints entries, changed, wall and CPU seconds (user, sys). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define BUF (256u << 10)

static int src_root, dst_root;
static bool use_statx, read_dst, check_meta;

typedef struct {
  char **v;
  size_t n, cap;
  int busy; /* threads working on a directory */
  pthread_mutex_t mu;
  pthread_cond_t cv;
} stack_t_;

static stack_t_ work = {.mu = PTHREAD_MUTEX_INITIALIZER,
                        .cv = PTHREAD_COND_INITIALIZER};
static uint64_t total_entries, total_changed;
static pthread_mutex_t count_mu = PTHREAD_MUTEX_INITIALIZER;

static void push(char *rel) {
  if (work.n == work.cap) {
    work.cap = work.cap ? work.cap * 2 : 256;
    work.v = realloc(work.v, work.cap * sizeof *work.v);
    if (!work.v)
      abort();
  }
  work.v[work.n++] = rel;
}

typedef struct {
  unsigned mode;
  uint32_t uid, gid;
  uint64_t size;
  int64_t mt_s;
  uint32_t mt_ns;
} meta_t;

static int get(int dir, const char *name, meta_t *m) {
  if (use_statx) {
    struct statx x;
    unsigned mask = STATX_TYPE | STATX_SIZE | STATX_MTIME |
                    (check_meta ? STATX_MODE | STATX_UID | STATX_GID : 0);
    if (statx(dir, name, AT_SYMLINK_NOFOLLOW | AT_STATX_SYNC_AS_STAT, mask,
              &x) < 0)
      return -1;
    *m = (meta_t){x.stx_mode, x.stx_uid, x.stx_gid, x.stx_size,
                  x.stx_mtime.tv_sec, x.stx_mtime.tv_nsec};
    return 0;
  }
  struct stat st;
  if (fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
    return -1;
  *m = (meta_t){st.st_mode,         st.st_uid,          st.st_gid,
                (uint64_t)st.st_size, st.st_mtim.tv_sec,
                (uint32_t)st.st_mtim.tv_nsec};
  return 0;
}

struct linux_dirent64 {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[];
};

static void one_dir(const char *rel, char *buf, uint64_t *ents,
                    uint64_t *changed) {
  const char *r = rel[0] ? rel : ".";
  int sfd = openat(src_root, r, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int dfd = openat(dst_root, r,
                   (read_dst ? O_RDONLY : O_PATH) | O_DIRECTORY | O_CLOEXEC);
  if (sfd < 0 || dfd < 0) {
    perror(rel);
    exit(1);
  }
  if (read_dst) {
    long n;
    while ((n = syscall(SYS_getdents64, dfd, buf, BUF)) > 0)
      ;
  }
  long n;
  while ((n = syscall(SYS_getdents64, sfd, buf, BUF)) > 0) {
    for (long off = 0; off < n;) {
      struct linux_dirent64 *d = (void *)(buf + off);
      off += d->d_reclen;
      const char *name = d->d_name;
      if (name[0] == '.' &&
          (!name[1] || (name[1] == '.' && !name[2])))
        continue;
      meta_t s, t;
      if (get(sfd, name, &s) < 0) {
        perror(name);
        continue;
      }
      (*ents)++;
      bool differ = get(dfd, name, &t) < 0 ||
                    ((s.mode ^ t.mode) & S_IFMT) != 0;
      if (S_ISDIR(s.mode)) {
        size_t len = strlen(rel) + strlen(name) + 2;
        char *sub = malloc(len);
        snprintf(sub, len, "%s%s%s", rel, rel[0] ? "/" : "", name);
        pthread_mutex_lock(&work.mu);
        push(sub);
        pthread_cond_signal(&work.cv);
        pthread_mutex_unlock(&work.mu);
        continue;
      }
      if (!differ && S_ISREG(s.mode))
        differ = s.size != t.size || s.mt_s != t.mt_s || s.mt_ns != t.mt_ns;
      if (!differ && check_meta)
        differ = s.mode != t.mode || s.uid != t.uid || s.gid != t.gid;
      if (differ)
        (*changed)++;
    }
  }
  close(sfd);
  close(dfd);
}

static void *worker(void *arg) {
  (void)arg;
  char *buf = malloc(BUF);
  uint64_t ents = 0, changed = 0;
  pthread_mutex_lock(&work.mu);
  for (;;) {
    while (work.n == 0 && work.busy > 0)
      pthread_cond_wait(&work.cv, &work.mu);
    if (work.n == 0)
      break;
    char *rel = work.v[--work.n];
    work.busy++;
    pthread_mutex_unlock(&work.mu);
    one_dir(rel, buf, &ents, &changed);
    free(rel);
    pthread_mutex_lock(&work.mu);
    if (--work.busy == 0 && work.n == 0)
      pthread_cond_broadcast(&work.cv);
  }
  pthread_mutex_unlock(&work.mu);
  pthread_mutex_lock(&count_mu);
  total_entries += ents;
  total_changed += changed;
  pthread_mutex_unlock(&count_mu);
  free(buf);
  return NULL;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  int threads = 1, c;
  while ((c = getopt(argc, argv, "t:xDm")) != -1) {
    if (c == 't')
      threads = atoi(optarg);
    else if (c == 'x')
      use_statx = true;
    else if (c == 'D')
      read_dst = true;
    else if (c == 'm')
      check_meta = true;
    else
      return 2;
  }
  if (argc - optind != 2 || threads < 1 || threads > 64) {
    fprintf(stderr, "usage: resume_floor [-t N] [-x] [-D] [-m] SRC DST\n");
    return 2;
  }
  double t0 = now();
  src_root = open(argv[optind], O_PATH | O_DIRECTORY | O_CLOEXEC);
  dst_root = open(argv[optind + 1], O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (src_root < 0 || dst_root < 0) {
    perror("open");
    return 1;
  }
  push(strdup(""));
  pthread_t tid[64];
  for (int i = 1; i < threads; i++)
    pthread_create(&tid[i], NULL, worker, NULL);
  worker(NULL);
  for (int i = 1; i < threads; i++)
    pthread_join(tid[i], NULL);
  double wall = now() - t0;
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("entries %llu changed %llu wall %.4f user %.4f sys %.4f\n",
         (unsigned long long)total_entries, (unsigned long long)total_changed,
         wall, (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
         (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
  free(work.v);
  return 0;
}
