/* Tests for subprocess: spawn, communicate, wait/poll/signals, run. */
#include "runner.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Run argv capturing stdout and stderr; fails the test on any error. */
static char *run_out(const char *const argv[], const mp_subprocess_opts_t *so,
                     int *rc) {
  mp_run_opts_t o;
  memset(&o, 0, sizeof o);
  if (so)
    o.sp = *so;
  o.capture_output = true;
  mp_run_result_t res;
  ASSERT_OK(mp_run(argv, &o, &res));
  if (rc)
    *rc = res.returncode;
  free(res.err);
  return res.out;
}

/* A process that is gone: no entry, or a zombie nobody reaped yet. */
static bool pid_gone(pid_t pid) {
  char path[64], buf[256];
  if (kill(pid, 0) < 0)
    return true;
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f)
    return true;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *p = strrchr(buf, ')');
  return p && (p[2] == 'Z' || p[2] == 'X');
}

TEST(run_echo_capture) {
  const char *argv[] = {"echo", "hello", "world", NULL};
  int rc = -1;
  char *out = run_out(argv, NULL, &rc);
  ASSERT_STR_EQ(out, "hello world\n");
  ASSERT_EQ(rc, 0);
  free(out);
}

TEST(bad_arguments) {
  mp_subprocess_t *sp = NULL;
  const char *argv[] = {"true", NULL};
  const char *empty[] = {NULL};
  ASSERT_ERR(mp_subprocess_spawn(NULL, argv, NULL), MP_EINVAL);
  ASSERT_ERR(mp_subprocess_spawn(&sp, NULL, NULL), MP_EINVAL);
  ASSERT_ERR(mp_subprocess_spawn(&sp, empty, NULL), MP_EINVAL);
  mp_subprocess_opts_t o;
  memset(&o, 0, sizeof o);
  o.stdio[1].mode = MP_STDIO_STDOUT;
  ASSERT_ERR(mp_subprocess_spawn(&sp, argv, &o), MP_EINVAL);
  memset(&o, 0, sizeof o);
  o.stdio[0].mode = (mp_stdio_mode_t)42;
  ASSERT_ERR(mp_subprocess_spawn(&sp, argv, &o), MP_EINVAL);
  memset(&o, 0, sizeof o);
  o.stdio[1].mode = MP_STDIO_FD;
  o.stdio[1].fd = -1;
  ASSERT_ERR(mp_subprocess_spawn(&sp, argv, &o), MP_EINVAL);
  o.stdio[1].fd = 987;
  ASSERT_ERR(mp_subprocess_spawn(&sp, argv, &o), MP_EBADF);
  memset(&o, 0, sizeof o);
  o.pipe_size = -2;
  ASSERT_ERR(mp_subprocess_spawn(&sp, argv, &o), MP_EINVAL);
  ASSERT(sp == NULL);

  int rc;
  char *out;
  size_t len;
  ASSERT_ERR(mp_subprocess_communicate(NULL, NULL, 0, &out, &len, NULL, NULL,
                                       MP_FOREVER),
             MP_EINVAL);
  ASSERT_ERR(mp_subprocess_wait(NULL, 0, &rc), MP_EINVAL);
  ASSERT_ERR(mp_subprocess_poll(NULL, &rc), MP_EINVAL);
  ASSERT_ERR(mp_subprocess_returncode(NULL, &rc), MP_EINVAL);
  ASSERT_ERR(mp_subprocess_signal(NULL, SIGTERM), MP_EINVAL);
  ASSERT_ERR(mp_subprocess_terminate(NULL), MP_EINVAL);
  ASSERT_ERR(mp_subprocess_kill(NULL), MP_EINVAL);
  ASSERT_ERR(mp_subprocess_pid(NULL), MP_EINVAL);
  ASSERT_ERR(mp_subprocess_fd(NULL, 1), MP_EINVAL);
  ASSERT_ERR(mp_subprocess_close_fd(NULL, 1), MP_EINVAL);
  ASSERT_ERR(mp_subprocess_destroy(NULL), MP_EINVAL);
  ASSERT_EQ(mp_subprocess_waitable(NULL).fd, -1);

  /* A live handle with bad arguments. */
  const char *cat[] = {"cat", NULL};
  memset(&o, 0, sizeof o);
  o.stdio[1].mode = MP_STDIO_PIPE;
  ASSERT_OK(mp_subprocess_spawn(&sp, cat, &o));
  ASSERT_ERR(mp_subprocess_wait(sp, -2, &rc), MP_EINVAL);
  ASSERT_ERR(mp_subprocess_returncode(sp, NULL), MP_EINVAL);
  ASSERT_ERR(mp_subprocess_returncode(sp, &rc), MP_EAGAIN);
  ASSERT_ERR(mp_subprocess_signal(sp, -1), MP_EINVAL);
  ASSERT_ERR(mp_subprocess_signal(sp, 65), MP_EINVAL);
  ASSERT_ERR(mp_subprocess_fd(sp, 3), MP_EINVAL);
  ASSERT_ERR(mp_subprocess_fd(sp, -1), MP_EINVAL);
  ASSERT_ERR(mp_subprocess_fd(sp, 0), MP_ECLOSED); /* not a pipe */
  ASSERT_ERR(mp_subprocess_close_fd(sp, 2), MP_ECLOSED);
  ASSERT_ERR(mp_subprocess_close_fd(sp, 7), MP_EINVAL);
  ASSERT_ERR(mp_subprocess_communicate(sp, NULL, 0, &out, &len, NULL, NULL, -5),
             MP_EINVAL);
  /* Input without a stdin pipe; input_len without input. */
  ASSERT_ERR(
      mp_subprocess_communicate(sp, "x", 1, &out, &len, NULL, NULL, MP_FOREVER),
      MP_EINVAL);
  ASSERT_ERR(mp_subprocess_communicate(sp, NULL, 3, &out, &len, NULL, NULL,
                                       MP_FOREVER),
             MP_EINVAL);
  ASSERT_OK(mp_subprocess_destroy(sp));

  mp_run_result_t res;
  ASSERT_ERR(mp_run(argv, NULL, NULL), MP_EINVAL);
  ASSERT_ERR(mp_run(NULL, NULL, &res), MP_EINVAL);
  ASSERT_ERR(mp_run(empty, NULL, &res), MP_EINVAL);
  mp_run_opts_t ro;
  memset(&ro, 0, sizeof ro);
  ro.time_limit_ms = -7;
  ASSERT_ERR(mp_run(argv, &ro, &res), MP_EINVAL);
  memset(&ro, 0, sizeof ro);
  ro.input = "x";
  ro.input_len = 1;
  ro.sp.stdio[0].mode = MP_STDIO_DEVNULL;
  ASSERT_ERR(mp_run(argv, &ro, &res), MP_EINVAL);
  memset(&ro, 0, sizeof ro);
  ro.capture_output = true;
  ro.sp.stdio[2].mode = MP_STDIO_DEVNULL;
  ASSERT_ERR(mp_run(argv, &ro, &res), MP_EINVAL);
  ASSERT(res.out == NULL && res.err == NULL);
  ASSERT_ERR(mp_run_result_free(NULL), MP_EINVAL);
  ASSERT_OK(mp_run_result_free(&res));
}

