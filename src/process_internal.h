/* Shared between process.c and forkserver.c. Not public. */
#ifndef MPROC_PROCESS_INTERNAL_H
#define MPROC_PROCESS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "mproc/process.h"

#define MP__PROC_NAME_MAX 64

/* A fork child's start gate and exit report (process.c). */
typedef struct mp__gate_slot mp__gate_slot_t;

/* Prepare the calling process to be a child named `name` started by
 * `parent` (the logical parent: the requester for fork-server children),
 * whose real parent is `real_parent`, with identity `ident` (the base of
 * its own children's default names). Sets up the parent-death signal unless
* outlive, records the daemon flag (mp_current_process), forgets the parent's children, resets the name counter. Returns
 * false if the real parent already died (the child must leave). */
bool mp__process_child_enter(const char *name, const char *ident, pid_t parent,
                             pid_t real_parent, bool outlive, bool daemon);

/* In a new child (fork, fork server): forget the parent's children, fork
 * server and locks. */
void mp__process_forget_parent(void);

/* Run the target and leave: flush stdio, _exit with the return value. */
__attribute__((noreturn)) void
mp__process_child_run(mp_process_fn fn, const void *arg, size_t len);

/* Ask the fork server for a child. On success *pid, *pidfd (a pidfd of the
 * child) and *statusfd (readable once the server wrote the exit code, an
 * int, or at EOF when the server died) are set; the fds are the caller's.
 * pass_fds[0..npass) reach the child at the same numbers. */
int mp__forkserver_spawn(mp_process_fn fn, const void *arg, size_t len,
                         const char *name, const char *ident, bool outlive,
                         bool daemon,
                         const int *pass_fds, int npass, pid_t *pid, int *pidfd,
                         int *statusfd);

/* Forget the server in a forked child (closes the inherited socket). */
void mp__forkserver_atfork_child(void);

/* Exit code from waitid's siginfo: status, or minus the signal. */
int mp__exitcode_from_siginfo(int code, int status);

#endif
