/* Fuzz target: a queue opened from arbitrary header and ring bytes, then
 * used. The input becomes the shared object (header page, then ring); its
 * magic and version are stamped and its locks freed so the bytes reach the
 * checks behind them. mp_queue_open must refuse it or hand out a queue on
 * which puts and gets stay inside the object. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "fuzz_common.h"
#include "mproc.h"

#define OBJ_SIZE (4096 + (64 << 10))

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  fuzz_obj_create("q");
  /* With MP_FUZZ_SEED=path: write a real queue's object as a seed. */
  const char *seed = getenv("MP_FUZZ_SEED");
  if (seed) {
    mp_queue_t *q;
    if (mp_queue_create(&q, &(mp_queue_opts_t){.capacity = 8192}) < 0)
      abort();
    for (int i = 0; i < 5; i++)
      mp_queue_put(q, "message", 1 + (size_t)i, 0);
    void *m;
    size_t len;
    mp_queue_get(q, &m, &len, 0);
    free(m);
    char path[128];
    snprintf(path, sizeof path, "/dev/shm%s", mp_queue_name(q));
    int in = open(path, O_RDONLY), out = open(seed, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    static char buf[OBJ_SIZE];
    ssize_t n = read(in, buf, sizeof buf);
    if (n <= 0 || write(out, buf, (size_t)n) != n)
      abort();
    close(in);
    close(out);
    mp_queue_destroy(q);
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 64)
    return 0;
  if (size > OBJ_SIZE)
    size = OBJ_SIZE;
  /* The object: the input and zeros up to a whole page (at least two): a
   * queue's object is never larger than its reservation. */
  size_t obj = (size + 4095) / 4096 * 4096;
  if (obj < 8192)
    obj = 8192;
  if (ftruncate(fuzz_obj_fd, 0) < 0 || ftruncate(fuzz_obj_fd, (off_t)obj) < 0)
    abort();
  unsigned char *p = mmap(NULL, obj, PROT_READ | PROT_WRITE, MAP_SHARED, fuzz_obj_fd, 0);
  if (p == MAP_FAILED)
    abort();
  memcpy(p, data, size);
  mp__queue_fuzz_prepare(p);
  munmap(p, obj);
  mp_queue_t *q;
  if (mp_queue_open(&q, fuzz_obj_name) < 0)
    return 0;
  /* A few operations steered by the last input bytes. */
  unsigned char buf[256];
  for (size_t i = 0; i < 8 && i < size; i++) {
    unsigned op = data[size - 1 - i];
    size_t len;
    struct iovec iov[4];
    void *m;
    switch (op % 5) {
    case 0:
      mp_queue_put(q, data, op % 200, 0);
      break;
    case 1:
      if (mp_queue_get(q, &m, &len, 0) == 0)
        free(m);
      break;
    case 2:
      mp_queue_get_into(q, buf, op % sizeof buf, &len, 0);
      break;
    case 3:
      mp_queue_get_many(q, buf, sizeof buf, iov, 4, 0);
      break;
    default:
      mp_queue_qsize(q, &len);
      break;
    }
  }
  mp_queue_destroy(q);
  return 0;
}