TEST(spawn_errors_carry_errno) {
  mp_subprocess_t *sp = NULL;
  const char *missing[] = {"/nonexistent/prog", NULL};
  ASSERT_ERR(mp_subprocess_spawn(&sp, missing, NULL), MP_ENOENT);
  const char *nopath[] = {"mproc-no-such-command-xyz", NULL};
  ASSERT_ERR(mp_subprocess_spawn(&sp, nopath, NULL), MP_ENOENT);
  const char *emptyname[] = {"", NULL};
  ASSERT_ERR(mp_subprocess_spawn(&sp, emptyname, NULL), MP_ENOENT);
  const char *dir[] = {"/tmp", NULL};
  ASSERT_ERR(mp_subprocess_spawn(&sp, dir, NULL), MP_EACCES);

  char path[] = "/tmp/mp-sub-noexec-XXXXXX";
  int fd = mkstemp(path);
  ASSERT(fd >= 0);
  ASSERT(write(fd, "#!/bin/sh\n", 10) == 10);
  close(fd);
  chmod(path, 0644);
  const char *noexec[] = {path, NULL};
  ASSERT_ERR(mp_subprocess_spawn(&sp, noexec, NULL), MP_EACCES);
  /* Executable but not a program. */
  fd = open(path, O_WRONLY | O_TRUNC);
  ASSERT(write(fd,
               "\x7f"
               "ELFgarbage",
               10) == 10);
  close(fd);
  chmod(path, 0755);
  ASSERT_ERR(mp_subprocess_spawn(&sp, noexec, NULL), MP_ENOEXEC);

  /* Bad cwd: missing, and a file. */
  mp_subprocess_opts_t o;
  memset(&o, 0, sizeof o);
  const char *tru[] = {"true", NULL};
  o.cwd = "/nonexistent-dir";
  ASSERT_ERR(mp_subprocess_spawn(&sp, tru, &o), MP_ENOENT);
  o.cwd = path;
  ASSERT_ERR(mp_subprocess_spawn(&sp, tru, &o), MP_ENOTDIR);
  unlink(path);

  /* PATH searched in the child's environment. */
  memset(&o, 0, sizeof o);
  const char *badpath[] = {"PATH=/nonexistent", NULL};
  o.env_add = badpath;
  ASSERT_ERR(mp_subprocess_spawn(&sp, tru, &o), MP_ENOENT);
  ASSERT(sp == NULL);

  mp_run_result_t res;
  ASSERT_ERR(mp_run(missing, NULL, &res), MP_ENOENT);
  ASSERT(res.out == NULL);
}

TEST(env_replace_and_add) {
  const char *argv[] = {"/usr/bin/env", NULL};
  const char *env[] = {"FOO=bar", "X=1", NULL};
  mp_subprocess_opts_t o;
  memset(&o, 0, sizeof o);
  o.env = env;
  char *out = run_out(argv, &o, NULL);
  ASSERT_STR_EQ(out, "FOO=bar\nX=1\n");
  free(out);

  /* Added on top of env: replace X, remove FOO, add Y; last one wins. */
  const char *add[] = {"X=2", "FOO", "Y=3", "Y=4", NULL};
  o.env_add = add;
  out = run_out(argv, &o, NULL);
  ASSERT_STR_EQ(out, "X=2\nY=4\n");
  free(out);

  /* On top of the caller's environment. */
  setenv("MP_SUB_TEST_A", "a", 1);
  setenv("MP_SUB_TEST_B", "b", 1);
  const char *add2[] = {"MP_SUB_TEST_A", "MP_SUB_TEST_C=c", NULL};
  memset(&o, 0, sizeof o);
  o.env_add = add2;
  const char *sh[] = {"sh", "-c",
                      "echo \"${MP_SUB_TEST_A-unset} $MP_SUB_TEST_B "
                      "$MP_SUB_TEST_C\"",
                      NULL};
  out = run_out(sh, &o, NULL);
  ASSERT_STR_EQ(out, "unset b c\n");
  free(out);
}

TEST(cwd_applied) {
  mp_subprocess_opts_t o;
  memset(&o, 0, sizeof o);
  o.cwd = "/";
  const char *pwd[] = {"pwd", NULL};
  char *out = run_out(pwd, &o, NULL);
  ASSERT_STR_EQ(out, "/\n");
  free(out);
  /* A relative program path is taken from the new directory. */
  o.cwd = "/usr/bin";
  const char *rel[] = {"./echo", "rel", NULL};
  out = run_out(rel, &o, NULL);
  ASSERT_STR_EQ(out, "rel\n");
  free(out);
}

