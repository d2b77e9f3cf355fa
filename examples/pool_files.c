/* Python tutorial example: "IO-intensive tasks" and "Parallel tasking", applied to local
 * files: starmap(download_file, [(url, filename), ...]) becomes a starmap
 * that fetches (copies) each source file to a target name, and
 * map(process_image, filenames) a map that writes processed_<name> for each
 * file (here the "processing" upper-cases the bytes and keeps at most 300).
 *
 * Usage: pool_files [DIR]   (default: a new temporary directory, removed at
 * the end). */
#include <ctype.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mproc.h>

/* Python's (url, filename) tuple: starmap passes one struct per call. */
typedef struct {
  char url[256];
  char filename[256];
} download_args_t;

static int copy_file(const char *from, const char *to, size_t max, int upper) {
  int in = open(from, O_RDONLY | O_CLOEXEC);
  if (in < 0)
    return -1;
  int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out < 0) {
    close(in);
    return -1;
  }
  char buf[4096];
  size_t done = 0;
  ssize_t n;
  while (done < max && (n = read(in, buf, sizeof buf)) > 0) {
    if ((size_t)n > max - done)
      n = (ssize_t)(max - done);
    for (ssize_t i = 0; upper && i < n; i++)
      buf[i] = (char)toupper((unsigned char)buf[i]);
    if (write(out, buf, (size_t)n) != n)
      break;
    done += (size_t)n;
  }
  close(in);
  close(out);
  return 0;
}

static int download_file(const void *item, void *result, void *ctx) {
  const download_args_t *a = item;
  if (copy_file(a->url, a->filename, (size_t)-1, 0) != 0)
    return 1;
  printf("Downloaded %s from %s\n", strrchr(a->filename, '/') + 1, a->url);
  return 0;
}

typedef struct {
  char filename[256];
} image_arg_t;

static int process_image(const void *item, void *result, void *ctx) {
  const image_arg_t *a = item;
  char out[300];
  const char *slash = strrchr(a->filename, '/');
  snprintf(out, sizeof out, "%.*sprocessed_%s", (int)(slash - a->filename + 1),
           a->filename, slash + 1);
  if (copy_file(a->filename, out, 300, 1) != 0)
    return 1;
  printf("Processed %s\n", slash + 1);
  return 0;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  char tmpl[] = "/tmp/pool_files.XXXXXX";
  const char *dir = argc > 1 ? argv[1] : mkdtemp(tmpl);
  if (!dir)
    return 1;
  /* The "remote" files. */
  const char *names[] = {"a.txt", "b.txt", "c.txt"};
  enum { N = 3 };
  download_args_t urls[N];
  image_arg_t images[N];
  for (int i = 0; i < N; i++) {
    snprintf(urls[i].url, sizeof urls[i].url, "%s/src_%s", dir, names[i]);
    FILE *f = fopen(urls[i].url, "w");
    if (!f)
      return 1;
    fprintf(f, "file %s, number %d\n", names[i], i);
    fclose(f);
    snprintf(urls[i].filename, sizeof urls[i].filename, "%s/%s", dir, names[i]);
    snprintf(images[i].filename, sizeof images[i].filename, "%s/%s", dir,
             names[i]);
  }
  mp_pool_t *pool;
  mp_pool_opts_t opts = {.workers = N}; /* num_processes = len(urls) */
  if (mp_pool_create(&pool, &opts))
    return 1;
  int e =
      mp_pool_starmap(pool, download_file, urls, N, sizeof *urls, NULL, 0, 0);
  if (!e)
    e = mp_pool_map(pool, process_image, images, N, sizeof *images, NULL, 0, 0);
  mp_pool_close(pool);
  mp_pool_join(pool, MP_FOREVER);
  mp_pool_destroy(pool);
  if (e)
    fprintf(stderr, "pool_files: %s\n", mp_strerror(e));
  if (argc <= 1) {
    char path[600];
    for (int i = 0; i < N; i++) {
      unlink(urls[i].url);
      unlink(urls[i].filename);
      snprintf(path, sizeof path, "%s/processed_%s", dir, names[i]);
      FILE *f = fopen(path, "r");
      char line[128] = "";
      if (f) {
        if (!fgets(line, sizeof line, f))
          line[0] = '\0';
        fclose(f);
      }
      printf("processed_%s: %s", names[i], line);
      unlink(path);
    }
    rmdir(dir);
  }
  return e ? 1 : 0;
}
