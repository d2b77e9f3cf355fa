/* Set-up shared by the fuzz targets that lay each input into a named shared
 * object and open it by name (queue, manager). Each target is one file, so
 * the object's name and fd live here as statics of that file. */
#ifndef MPROC_FUZZ_COMMON_H
#define MPROC_FUZZ_COMMON_H

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static char fuzz_obj_name[64]; /* "/mp-fuzz<tag>-<pid>", once created */
static int fuzz_obj_fd = -1;

static void fuzz_obj_cleanup(void) {
  if (fuzz_obj_name[0])
    shm_unlink(fuzz_obj_name);
}

/* Create this process's object /mp-fuzz<tag>-<pid> (a stale one of the same
 * name is removed first; O_EXCL then makes sure it is ours), mode 0600 and
 * removed at exit. Sets fuzz_obj_name and fuzz_obj_fd; aborts on failure.
 * (.ci/fuzz removes /dev/shm/mp-fuzz[mq]-*: libFuzzer may end without
 * running atexit handlers.) */
static inline void fuzz_obj_create(const char *tag) {
  snprintf(fuzz_obj_name, sizeof fuzz_obj_name, "/mp-fuzz%s-%d", tag,
           (int)getpid());
  shm_unlink(fuzz_obj_name);
  fuzz_obj_fd =
      shm_open(fuzz_obj_name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fuzz_obj_fd < 0)
    abort();
  fchmod(fuzz_obj_fd, 0600);
  atexit(fuzz_obj_cleanup);
}

#endif