TEST(returncode_exit_and_signal) {
  const char *ex3[] = {"sh", "-c", "exit 3", NULL};
  mp_run_result_t res;
  ASSERT_OK(mp_run(ex3, NULL, &res));
  ASSERT_EQ(res.returncode, 3);
  ASSERT(res.pid > 0);
  mp_run_opts_t ro;
  memset(&ro, 0, sizeof ro);
  ro.check = true;
  ro.capture_output = true;
  const char *fail[] = {"sh", "-c", "echo oops >&2; exit 5", NULL};
  ASSERT_ERR(mp_run(fail, &ro, &res), MP_ETASK);
  ASSERT_EQ(res.returncode, 5);
  ASSERT_STR_EQ(res.err, "oops\n");
  ASSERT_STR_EQ(res.out, "");
  mp_run_result_free(&res);
  const char *tru[] = {"true", NULL};
  ASSERT_OK(mp_run(tru, &ro, &res));
  mp_run_result_free(&res);

  const char *self[] = {"sh", "-c", "kill -TERM $$", NULL};
  ASSERT_OK(mp_run(self, NULL, &res));
  ASSERT_EQ(res.returncode, -SIGTERM);

  mp_subprocess_t *sp;
  const char *slp[] = {"sleep", "30", NULL};
  ASSERT_OK(mp_subprocess_spawn(&sp, slp, NULL));
  ASSERT(mp_subprocess_pid(sp) > 0);
  ASSERT_OK(mp_subprocess_kill(sp));
  int rc = 0;
  ASSERT_OK(mp_subprocess_wait(sp, MP_FOREVER, &rc));
  ASSERT_EQ(rc, -SIGKILL);
  rc = 0;
  ASSERT_OK(mp_subprocess_returncode(sp, &rc));
  ASSERT_EQ(rc, -SIGKILL);
  /* Signals after the reap do nothing. */
  ASSERT_OK(mp_subprocess_terminate(sp));
  ASSERT_OK(mp_subprocess_destroy(sp));

  ASSERT_OK(mp_subprocess_spawn(&sp, slp, NULL));
  ASSERT_OK(mp_subprocess_terminate(sp));
  ASSERT_OK(mp_subprocess_wait(sp, MP_FOREVER, &rc));
  ASSERT_EQ(rc, -SIGTERM);
  ASSERT_OK(mp_subprocess_destroy(sp));
}

TEST(large_stdout_and_stderr_at_once) {
  const char *argv[] = {"sh", "-c",
                        "head -c 6000000 /dev/zero & "
                        "head -c 5000000 /dev/zero | tr '\\0' e >&2; wait",
                        NULL};
  mp_run_opts_t ro;
  memset(&ro, 0, sizeof ro);
  ro.capture_output = true;
  mp_run_result_t res;
  ASSERT_OK(mp_run(argv, &ro, &res));
  ASSERT_EQ(res.returncode, 0);
  ASSERT_EQ(res.out_len, 6000000);
  ASSERT_EQ(res.err_len, 5000000);
  ASSERT(res.out[0] == 0 && res.out[5999999] == 0 && res.out[6000000] == 0);
  ASSERT(res.err[0] == 'e' && res.err[4999999] == 'e');
  mp_run_result_free(&res);
}

TEST(input_larger_than_pipe) {
  size_t n = 9 * 1024 * 1024 + 123;
  char *in = malloc(n);
  for (size_t i = 0; i < n; i++)
    in[i] = (char)(i * 7 + i / 4096);
  const char *cat[] = {"cat", NULL};
  mp_run_opts_t ro;
  memset(&ro, 0, sizeof ro);
  ro.input = in;
  ro.input_len = n;
  ro.capture_output = true;
  mp_run_result_t res;
  ASSERT_OK(mp_run(cat, &ro, &res));
  ASSERT_EQ(res.out_len, n);
  ASSERT(memcmp(res.out, in, n) == 0);
  ASSERT_EQ(res.err_len, 0);
  mp_run_result_free(&res);

  /* Also with fixed kernel-sized pipes, and stderr into stdout. */
  ro.capture_output = false;
  ro.sp.pipe_size = -1;
  ro.sp.stdio[1].mode = MP_STDIO_PIPE;
  ro.sp.stdio[2].mode = MP_STDIO_STDOUT;
  ASSERT_OK(mp_run(cat, &ro, &res));
  ASSERT_EQ(res.out_len, n);
  ASSERT(memcmp(res.out, in, n) == 0);
  ASSERT(res.err == NULL);
  mp_run_result_free(&res);

  /* A child that reads nothing: the rest is dropped, no SIGPIPE here. */
  const char *head[] = {"head", "-c", "1", NULL};
  ro.sp.pipe_size = 0;
  ASSERT_OK(mp_run(head, &ro, &res));
  ASSERT_EQ(res.out_len, 1);
  ASSERT_EQ(res.returncode, 0);
  mp_run_result_free(&res);
  free(in);
}

TEST(communicate_timeout_leaves_running) {
  const char *argv[] = {"sh", "-c", "echo start; echo e >&2; exec sleep 30",
                        NULL};
  mp_subprocess_opts_t o;
  memset(&o, 0, sizeof o);
  o.stdio[0].mode = MP_STDIO_PIPE;
  o.stdio[1].mode = MP_STDIO_PIPE;
  o.stdio[2].mode = MP_STDIO_PIPE;
  mp_subprocess_t *sp;
  ASSERT_OK(mp_subprocess_spawn(&sp, argv, &o));
  char *out = (char *)1, *err = (char *)1;
  size_t out_len = 99, err_len = 99;
  uint64_t t0 = mpt_now_ms();
  ASSERT_ERR(mp_subprocess_communicate(sp, "abc", 3, &out, &out_len, &err,
                                       &err_len, 1000),
             MP_ETIMEDOUT);
  ASSERT(mpt_now_ms() - t0 >= 1000);
  ASSERT(out == (char *)1 && out_len == 99); /* untouched */
  ASSERT_EQ(mp_subprocess_poll(sp, NULL), 0);
  /* Zero timeout: still running, never blocks. */
  ASSERT_ERR(mp_subprocess_communicate(sp, "abc", 3, &out, &out_len, &err,
                                       &err_len, 0),
             MP_ETIMEDOUT);
  /* A continued call must pass the same input. */
  ASSERT_ERR(mp_subprocess_communicate(sp, "xyz", 3, &out, &out_len, &err,
                                       &err_len, 0),
             MP_EINVAL);
  ASSERT_OK(mp_subprocess_kill(sp));
  ASSERT_OK(mp_subprocess_communicate(sp, "abc", 3, &out, &out_len, &err,
                                      &err_len, MP_FOREVER));
  ASSERT_STR_EQ(out, "start\n");
  ASSERT_EQ(out_len, 6);
  ASSERT_STR_EQ(err, "e\n");
  free(out);
  free(err);
  int rc;
  ASSERT_OK(mp_subprocess_returncode(sp, &rc));
  ASSERT_EQ(rc, -SIGKILL);
  /* Done: a further call gives nothing more. */
  ASSERT_OK(
      mp_subprocess_communicate(sp, NULL, 0, &out, &out_len, NULL, NULL, 0));
  ASSERT(out == NULL && out_len == 0);
  ASSERT_OK(mp_subprocess_destroy(sp));
}

