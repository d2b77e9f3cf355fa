/* Python tutorial example: "create a sub process and control its input and output":
 * Python's
 *     r = subprocess.call(["echo", "Hello from a child command"])
 *     print("Exit code:", r)
 *     p = subprocess.Popen(["sh"], stdin=PIPE, stdout=PIPE, stderr=PIPE)
 *     output, err = p.communicate(b"echo $((6 * 7))\n...")
 *     print(output.decode()); print("Exit code:", p.returncode)
 * in C. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mproc.h"

static int fail(const char *what, int err) {
  fprintf(stderr, "%s: %s\n", what, mp_strerror(err));
  return 1;
}

int main(void) {
  /* A command that writes straight to our stdout (subprocess.call). */
  const char *echo[] = {"echo", "Hello from a child command", NULL};
  printf("$ echo Hello from a child command\n");
  fflush(stdout); /* the child writes to the same stdout */
  mp_run_result_t res;
  int r = mp_run(echo, NULL, &res);
  if (r)
    return fail("run", r);
  printf("Exit code: %d\n", res.returncode);

  /* A command whose input we write and whose output we read. */
  const char *sh[] = {"sh", NULL};
  mp_subprocess_opts_t opts;
  memset(&opts, 0, sizeof opts);
  opts.stdio[0].mode = MP_STDIO_PIPE;
  opts.stdio[1].mode = MP_STDIO_PIPE;
  opts.stdio[2].mode = MP_STDIO_PIPE;
  mp_subprocess_t *p;
  if ((r = mp_subprocess_spawn(&p, sh, &opts)) != 0)
    return fail("spawn", r);
  const char *input = "echo $((6 * 7))\n"
                      "echo the answer went to stdout >&2\n"
                      "exit 3\n";
  char *out, *err;
  size_t out_len, err_len;
  r = mp_subprocess_communicate(p, input, strlen(input), &out, &out_len, &err,
                                &err_len, MP_FOREVER);
  if (r)
    return fail("communicate", r);
  int code;
  mp_subprocess_returncode(p, &code);
  printf("$ sh  (fed %zu bytes)\n", strlen(input));
  printf("stdout: %s", out);
  printf("stderr: %s", err);
  printf("Exit code: %d\n", code);
  free(out);
  free(err);
  mp_subprocess_destroy(p);
  return 0;
}
