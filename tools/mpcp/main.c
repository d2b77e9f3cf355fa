/* mpcp: a parallel folder copier with a live progress bar, built on mproc's
 * pool and queue. Command line, SRC/DEST resolution and the summary; the walk
 * is in walk.c, the copying in copy.c, the workers in exec.c. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <locale.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mpcp.h"
#include "mpi.h"
#include "walk.h"

static void usage(FILE *f) {
  fputs(
      "Usage: mpcp [OPTIONS] SRC DEST\n"
      "       mpcp [OPTIONS] SRC... DIRECTORY\n"
      "Copy SRC to DEST, or several SRCs into DIRECTORY, with parallel "
      "workers.\n\n"
      "  -r, -R, --recursive  copy directories recursively\n"
      "  -a, --archive        -r, and keep mode, ownership, timestamps,\n"
      "                       symlinks, hard links and xattrs (ACLs)\n"
      "  -j, --jobs N         worker processes (default: CPU count)\n"
      "  -n, --no-clobber     do not overwrite an existing file\n"
      "  -u, --update         copy only when SRC is newer than the "
      "destination\n"
      "                       file or the destination file is missing\n"
      "      --resume         copy only entries missing in DEST or differing\n"
      "                       in type, size or mtime; set the metadata of\n"
      "                       the others; remove the temp files of an\n"
      "                       interrupted run\n"
      "      --checksum       --resume, comparing same-size files' contents\n"
      "                       instead of their mtimes\n"
      "      --dry-run        show what would be copied, copy nothing\n"
      "  -v, --verbose        print each entry as it is copied\n"
      "      --exclude PAT    skip entries whose name (or, if PAT has a '/',\n"
      "                       path below SRC) matches PAT; PAT ending in '/'\n"
      "                       matches directories only (repeatable)\n"
      "      --verify         compare every copy with its source (XXH3-128)\n"
      "                       afterwards and copy mismatches again\n"
      "      --progress       show the progress line (default on a terminal)\n"
      "      --no-progress    do not show it\n"
      "      --json           print a JSON summary on stdout\n"
      "      --mpi            run on the ranks of an MPI job: mpirun -n N "
      "mpcp --mpi ...\n"
      "                       (rank 0 walks and reports, the others copy; "
      "-j is\n"
      "                       the number of ranks but one)\n"
      "  -h, --help           show this help\n"
      "  -V, --version        show the version\n\n"
      "As cp: a symlink SRC is copied as its target without -r or with a\n"
      "trailing '/'; an existing destination that is a device, a FIFO or a\n"
      "symlink to a file is written into, never replaced; a regular file is\n"
      "replaced whole (written under a temp name, then renamed).\n"
      "Exit status: 0 when all was copied, 1 if anything failed, 128+N\n"
      "after signal N (INT, TERM, HUP, QUIT).\n",
      f);
}

static void on_signal(int sig) {
  mpcp_stop_sig = sig;
}

static void split(const char *path, char **dir, char **base) {
  const char *slash = strrchr(path, '/');
  if (!slash) {
    *dir = strdup("");
    *base = strdup(path);
  } else if (slash == path) {
    *dir = strdup("/");
    *base = strdup(slash + 1);
  } else {
    *dir = strndup(path, (size_t)(slash - path));
    *base = strdup(slash + 1);
  }
}

/* Is `dpath` (to be created) inside, or the same as, the directory src? */
static bool inside(const struct stat *src, const char *dpath) {
  struct stat st;
  if (stat(dpath, &st) == 0 && st.st_dev == src->st_dev &&
      st.st_ino == src->st_ino)
    return true;
  char *dir, *base;
  split(dpath, &dir, &base);
  int fd = open(dir[0] ? dir : ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
  free(dir);
  free(base);
  bool found = false;
  struct stat prev = {0};
  while (fd >= 0) {
    if (fstat(fd, &st) < 0)
      break;
    if (st.st_dev == src->st_dev && st.st_ino == src->st_ino) {
      found = true;
      break;
    }
    if (st.st_dev == prev.st_dev && st.st_ino == prev.st_ino)
      break; /* "/" is its own parent */
    prev = st;
    int up = openat(fd, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
    close(fd);
    fd = up;
  }
  if (fd >= 0)
    close(fd);
  return found;
}

typedef struct {
  int kind; /* 0 skip, 1 directory, 2 single entry */
  struct stat st;
  bool created;
  bool follow; /* SRC is a symlink copied as its target */
  char *name, *dname;
} top_t;

static int open_dir(const char *p) {
  return open(p[0] ? p : ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
}

static void resolve(const char *arg, const char *dest, bool dest_is_dir,
                    top_t *t, mpcp_root_t *r) {
  char *src = strdup(arg);
  size_t n = strlen(src);
  /* "link/" names the directory a symlink points to, as for cp. */
  bool slash = n > 1 && src[n - 1] == '/';
  while (n > 1 && src[n - 1] == '/')
    src[--n] = '\0';
  t->kind = 0;
  r->src_fd = r->dst_fd = -1;
  int rc = mpcp_opt.recursive && !slash ? lstat(src, &t->st)
                                        : stat(src, &t->st);
  if (rc < 0) {
    mpcp_error("mpcp: cannot stat '%s': %s", arg, strerror(errno));
    free(src);
    return;
  }
  char *sdir, *sbase;
  split(src, &sdir, &sbase);
  char *dpath;
  if (!dest_is_dir)
    dpath = strdup(dest);
  else if (!strcmp(sbase, ".") || !strcmp(sbase, "..") || !sbase[0])
    dpath = strdup(dest);
  else
    dpath = mpcp_join(dest, sbase, NULL);
  /* A DEST operand that is a symlink to a directory is followed (as cp);
   * a name made inside it never is. */
  struct stat dd;
  bool dexists =
      (dest_is_dir ? lstat(dpath, &dd) : stat(dpath, &dd)) == 0;
  if (dexists && S_ISLNK(dd.st_mode) && S_ISDIR(t->st.st_mode)) {
    mpcp_error("mpcp: cannot overwrite non-directory '%s' with directory "
               "'%s'",
               dpath, arg);
    goto out;
  }
  if (dexists && S_ISLNK(dd.st_mode)) {
    struct stat through;
    if (stat(dpath, &through) == 0)
      dd = through; /* the worker writes through it, or refuses */
  }
  if (S_ISDIR(t->st.st_mode)) {
    if (!mpcp_opt.recursive) {
      mpcp_error("mpcp: -r not specified; omitting directory '%s'", arg);
      goto out;
    }
    if (dexists && !S_ISDIR(dd.st_mode)) {
      mpcp_error("mpcp: cannot overwrite non-directory '%s' with directory "
                 "'%s'",
                 dpath, arg);
      goto out;
    }
    if (inside(&t->st, dpath)) {
      mpcp_error("mpcp: cannot copy a directory, '%s', into itself, '%s'", arg,
                 dpath);
      goto out;
    }
    if (!dexists && !mpcp_opt.dry_run) {
      if (mkdir(dpath, 0700) < 0) {
        mpcp_error("mpcp: cannot create directory '%s': %s", dpath,
                   strerror(errno));
        goto out;
      }
      t->created = true;
    } else if (!dexists) {
      t->created = true;
    }
    r->src_fd = open_dir(src);
    if (r->src_fd < 0) {
      mpcp_error("mpcp: cannot access '%s': %s", arg, strerror(errno));
      goto out;
    }
    if (dexists || !mpcp_opt.dry_run) {
      r->dst_fd = open_dir(dpath);
      if (r->dst_fd < 0) {
        mpcp_error("mpcp: cannot open directory '%s': %s", dpath,
                   strerror(errno));
        close(r->src_fd);
        goto out;
      }
    }
    r->src_disp = strdup(src);
    r->dst_disp = strdup(dpath);
    t->kind = 1;
  } else {
    struct stat ld;
    if ((dexists && dd.st_dev == t->st.st_dev && dd.st_ino == t->st.st_ino) ||
        (lstat(dpath, &ld) == 0 && ld.st_dev == t->st.st_dev &&
         ld.st_ino == t->st.st_ino)) {
      mpcp_error("mpcp: '%s' and '%s' are the same file", arg, dpath);
      goto out;
    }
    if (dexists && S_ISDIR(dd.st_mode)) {
      mpcp_error("mpcp: cannot overwrite directory '%s' with non-directory",
                 dpath);
      goto out;
    }
    char *ddir, *dbase;
    split(dpath, &ddir, &dbase);
    r->src_fd = open_dir(sdir);
    r->dst_fd = open_dir(ddir);
    if (r->src_fd < 0 || r->dst_fd < 0) {
      mpcp_error("mpcp: cannot access '%s': %s",
                 r->src_fd < 0 ? (sdir[0] ? sdir : ".") : (ddir[0] ? ddir : "."),
                 strerror(errno));
      if (r->src_fd >= 0)
        close(r->src_fd);
      if (r->dst_fd >= 0)
        close(r->dst_fd);
      r->src_fd = r->dst_fd = -1;
      free(ddir);
      free(dbase);
      goto out;
    }
    r->src_disp = strdup(sdir);
    r->dst_disp = ddir;
    t->name = strdup(sbase);
    t->dname = dbase;
    t->kind = 2;
    struct stat l;
    t->follow = !S_ISLNK(t->st.st_mode) && lstat(src, &l) == 0 &&
                S_ISLNK(l.st_mode);
  }
out:
  free(src);
  free(sdir);
  free(sbase);
  free(dpath);
}

static void summary(double secs) {
  mpcp_progress_t *p = &mpcp_prog;
  if (p->files_done > p->files_total)
    p->files_done = p->files_total; /* retried entries */
  uint64_t not_copied = mpcp_stats.failed + mpcp_stats.same;
  uint64_t files =
      p->files_done > not_copied ? p->files_done - not_copied : 0;
  double rate = secs > 0 ? (double)p->bytes_done / secs : 0;
  if (p->enabled || mpcp_opt.verbose) {
    char b[32], r[32];
    mpcp_human_bytes((double)p->bytes_done, b, sizeof b);
    mpcp_human_bytes(rate, r, sizeof r);
    mpcp_progress_clear(p);
    fprintf(stderr, "mpcp: %s%llu files, %s in %.2f s (%s/s), %llu error%s",
            mpcp_opt.dry_run ? "would copy " : "", (unsigned long long)files, b,
            secs, r, (unsigned long long)mpcp_stats.errors,
            mpcp_stats.errors == 1 ? "" : "s");
    if (mpcp_stats.skipped + mpcp_stats.same)
      fprintf(stderr, ", %llu skipped",
              (unsigned long long)(mpcp_stats.skipped + mpcp_stats.same));
    if (mpcp_opt.verify)
      fprintf(stderr, ", %llu verified, %llu recopied",
              (unsigned long long)mpcp_stats.verified,
              (unsigned long long)mpcp_stats.mismatches);
    fputc('\n', stderr);
  }
  if (mpcp_opt.json) {
    printf("{\"files\": %llu, \"bytes\": %llu, \"dirs\": %llu, "
           "\"hard_links\": %llu, \"skipped\": %llu, \"excluded\": %llu, "
           "\"errors\": %llu, \"verified\": %llu, \"mismatches\": %llu, "
           "\"seconds\": %.6f, \"bytes_per_second\": %.0f, \"jobs\": %d, "
           "\"dry_run\": %s}\n",
           (unsigned long long)files, (unsigned long long)p->bytes_done,
           (unsigned long long)mpcp_stats.dirs,
           (unsigned long long)mpcp_stats.links,
           (unsigned long long)(mpcp_stats.skipped + mpcp_stats.same),
           (unsigned long long)mpcp_stats.excluded,
           (unsigned long long)mpcp_stats.errors,
           (unsigned long long)mpcp_stats.verified,
           (unsigned long long)mpcp_stats.mismatches, secs, rate, mpcp_opt.jobs,
           mpcp_opt.dry_run ? "true" : "false");
    fflush(stdout);
  }
}

enum {
  OPT_DRY = 256,
  OPT_EXCLUDE,
  OPT_VERIFY,
  OPT_PROGRESS,
  OPT_NO_PROGRESS,
  OPT_JSON,
  OPT_RESUME,
  OPT_CHECKSUM,
  OPT_MPI
};

int main(int argc, char **argv) {
  static const struct option longs[] = {
      {"recursive", no_argument, NULL, 'r'},
      {"archive", no_argument, NULL, 'a'},
      {"jobs", required_argument, NULL, 'j'},
      {"no-clobber", no_argument, NULL, 'n'},
      {"update", no_argument, NULL, 'u'},
      {"dry-run", no_argument, NULL, OPT_DRY},
      {"verbose", no_argument, NULL, 'v'},
      {"exclude", required_argument, NULL, OPT_EXCLUDE},
      {"verify", no_argument, NULL, OPT_VERIFY},
      {"progress", no_argument, NULL, OPT_PROGRESS},
      {"no-progress", no_argument, NULL, OPT_NO_PROGRESS},
      {"json", no_argument, NULL, OPT_JSON},
      {"resume", no_argument, NULL, OPT_RESUME},
      {"checksum", no_argument, NULL, OPT_CHECKSUM},
      {"mpi", no_argument, NULL, OPT_MPI},
      {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, 'V'},
      {NULL, 0, NULL, 0}};
  setlocale(LC_CTYPE, ""); /* which names print as they are (mpcp_quote) */
  mpcp_opt.progress = -1;
  int c;
  while ((c = getopt_long(argc, argv, "rRaj:nuvhV", longs, NULL)) != -1) {
    switch (c) {
    case 'r':
    case 'R':
      mpcp_opt.recursive = true;
      break;
    case 'a':
      mpcp_opt.archive = mpcp_opt.recursive = true;
      break;
    case 'j': {
      char *end;
      long v = strtol(optarg, &end, 10);
      if (*end || v < 1 || v > 1024) {
        fprintf(stderr, "mpcp: invalid number of jobs: '%s'\n", optarg);
        return 1;
      }
      mpcp_opt.jobs = (int)v;
      break;
    }
    case 'n':
      mpcp_opt.no_clobber = true;
      break;
    case 'u':
      mpcp_opt.update = true;
      break;
    case 'v':
      mpcp_opt.verbose = true;
      break;
    case OPT_DRY:
      mpcp_opt.dry_run = true;
      break;
    case OPT_EXCLUDE: {
      char **n = realloc(mpcp_opt.excludes,
                         (size_t)(mpcp_opt.nexcludes + 1) * sizeof *n);
      if (!n)
        return 1;
      mpcp_opt.excludes = n;
      n[mpcp_opt.nexcludes++] = optarg;
      break;
    }
    case OPT_VERIFY:
      mpcp_opt.verify = true;
      break;
    case OPT_PROGRESS:
      mpcp_opt.progress = 1;
      break;
    case OPT_NO_PROGRESS:
      mpcp_opt.progress = 0;
      break;
    case OPT_JSON:
      mpcp_opt.json = true;
      break;
    case OPT_RESUME:
      mpcp_opt.resume = true;
      break;
    case OPT_CHECKSUM:
      mpcp_opt.checksum = mpcp_opt.resume = true;
      break;
    case OPT_MPI:
      mpcp_opt.mpi = true;
      break;
    case 'h':
      usage(stdout);
      return 0;
    case 'V':
      printf("mpcp %s (mproc)\n", MPCP_VERSION);
      return 0;
    default:
      fputs("Try 'mpcp --help' for more information.\n", stderr);
      return 1;
    }
  }
  if (mpcp_opt.mpi) {
    /* Every rank: the worker ranks serve the root's tasks in here. */
    int r = mpcp_mpi_start();
    if (r != 0)
      return r < 0 ? 1 : 0;
  }
  int nsrc = argc - optind - 1;
  if (nsrc < 1) {
    fprintf(stderr, "mpcp: missing %s operand\n",
            nsrc < 0 ? "file" : "destination file");
    fputs("Try 'mpcp --help' for more information.\n", stderr);
    return 1;
  }
  const char *dest = argv[argc - 1];
  if (mpcp_opt.jobs == 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    mpcp_opt.jobs = n > 0 ? (int)n : 1;
  }
  mpcp_self_pid = getpid();
  mpcp_euid = geteuid();
  mpcp_egid = getegid();
  mode_t um = umask(0);
  if (!mpcp_opt.archive)
    umask(um);
  mpcp_walk_init(um);
  mpcp_prog.enabled = mpcp_opt.progress == 1 ||
                      (mpcp_opt.progress == -1 && isatty(STDERR_FILENO));
  const char *cm = getenv("MPCP_CHUNK_MIN"), *cs = getenv("MPCP_CHUNK_SIZE");
  bool split_always = false;
  if (cm && strtoull(cm, NULL, 10) > 0) {
    mpcp_chunk_min = strtoull(cm, NULL, 10);
    split_always = true;
  }
  if (cs && strtoull(cs, NULL, 10) >= 4096)
    mpcp_chunk_size = strtoull(cs, NULL, 10);
  const char *wbs = getenv("MPCP_WRITEBEHIND");
  if (wbs && *wbs) {
    unsigned long long mib = strtoull(wbs, NULL, 10);
    mpcp_wb_step = (mib > (1ull << 24) ? 1ull << 24 : mib) << 20;
  }
  const char *bf = getenv("MPCP_BATCH_FILES");
  if (bf && atoi(bf) > 0)
    mpcp_batch_files = (uint32_t)atoi(bf);
  if (getenv("MPCP_TMPFILE"))
    mpcp_use_tmpfile = true;

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  sigaction(SIGQUIT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  struct stat dst;
  bool dest_is_dir = stat(dest, &dst) == 0 && S_ISDIR(dst.st_mode);
  if (nsrc > 1 && !dest_is_dir) {
    mpcp_warn("mpcp: target '%s' is not a directory", dest);
    return 1;
  }
  mpcp_roots = calloc((size_t)nsrc, sizeof *mpcp_roots);
  top_t *tops = calloc((size_t)nsrc, sizeof *tops);
  if (!mpcp_roots || !tops)
    return 1;
  mpcp_nroots = nsrc;
  mpcp_prog.start = mpcp_now();
  for (int i = 0; i < nsrc && !mpcp_stop_sig; i++)
    resolve(argv[optind + i], dest, dest_is_dir, &tops[i], &mpcp_roots[i]);

  bool any = false;
  for (int i = 0; i < nsrc; i++) {
    any |= tops[i].kind != 0;
    /* Ranks on several hosts write one file in parallel: --mpi splits. */
    mpcp_roots[i].split =
        split_always || mpcp_opt.mpi || mpcp_split_fs(mpcp_roots[i].dst_fd);
  }
  bool started = false;
  if (any && !mpcp_opt.dry_run && !mpcp_stop_sig) {
    int rc = mpcp_exec_start(mpcp_opt.jobs);
    if (rc < 0) {
      fprintf(stderr, "mpcp: cannot start workers: %s\n", strerror(-rc));
      return 1;
    }
    started = true;
  }
  for (int i = 0; i < nsrc && !mpcp_stop_sig; i++) {
    if (tops[i].kind == 1 && mpcp_opt.mpi) {
      mpcp_mpi_walk(i, &tops[i].st, tops[i].created);
    } else if (tops[i].kind == 1) {
      mpcp_walk(i, &tops[i].st, tops[i].created);
    } else if (tops[i].kind == 2) {
      mpcp_add_top_dir_for_cleanup(i);
      mpcp_copy_single(i, &tops[i].st, tops[i].name, tops[i].dname,
                       tops[i].follow);
    }
  }
  mpcp_prog.walk_done = true;
  mpcp_finish();
  int status = mpcp_stats.errors ? 1 : 0;
  if (mpcp_stop_sig) {
    status = 128 + mpcp_stop_sig;
    if (started)
      mpcp_exec_stop(true);
    mpcp_cleanup_temps();
    mpcp_progress_clear(&mpcp_prog);
    fprintf(stderr, "mpcp: interrupted\n");
  } else {
    if (started)
      mpcp_exec_stop(false);
    summary(mpcp_now() - mpcp_prog.start);
    status = mpcp_stats.errors ? 1 : 0;
  }
  for (int i = 0; i < nsrc; i++) {
    free(tops[i].name);
    free(tops[i].dname);
    mpcp_root_close(&mpcp_roots[i]);
  }
  free(tops);
  free(mpcp_roots);
  free(mpcp_opt.excludes);
  return status;
}