TEST(run_timeout_kills_and_reaps) {
  const char *argv[] = {"sh", "-c", "echo partial; exec sleep 30", NULL};
  mp_run_opts_t ro;
  memset(&ro, 0, sizeof ro);
  ro.capture_output = true;
  ro.time_limit_ms = 1000; /* room for the echo on a loaded machine */
  mp_run_result_t res;
  uint64_t t0 = mpt_now_ms();
  ASSERT_ERR(mp_run(argv, &ro, &res), MP_ETIMEDOUT);
  ASSERT(mpt_now_ms() - t0 >= 1000);
  ASSERT_EQ(res.returncode, -SIGKILL);
  ASSERT(pid_gone(res.pid));
  ASSERT_STR_EQ(res.out, "partial\n");
  mp_run_result_free(&res);

  /* A grandchild holding the pipe open does not make run hang. */
  const char *gc[] = {"sh", "-c", "sleep 30 & sleep 30", NULL};
  ro.time_limit_ms = 100;
  ASSERT_ERR(mp_run(gc, &ro, &res), MP_ETIMEDOUT);
  mp_run_result_free(&res);
}

TEST(wait_poll_returncode) {
  const char *argv[] = {"sleep", "1", NULL};
  mp_subprocess_t *sp;
  ASSERT_OK(mp_subprocess_spawn(&sp, argv, NULL));
  int rc = 77;
  ASSERT_EQ(mp_subprocess_poll(sp, &rc), 0);
  ASSERT_EQ(rc, 77);
  ASSERT_ERR(mp_subprocess_returncode(sp, &rc), MP_EAGAIN);
  uint64_t t0 = mpt_now_ms();
  ASSERT_ERR(mp_subprocess_wait(sp, 50, &rc), MP_ETIMEDOUT);
  ASSERT(mpt_now_ms() - t0 >= 50);
  ASSERT_ERR(mp_subprocess_wait(sp, 0, &rc), MP_ETIMEDOUT);

  mp_waitable_t w = mp_subprocess_waitable(sp);
  ASSERT(w.fd >= 0);
  ASSERT(w.check == NULL && w.obj == sp);
  struct pollfd pf = {.fd = w.fd, .events = POLLIN};
  ASSERT_EQ(poll(&pf, 1, 10000), 1);

  ASSERT_OK(mp_subprocess_wait(sp, 10000, &rc));
  ASSERT_EQ(rc, 0);
  ASSERT_EQ(mp_subprocess_poll(sp, &rc), 1);
  ASSERT_OK(mp_subprocess_wait(sp, 0, NULL));
  ASSERT_OK(mp_subprocess_returncode(sp, &rc));
  ASSERT_EQ(rc, 0);
  ASSERT_OK(mp_subprocess_destroy(sp));
}

/* The fds an `ls /proc/self/fd` child sees, as one line "0 1 2 3". */
static char *child_fds(unsigned flags) {
  const char *ls[] = {"sh", "-c", "exec ls /proc/self/fd | tr '\\n' ' '", NULL};
  mp_subprocess_opts_t o;
  memset(&o, 0, sizeof o);
  o.flags = flags;
  return run_out(ls, &o, NULL);
}

static bool has_fd(const char *list, int fd) {
  char want[16];
  snprintf(want, sizeof want, " %d ", fd);
  size_t n = strlen(list);
  char *l = malloc(n + 2);
  l[0] = ' ';
  memcpy(l + 1, list, n + 1);
  bool r = strstr(l, want) != NULL;
  free(l);
  return r;
}

TEST(child_gets_only_its_fds) {
  /* An inheritable fd the caller forgot, and mproc's own pipes to another
   * child, open at the same time. */
  int leak[2];
  ASSERT(pipe(leak) == 0);
  const char *cat[] = {"cat", NULL};
  mp_subprocess_opts_t o;
  memset(&o, 0, sizeof o);
  o.stdio[0].mode = o.stdio[1].mode = o.stdio[2].mode = MP_STDIO_PIPE;
  mp_subprocess_t *other;
  ASSERT_OK(mp_subprocess_spawn(&other, cat, &o));

  /* ls's stdout is tr's pipe; ls opens fd 3 itself for the listing. */
  char *fds = child_fds(0);
  ASSERT_STR_EQ(fds, "0 1 2 3 ");
  free(fds);
  /* KEEP_FDS: the forgotten fds come along, mproc's own never do. */
  fds = child_fds(MP_SUBPROCESS_KEEP_FDS);
  ASSERT(has_fd(fds, leak[0]) && has_fd(fds, leak[1]));
  for (int i = 0; i < 3; i++)
    ASSERT(!has_fd(fds, mp_subprocess_fd(other, i)));
  ASSERT(!has_fd(fds, mp_subprocess_waitable(other).fd));
  free(fds);
  close(leak[0]);
  close(leak[1]);
  ASSERT_OK(mp_subprocess_destroy(other));
}

