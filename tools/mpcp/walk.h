/* The parent's side of a run (walk.c), used by main.c. */
#ifndef MPCP_WALK_H
#define MPCP_WALK_H

#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>

#include "mpcp.h"

typedef struct {
  uint64_t errors, skipped, excluded, dirs, links, verified, mismatches;
  uint64_t failed; /* entries counted in files_done that were not copied */
  uint64_t same;   /* --resume: entries counted in files_done found unchanged */
} mpcp_stats_t;

extern mpcp_stats_t mpcp_stats;
extern mpcp_progress_t mpcp_prog;

/* Prints one error line (clearing the progress line first) and counts it. */
void mpcp_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints a warning line: the exit status stays 0. */
void mpcp_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints "'src' -> 'dst'" quoted as cp -v does. */
void mpcp_verbose_line(const char *src, const char *dst);
void mpcp_walk_init(mode_t umask_value);
/* Copies the tree under root `root` whose top directory has top_st. */
void mpcp_walk(int root, const struct stat *top_st, bool top_created);
/* Copies one top-level non-directory. */
void mpcp_copy_single(int root, const struct stat *st, const char *name,
                      const char *dname, bool follow);
void mpcp_add_top_dir_for_cleanup(int root);
void mpcp_pump(int timeout_ms);
bool mpcp_tasks_pending(void);
void mpcp_wait_tasks(void);
void mpcp_finish_big(size_t i);
/* Waits for the workers, then hard links, directory metadata, --verify. */
void mpcp_finish(void);
void mpcp_cleanup_temps(void);

#endif
