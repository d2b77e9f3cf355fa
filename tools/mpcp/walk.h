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

/* ---- pieces of the walk, for the MPI run (mpi.c) -------------------------
 * There the root records the top directory (mpcp_walk_top) and hands out
 * directories to walk; a worker rank reads one (mpcp_walk_dir) with the
 * hooks below set, and the root takes in what it sends back. */
typedef void (*mpcp_subdir_fn)(int root, char *rel, const struct stat *st,
                               bool created, void *arg);
void mpcp_walk_dir(int root, const char *rel, mpcp_subdir_fn subdir,
                   void *arg);
void mpcp_walk_top(int root, const struct stat *top_st, bool top_created);
void mpcp_add_dir(int root, const char *rel, const struct stat *st,
                  bool created);
void mpcp_add_entries(int root, const char *dir, uint32_t flags, size_t n,
                      const struct stat *st, char *const *names,
                      char *const *dnames, const bool *follow);
/* false if it was not submitted (an error said, or interrupted). */
bool mpcp_submit_task(void *task, size_t len, bool keep_for_verify);
/* Tasks queued ahead of the workers at most (512; more for many ranks). */
extern uint64_t mpcp_max_inflight;
/* Worker rank: error, warning and -v lines of the walk go here instead of
 * stderr/stdout (kind: MPCP_LINE_*). */
enum { MPCP_LINE_WARN = 0, MPCP_LINE_ERROR = 1, MPCP_LINE_TEXT = 2 };
extern void (*mpcp_line_hook)(int kind, const char *text);
/* Worker rank: an entry that needs the root's tables (a hard link under -a,
 * a big file to split) goes here instead of into a batch. */
extern void (*mpcp_root_entry_hook)(int root, const char *dir, uint32_t flags,
                                    const struct stat *st, const char *name,
                                    const char *dname, bool follow);
/* Root: messages of kinds walk.c does not know. */
extern void (*mpcp_msg_hook)(const mpcp_msg_t *m, const char *text,
                             size_t len);
void mpcp_pump(int timeout_ms);
bool mpcp_tasks_pending(void);
void mpcp_wait_tasks(void);
void mpcp_finish_big(size_t i);
/* Waits for the workers, then hard links, directory metadata, --verify. */
void mpcp_finish(void);
void mpcp_cleanup_temps(void);

#endif