TEST(stdio_modes) {
  /* /dev/null in, out. */
  mp_run_opts_t ro;
  memset(&ro, 0, sizeof ro);
  ro.sp.stdio[0].mode = MP_STDIO_DEVNULL;
  ro.sp.stdio[1].mode = MP_STDIO_PIPE;
  ro.sp.stdio[2].mode = MP_STDIO_DEVNULL;
  const char *cat[] = {"sh", "-c", "cat; echo gone >&2", NULL};
  mp_run_result_t res;
  ASSERT_OK(mp_run(cat, &ro, &res));
  ASSERT_STR_EQ(res.out, "");
  ASSERT(res.err == NULL);
  mp_run_result_free(&res);

  /* stderr into stdout, in order. */
  memset(&ro, 0, sizeof ro);
  ro.sp.stdio[1].mode = MP_STDIO_PIPE;
  ro.sp.stdio[2].mode = MP_STDIO_STDOUT;
  const char *both[] = {"sh", "-c", "echo a; echo b >&2; echo c", NULL};
  ASSERT_OK(mp_run(both, &ro, &res));
  ASSERT_STR_EQ(res.out, "a\nb\nc\n");
  mp_run_result_free(&res);

  /* A caller's fd as stdout, and as stdin. */
  char path[] = "/tmp/mp-sub-fd-XXXXXX";
  int fd = mkstemp(path);
  ASSERT(fd >= 0);
  memset(&ro, 0, sizeof ro);
  ro.sp.stdio[1].mode = MP_STDIO_FD;
  ro.sp.stdio[1].fd = fd;
  const char *echo[] = {"echo", "to file", NULL};
  ASSERT_OK(mp_run(echo, &ro, &res));
  ASSERT(res.out == NULL);
  memset(&ro, 0, sizeof ro);
  ASSERT(lseek(fd, 0, SEEK_SET) == 0);
  ro.sp.stdio[0].mode = MP_STDIO_FD;
  ro.sp.stdio[0].fd = fd;
  ro.capture_output = true;
  const char *rd[] = {"cat", NULL};
  ASSERT_OK(mp_run(rd, &ro, &res));
  ASSERT_STR_EQ(res.out, "to file\n");
  mp_run_result_free(&res);

  /* Swapped standard fds: the child's stdout is our stdin and the other
   * way round (sources that are themselves 0..2). */
  int saved0 = dup(0), saved1 = dup(1);
  int p[2];
  ASSERT(pipe(p) == 0);
  ASSERT(dup2(p[1], 0) == 0); /* our 0 is the pipe's write end */
  ASSERT(dup2(fd, 1) == 1);   /* our 1 is the file */
  close(p[1]);
  memset(&ro, 0, sizeof ro);
  ro.sp.stdio[0].mode = MP_STDIO_FD;
  ro.sp.stdio[0].fd = 1; /* reads the file */
  ro.sp.stdio[1].mode = MP_STDIO_FD;
  ro.sp.stdio[1].fd = 0; /* writes to the pipe */
  ASSERT(lseek(fd, 0, SEEK_SET) == 0);
  int r = mp_run(rd, &ro, &res);
  dup2(saved0, 0);
  dup2(saved1, 1);
  close(saved0);
  close(saved1);
  ASSERT_OK(r);
  char buf[32] = {0};
  ASSERT(read(p[0], buf, sizeof buf - 1) == 8);
  ASSERT_STR_EQ(buf, "to file\n");
  close(p[0]);
  close(fd);
  unlink(path);
}

TEST(pipeline_two_commands) {
  mp_subprocess_opts_t o1;
  memset(&o1, 0, sizeof o1);
  o1.stdio[1].mode = MP_STDIO_PIPE;
  const char *gen[] = {"printf", "pear\\napple\\nfig\\n", NULL};
  mp_subprocess_t *p1, *p2;
  ASSERT_OK(mp_subprocess_spawn(&p1, gen, &o1));
  mp_subprocess_opts_t o2;
  memset(&o2, 0, sizeof o2);
  o2.stdio[0].mode = MP_STDIO_FD;
  o2.stdio[0].fd = mp_subprocess_fd(p1, 1);
  o2.stdio[1].mode = MP_STDIO_PIPE;
  const char *sort[] = {"sort", NULL};
  ASSERT_OK(mp_subprocess_spawn(&p2, sort, &o2));
  ASSERT_OK(mp_subprocess_close_fd(p1, 1));
  ASSERT_ERR(mp_subprocess_close_fd(p1, 1), MP_ECLOSED);
  ASSERT_ERR(mp_subprocess_fd(p1, 1), MP_ECLOSED);
  char *out;
  size_t len;
  ASSERT_OK(mp_subprocess_communicate(p2, NULL, 0, &out, &len, NULL, NULL,
                                      MP_FOREVER));
  ASSERT_STR_EQ(out, "apple\nfig\npear\n");
  free(out);
  int rc;
  ASSERT_OK(mp_subprocess_wait(p1, MP_FOREVER, &rc));
  ASSERT_EQ(rc, 0);
  ASSERT_OK(mp_subprocess_destroy(p1));
  ASSERT_OK(mp_subprocess_destroy(p2));
}

TEST(own_event_loop_fds) {
  mp_subprocess_opts_t o;
  memset(&o, 0, sizeof o);
  o.stdio[0].mode = o.stdio[1].mode = MP_STDIO_PIPE;
  const char *argv[] = {"tr", "a-z", "A-Z", NULL};
  mp_subprocess_t *sp;
  ASSERT_OK(mp_subprocess_spawn(&sp, argv, &o));
  int in = mp_subprocess_fd(sp, 0), out = mp_subprocess_fd(sp, 1);
  ASSERT(in >= 0 && out >= 0);
  ASSERT(fcntl(in, F_GETFD) & FD_CLOEXEC);
  ASSERT(write(in, "hello\n", 6) == 6);
  ASSERT_OK(mp_subprocess_close_fd(sp, 0));
  char buf[16] = {0};
  size_t got = 0;
  ssize_t n;
  while ((n = read(out, buf + got, sizeof buf - 1 - got)) > 0)
    got += (size_t)n;
  ASSERT_STR_EQ(buf, "HELLO\n");
  int rc;
  ASSERT_OK(mp_subprocess_wait(sp, MP_FOREVER, &rc));
  ASSERT_EQ(rc, 0);
  ASSERT_OK(mp_subprocess_destroy(sp));
}

