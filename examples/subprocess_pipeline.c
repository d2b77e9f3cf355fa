/* Python tutorial example: 's sub-process section, a small pipeline: the shell's
 *     printf 'cherry\napple\nbanana\napple\n' | sort -u
 * as Python writes it
 *     p1 = Popen(["printf", ...], stdout=PIPE)
 *     p2 = Popen(["sort", "-u"], stdin=p1.stdout, stdout=PIPE)
 *     p1.stdout.close()  # p1 gets SIGPIPE if p2 exits first
 *     out = p2.communicate()[0]
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
  const char *produce[] = {"printf", "cherry\\napple\\nbanana\\napple\\n",
                           NULL};
  const char *sort[] = {"sort", "-u", NULL};
  mp_subprocess_opts_t o1, o2;
  memset(&o1, 0, sizeof o1);
  memset(&o2, 0, sizeof o2);

  o1.stdio[1].mode = MP_STDIO_PIPE;
  mp_subprocess_t *p1, *p2;
  int r = mp_subprocess_spawn(&p1, produce, &o1);
  if (r)
    return fail("spawn printf", r);

  /* The second command reads the first one's pipe directly. */
  o2.stdio[0].mode = MP_STDIO_FD;
  o2.stdio[0].fd = mp_subprocess_fd(p1, 1);
  o2.stdio[1].mode = MP_STDIO_PIPE;
  if ((r = mp_subprocess_spawn(&p2, sort, &o2)) != 0)
    return fail("spawn sort", r);
  mp_subprocess_close_fd(p1, 1);

  char *out;
  size_t len;
  if ((r = mp_subprocess_communicate(p2, NULL, 0, &out, &len, NULL, NULL,
                                     MP_FOREVER)) != 0)
    return fail("communicate", r);
  int c1, c2;
  mp_subprocess_wait(p1, MP_FOREVER, &c1);
  mp_subprocess_returncode(p2, &c2);
  printf("$ printf 'cherry\\napple\\nbanana\\napple\\n' | sort -u\n%s", out);
  printf("exit codes: %d %d\n", c1, c2);
  free(out);
  mp_subprocess_destroy(p1);
  mp_subprocess_destroy(p2);
  return 0;
}
