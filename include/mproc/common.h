/* mproc: shared definitions used by every part. */
#ifndef MPROC_COMMON_H
#define MPROC_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#if defined(MP_BUILDING)
#define MP_EXTERN __attribute__((visibility("default")))
#else
#define MP_EXTERN
#endif

#ifdef __cplusplus
#define MP_BEGIN_DECLS extern "C" {
#define MP_END_DECLS }
#else
#define MP_BEGIN_DECLS
#define MP_END_DECLS
#endif

/* Timeouts are `int timeout_ms`: MP_FOREVER blocks, 0 never blocks, a positive
 * value waits at most that many milliseconds (CLOCK_MONOTONIC). Any other
 * negative value is rejected with MP_EINVAL. */
#define MP_FOREVER (-1)

/* How a child process is started (Python's start methods).
 *   MP_START_FORK        fork(2) the caller (the default).
 *   MP_START_FORKSERVER  a clean server process, started early, forks the
 *                        children: safe in programs that run threads. */
typedef enum { MP_START_FORK = 0, MP_START_FORKSERVER = 1 } mp_start_method_t;

#endif