TEST(destroy_running_kills_and_reaps) {
  const char *argv[] = {"sleep", "30", NULL};
  mp_subprocess_t *sp;
  ASSERT_OK(mp_subprocess_spawn(&sp, argv, NULL));
  pid_t pid = mp_subprocess_pid(sp);
  ASSERT_OK(mp_subprocess_destroy(sp));
  ASSERT(kill(pid, 0) < 0);
}

/* A helper process spawns `sleep 30` and is then SIGKILLed; returns the
 * sleep's pid. */
/* sleep 30 as a thread of this process would start it; *sp NULL on error. */
typedef struct {
  unsigned flags;
  mp_subprocess_t *sp;
} sleep_req_t;

static void *spawn_sleep(void *arg) {
  sleep_req_t *req = arg;
  const char *argv[] = {"sleep", "30", NULL};
  mp_subprocess_opts_t o;
  memset(&o, 0, sizeof o);
  o.flags = req->flags;
  if (mp_subprocess_spawn(&req->sp, argv, &o) != 0)
    req->sp = NULL;
  return NULL;
}

/* A helper process spawns `sleep 30` (from its main thread, or from a
 * thread that ends at once) and is then SIGKILLed; returns the sleep's pid,
 * checked alive before the kill. */
static pid_t orphan_sleep(unsigned flags, bool from_thread) {
  int p[2];
  ASSERT(pipe(p) == 0);
  pid_t helper = fork();
  ASSERT(helper >= 0);
  if (helper == 0) {
    sleep_req_t req = {flags, NULL};
    pthread_t t;
    if (!from_thread)
      spawn_sleep(&req);
    else if (pthread_create(&t, NULL, spawn_sleep, &req) != 0 ||
             pthread_join(t, NULL) != 0)
      _exit(1);
    if (!req.sp)
      _exit(1);
    pid_t pid = mp_subprocess_pid(req.sp);
    if (write(p[1], &pid, sizeof pid) != sizeof pid)
      _exit(1);
    pause();
    _exit(0);
  }
  close(p[1]);
  pid_t pid = 0;
  ASSERT(read(p[0], &pid, sizeof pid) == sizeof pid);
  close(p[0]);
  mpt_sleep_ms(50);
  ASSERT(!pid_gone(pid)); /* also after the spawning thread ended */
  mpt_kill_reap(helper);
  return pid;
}

static void wait_gone(pid_t pid) {
  uint64_t end = mpt_now_ms() + 10000;
  while (!pid_gone(pid) && mpt_now_ms() < end)
    mpt_sleep_ms(5);
  ASSERT(pid_gone(pid));
}

TEST(children_die_with_parent) {
  wait_gone(orphan_sleep(0, false));
  /* Unless asked to outlive it. */
  pid_t pid = orphan_sleep(MP_SUBPROCESS_OUTLIVE_PARENT, false);
  mpt_sleep_ms(100);
  ASSERT(!pid_gone(pid));
  kill(pid, SIGKILL);
}

/* The SigIgn mask in a /proc/<pid>/status text. */
static uint64_t sigign_of_text(const char *text) {
  const char *p = strstr(text, "SigIgn:");
  ASSERT(p != NULL);
  return strtoull(p + 7, NULL, 16);
}

static uint64_t sigign_of(const char *path) {
  FILE *f = fopen(path, "r");
  ASSERT(f != NULL);
  char buf[4096];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  return sigign_of_text(buf);
}

TEST(signals_and_session) {
  /* SIGPIPE ignored here is default again in the child, unless asked. */
  signal(SIGPIPE, SIG_IGN);
  signal(SIGXFSZ, SIG_IGN);
  /* Other signals the test was started with ignored (nohup, a background
   * job) stay ignored, as exec keeps them. */
  uint64_t mine = sigign_of("/proc/self/status");
  uint64_t pipe_xfsz = (1ull << (SIGPIPE - 1)) | (1ull << (SIGXFSZ - 1));
  ASSERT((mine & pipe_xfsz) == pipe_xfsz);
  const char *st[] = {"grep", "SigIgn", "/proc/self/status", NULL};
  char *out = run_out(st, NULL, NULL);
  ASSERT_EQ(sigign_of_text(out), mine & ~pipe_xfsz);
  free(out);
  mp_subprocess_opts_t o;
  memset(&o, 0, sizeof o);
  o.flags = MP_SUBPROCESS_KEEP_SIGNALS;
  out = run_out(st, &o, NULL);
  ASSERT_EQ(sigign_of_text(out), mine);
  free(out);
  signal(SIGXFSZ, SIG_DFL);
  signal(SIGPIPE, SIG_DFL);

  o.flags = MP_SUBPROCESS_NEW_SESSION;
  o.stdio[1].mode = MP_STDIO_PIPE;
  const char *stat[] = {"cat", "/proc/self/stat", NULL};
  mp_subprocess_t *sp;
  ASSERT_OK(mp_subprocess_spawn(&sp, stat, &o));
  char *s;
  size_t len;
  ASSERT_OK(
      mp_subprocess_communicate(sp, NULL, 0, &s, &len, NULL, NULL, MP_FOREVER));
  /* Field 6 is the session id: the child leads its own. */
  char *p = strrchr(s, ')');
  int ppid = 0, pgrp = 0, sid = 0;
  char state;
  ASSERT(p && sscanf(p + 2, "%c %d %d %d", &state, &ppid, &pgrp, &sid) == 4);
  ASSERT_EQ(sid, mp_subprocess_pid(sp));
  ASSERT_EQ(ppid, getpid());
  free(s);
  ASSERT_OK(mp_subprocess_destroy(sp));
}

TEST(many_spawns_no_leak) {
  const char *tru[] = {"/bin/true", NULL};
  const char *fls[] = {"false", NULL};
  for (int i = 0; i < 100; i++) {
    mp_run_result_t res;
    ASSERT_OK(mp_run(i % 2 ? tru : fls, NULL, &res));
    ASSERT_EQ(res.returncode, i % 2 ? 0 : 1);
    mp_subprocess_t *sp;
    const char *missing[] = {"mproc-missing-cmd", NULL};
    ASSERT_ERR(mp_subprocess_spawn(&sp, missing, NULL), MP_ENOENT);
  }
}

