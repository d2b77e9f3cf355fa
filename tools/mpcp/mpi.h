/* mpcp --mpi (mpi.c): the copy on the ranks of an MPI job, through mproc's
 * MPI pool. main.c starts it and runs the walk; exec.c passes tasks and
 * results through it. */
#ifndef MPCP_MPI_H
#define MPCP_MPI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include <mproc.h>

#include "mpcp.h"

/* Every rank, after the options: makes the MPI pool. Returns 0 on the root
 * (mpcp_opt.jobs is then the number of worker ranks), 1 on a worker rank
 * once the root is done (it served tasks meanwhile), or -1 after printing
 * why not (built without MPI, a single rank, different builds). */
int mpcp_mpi_start(void);
/* Root: copies the tree under root `root`, the walk shared by the ranks. */
void mpcp_mpi_walk(int root, const struct stat *top_st, bool top_created);

/* ---- used by exec.c ------------------------------------------------------ */
extern bool mpcp_mpi_worker; /* this process is a worker rank */
/* Root: the pool made by mpcp_mpi_start (exec.c destroys it). */
mp_pool_t *mpcp_mpi_take_pool(void);
/* Root: the task's bytes behind the run's settings and roots (malloc'd). */
int mpcp_mpi_wrap(const void *task, size_t len, void **out, size_t *out_len);
/* Worker rank: the pool task of every mpcp task. */
int mpcp_mpi_task(const void *arg, size_t len, mp_buf_t *result, void *ctx);
/* Root, pool callback thread: a task's result (its messages) came back, or
 * the task failed. */
void mpcp_mpi_result(const void *data, size_t len, uint32_t kind, uint64_t id,
                     uint64_t file_id);
void mpcp_mpi_failed(uint32_t kind);
/* Worker rank: a batch made by a walk (copied here, or sent to the root);
 * a message into the running task's result. */
int mpcp_mpi_worker_submit(const void *task, size_t len);
void mpcp_mpi_send(const mpcp_msg_t *m, const char *text, size_t text_len);

#endif
