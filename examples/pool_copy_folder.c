/* Python tutorial example: the folder copier: a pool of 3 processes
 * copies every regular file of a folder into "<folder>[copy]", each task
 * reporting the file it finished through a queue, and the parent prints the
 * progress as the original does. (The real tool, with subfolders, metadata and a
 * progress bar, is mpcp.)
 *
 *   queue = Manager().Queue(); pool = Pool(3)
 *   for file_name in file_names:
 *       pool.apply_async(copy_file, args=(queue, file_name, src, dst))
 *   while True: file_name = queue.get(); print("\r%.2f...(%s)" % ...)
 *
 * The Python original asks for the folder with input(); here it is argv[1], or read
 * from standard input when missing. The original's random sleep is left out. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mproc.h>

typedef struct {
  mp_queue_t *queue; /* made before the pool: every worker inherits it */
  const char *src, *dst;
} copy_ctx_t;

/* arg: the file name, NUL-terminated. */
static int copy_file(const void *arg, size_t len, mp_buf_t *result, void *ctx) {
  const copy_ctx_t *c = ctx;
  const char *name = arg;
  char from[4096], to[4096], buf[1 << 16];
  snprintf(from, sizeof from, "%s/%s", c->src, name);
  snprintf(to, sizeof to, "%s/%s", c->dst, name);
  int in = open(from, O_RDONLY | O_CLOEXEC);
  if (in < 0)
    return mp_task_error(result, errno, "%s: %s", from, strerror(errno));
  int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out < 0) {
    int e = errno;
    close(in);
    return mp_task_error(result, e, "%s: %s", to, strerror(e));
  }
  ssize_t n;
  while ((n = read(in, buf, sizeof buf)) > 0)
    if (write(out, buf, (size_t)n) != n)
      break;
  close(in);
  close(out);
  /* Tell the parent which file is done. */
  return mp_queue_put(c->queue, name, len, MP_FOREVER);
}

int main(int argc, char **argv) {
  char folder[1024];
  if (argc > 1) {
    snprintf(folder, sizeof folder, "%s", argv[1]);
  } else {
    printf("Folder to copy: ");
    fflush(stdout);
    if (!fgets(folder, sizeof folder, stdin))
      return 1;
    folder[strcspn(folder, "\n")] = '\0';
  }
  /* The source first: a missing one must not leave an empty "[copy]". */
  DIR *d = opendir(folder);
  if (!d) {
    perror(folder);
    return 1;
  }
  char dest[1100];
  snprintf(dest, sizeof dest, "%s[copy]", folder);
  if (mkdir(dest, 0755) < 0 && errno != EEXIST) { /* as the original: existing is fine */
    perror(dest);
    closedir(d);
    return 1;
  }
  mp_queue_t *queue;
  mp_pool_t *pool;
  int r;
  if ((r = mp_queue_create(&queue, NULL)) < 0) {
    fprintf(stderr, "queue: %s\n", mp_strerror(r));
    return 1;
  }
  copy_ctx_t ctx = {queue, folder, dest};
  mp_pool_opts_t o = {.workers = 3, .ctx = &ctx};
  if ((r = mp_pool_create(&pool, &o)) < 0) {
    fprintf(stderr, "pool: %s\n", mp_strerror(r));
    return 1;
  }
  int total = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_type != DT_REG)
      continue;
    if (mp_pool_apply_async(pool, copy_file, e->d_name, strlen(e->d_name) + 1,
                            NULL, NULL) == 0)
      total++;
  }
  closedir(d);
  mp_pool_close(pool);

  /* The parent shows the progress. */
  char name[256];
  for (int done = 0; done < total;) {
    size_t len;
    r = mp_queue_get_into(queue, name, sizeof name, &len, 10000);
    if (r < 0) {
      fprintf(stderr, "\nno progress for 10 s: %s\n", mp_strerror(r));
      break;
    }
    done++;
    printf("\r%.2f...(%s)%50s", done * 100.0 / total, name, "");
    fflush(stdout);
  }
  printf("\n");
  mp_pool_join(pool, MP_FOREVER);
  mp_pool_destroy(pool);
  mp_queue_destroy(queue);
  return 0;
}