TEST(run_timeout_while_feeding_input) {
  /* The child never reads: the input stays stuck in the pipe. */
  size_t n = 8u << 20;
  char *in = calloc(1, n);
  const char *argv[] = {"sleep", "30", NULL};
  mp_run_opts_t ro;
  memset(&ro, 0, sizeof ro);
  ro.input = in;
  ro.input_len = n;
  ro.capture_output = true;
  ro.time_limit_ms = 150;
  mp_run_result_t res;
  ASSERT_ERR(mp_run(argv, &ro, &res), MP_ETIMEDOUT);
  ASSERT_EQ(res.returncode, -SIGKILL);
  ASSERT_EQ(res.out_len, 0);
  mp_run_result_free(&res);
  free(in);
}

TEST(child_killed_mid_transfer) {
  /* SIGKILL the command at varying moments of a large transfer: the call
   * always returns, with what was read, and nothing leaks. */
  size_t n = 4u << 20;
  char *in = malloc(n);
  memset(in, 'x', n);
  const char *cat[] = {"cat", NULL};
  mp_subprocess_opts_t o;
  memset(&o, 0, sizeof o);
  o.stdio[0].mode = o.stdio[1].mode = o.stdio[2].mode = MP_STDIO_PIPE;
  for (int round = 0; round < 20; round++) {
    mp_subprocess_t *sp;
    ASSERT_OK(mp_subprocess_spawn(&sp, cat, &o));
    char *out = NULL;
    size_t len = 0;
    int r =
        mp_subprocess_communicate(sp, in, n, &out, &len, NULL, NULL, round % 5);
    if (r == MP_ETIMEDOUT) {
      ASSERT_OK(mp_subprocess_kill(sp));
      ASSERT_OK(mp_subprocess_communicate(sp, in, n, &out, &len, NULL, NULL,
                                          MP_FOREVER));
    } else {
      ASSERT_OK(r);
    }
    int rc;
    ASSERT_OK(mp_subprocess_returncode(sp, &rc));
    ASSERT(rc == 0 || rc == -SIGKILL);
    ASSERT(len <= n);
    ASSERT(rc != 0 || len == n);
    for (size_t i = 0; i < len; i += 4096)
      ASSERT(out[i] == 'x');
    free(out);
    ASSERT_OK(mp_subprocess_destroy(sp));
  }
  /* Killed by itself after writing: its output is still all there. */
  const char *sh[] = {"sh", "-c", "head -c 1000000 /dev/zero; kill -9 $$",
                      NULL};
  mp_run_opts_t ro;
  memset(&ro, 0, sizeof ro);
  ro.capture_output = true;
  mp_run_result_t res;
  ASSERT_OK(mp_run(sh, &ro, &res));
  ASSERT_EQ(res.returncode, -SIGKILL);
  ASSERT_EQ(res.out_len, 1000000);
  mp_run_result_free(&res);
  free(in);
}

static void *spawn_thread(void *arg) {
  long id = (long)arg;
  char word[32];
  snprintf(word, sizeof word, "thread-%ld", id);
  const char *argv[] = {"echo", word, NULL};
  for (int i = 0; i < 20; i++) {
    mp_run_opts_t ro;
    memset(&ro, 0, sizeof ro);
    ro.capture_output = true;
    ro.sp.flags = MP_SUBPROCESS_KEEP_FDS; /* only close-on-exec protects */
    mp_run_result_t res;
    if (mp_run(argv, &ro, &res) != 0 || res.out_len != strlen(word) + 1 ||
        memcmp(res.out, word, strlen(word)) != 0)
      return (void *)1;
    mp_run_result_free(&res);
  }
  return NULL;
}

TEST(spawn_from_threads) {
  pthread_t t[4];
  for (long i = 0; i < 4; i++)
    ASSERT(pthread_create(&t[i], NULL, spawn_thread, (void *)i) == 0);
  for (int i = 0; i < 4; i++) {
    void *r;
    ASSERT(pthread_join(t[i], &r) == 0);
    ASSERT(r == NULL);
  }
}

TEST(explicit_pipe_size) {
  mp_subprocess_opts_t o;
  memset(&o, 0, sizeof o);
  o.stdio[0].mode = o.stdio[1].mode = MP_STDIO_PIPE;
  o.pipe_size = 256 * 1024;
  const char *cat[] = {"cat", NULL};
  mp_subprocess_t *sp;
  ASSERT_OK(mp_subprocess_spawn(&sp, cat, &o));
  ASSERT(fcntl(mp_subprocess_fd(sp, 1), F_GETPIPE_SZ) >= 256 * 1024);
  ASSERT(fcntl(mp_subprocess_fd(sp, 0), F_GETPIPE_SZ) >= 256 * 1024);
  char *out;
  size_t len;
  ASSERT_OK(mp_subprocess_communicate(sp, "abc", 3, &out, &len, NULL, NULL,
                                      MP_FOREVER));
  ASSERT_STR_EQ(out, "abc");
  free(out);
  ASSERT_OK(mp_subprocess_destroy(sp));
}

static volatile sig_atomic_t sigchld_seen;
static void on_sigchld(int sig) {
  (void)sig;
  sigchld_seen++;
}

TEST(leaves_application_children_alone) {
  /* The application has its own SIGCHLD handler and its own child: waiting
   * for a command must neither reap that child nor replace the handler. */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigchld;
  sa.sa_flags = SA_RESTART;
  ASSERT(sigaction(SIGCHLD, &sa, NULL) == 0);
  pid_t mine = fork();
  ASSERT(mine >= 0);
  if (mine == 0)
    _exit(42);
  mpt_sleep_ms(50); /* let it become a zombie first */
  const char *argv[] = {"sh", "-c", "exit 7", NULL};
  mp_run_result_t res;
  ASSERT_OK(mp_run(argv, NULL, &res));
  ASSERT_EQ(res.returncode, 7);
  int st = 0;
  ASSERT(waitpid(mine, &st, 0) == mine);
  ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 42);
  ASSERT(sigchld_seen >= 1);
  struct sigaction now;
  ASSERT(sigaction(SIGCHLD, NULL, &now) == 0);
  ASSERT(now.sa_handler == on_sigchld);

  /* SIGCHLD ignored: children are reaped by the kernel; the status is lost
   * and reported as 0, as Python does, and nothing hangs. */
  signal(SIGCHLD, SIG_IGN);
  ASSERT_OK(mp_run(argv, NULL, &res));
  ASSERT_EQ(res.returncode, 0);
  signal(SIGCHLD, SIG_DFL);
}

TEST(communicate_timeout_with_endless_output) {
  /* Output keeps the pipe ready all the time: the timeout still applies. */
  const char *argv[] = {"yes", NULL};
  mp_subprocess_opts_t o;
  memset(&o, 0, sizeof o);
  o.stdio[1].mode = MP_STDIO_PIPE;
  o.pipe_size = -1;
  mp_subprocess_t *sp;
  ASSERT_OK(mp_subprocess_spawn(&sp, argv, &o));
  /* Wait until the output has begun (a loaded machine may start `yes` late),
   * so the output kept from the timed-out call below is not empty. */
  struct pollfd pfd = {.fd = mp_subprocess_fd(sp, 1), .events = POLLIN};
  ASSERT(pfd.fd >= 0);
  ASSERT(poll(&pfd, 1, 10000) == 1);
  char *out = NULL;
  size_t len = 0;
  ASSERT_ERR(mp_subprocess_communicate(sp, NULL, 0, &out, &len, NULL, NULL, 20),
             MP_ETIMEDOUT);
  ASSERT_OK(mp_subprocess_kill(sp));
  ASSERT_OK(mp_subprocess_communicate(sp, NULL, 0, &out, &len, NULL, NULL,
                                      MP_FOREVER));
  ASSERT(len > 0);
  ASSERT(out[0] == 'y' && out[1] == '\n');
  free(out);
  ASSERT_OK(mp_subprocess_destroy(sp));
}

TEST(mp_wait_on_subprocesses) {
  const char *fast[] = {"sleep", "0.05", NULL};
  const char *slow[] = {"sleep", "30", NULL};
  mp_subprocess_t *a, *b;
  ASSERT_OK(mp_subprocess_spawn(&a, fast, NULL));
  ASSERT_OK(mp_subprocess_spawn(&b, slow, NULL));
  mp_waitable_t w[2] = {mp_subprocess_waitable(a), mp_subprocess_waitable(b)};
  ASSERT_EQ(mp_wait(w, 2, 10000), 1);
  ASSERT(w[0].ready && !w[1].ready);
  int rc = -1;
  ASSERT_EQ(mp_subprocess_poll(a, &rc), 1);
  ASSERT_EQ(rc, 0);
  ASSERT_EQ(mp_wait(&w[1], 1, 20), 0);
  ASSERT_OK(mp_subprocess_destroy(a));
  ASSERT_OK(mp_subprocess_destroy(b));
}

static void *sigblk_thread(void *arg) {
  /* The command starts with the asking thread's signal mask. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  const char *argv[] = {"grep", "SigBlk", "/proc/self/status", NULL};
  mp_run_opts_t ro;
  memset(&ro, 0, sizeof ro);
  ro.capture_output = true;
  mp_run_result_t res;
  if (mp_run(argv, &ro, &res) != 0)
    return (void *)1;
  uint64_t blk = strtoull(strchr(res.out, ':') + 1, NULL, 16);
  mp_run_result_free(&res);
  return blk == (1ull << (SIGUSR1 - 1)) ? NULL : (void *)2;
}

TEST(command_outlives_spawning_thread) {
  /* The parent-death signal follows the thread that cloned: a command
   * started by a thread that then ends must keep running. */
  sleep_req_t req = {0, NULL};
  pthread_t t;
  ASSERT(pthread_create(&t, NULL, spawn_sleep, &req) == 0);
  ASSERT(pthread_join(t, NULL) == 0);
  ASSERT(req.sp != NULL);
  mpt_sleep_ms(100);
  ASSERT_EQ(mp_subprocess_poll(req.sp, NULL), 0);
  ASSERT_OK(mp_subprocess_destroy(req.sp));

  void *r = (void *)3;
  ASSERT(pthread_create(&t, NULL, sigblk_thread, NULL) == 0);
  ASSERT(pthread_join(t, &r) == 0);
  ASSERT(r == NULL);
}

TEST(thread_spawned_children_die_with_parent) {
  wait_gone(orphan_sleep(0, true));
}

TEST(timeout_while_only_input_is_pending) {
  /* Output closed early, input never read: the feeding side times out. */
  size_t n = 8u << 20;
  char *in = calloc(1, n);
  const char *argv[] = {"sh", "-c", "exec >&- 2>&-; exec sleep 30", NULL};
  mp_subprocess_opts_t o;
  memset(&o, 0, sizeof o);
  o.stdio[0].mode = o.stdio[1].mode = o.stdio[2].mode = MP_STDIO_PIPE;
  mp_subprocess_t *sp;
  ASSERT_OK(mp_subprocess_spawn(&sp, argv, &o));
  char *out = NULL, *err = NULL;
  size_t out_len = 1, err_len = 1;
  uint64_t t0 = mpt_now_ms();
  ASSERT_ERR(
      mp_subprocess_communicate(sp, in, n, &out, &out_len, &err, &err_len, 200),
      MP_ETIMEDOUT);
  ASSERT(mpt_now_ms() - t0 >= 200);
  ASSERT_OK(mp_subprocess_kill(sp));
  ASSERT_OK(mp_subprocess_communicate(sp, in, n, &out, &out_len, &err, &err_len,
                                      MP_FOREVER));
  ASSERT_STR_EQ(out, "");
  ASSERT_STR_EQ(err, "");
  ASSERT_EQ(out_len + err_len, 0);
  free(out);
  free(err);
  int rc;
  ASSERT_OK(mp_subprocess_returncode(sp, &rc));
  ASSERT_EQ(rc, -SIGKILL);
  ASSERT_OK(mp_subprocess_destroy(sp));
  free(in);
}
