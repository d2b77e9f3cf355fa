#include <string.h>

#include "internal.h"
#include "runner.h"

TEST(error_names_and_messages) {
  ASSERT_STR_EQ(mp_err_name(0), "MP_OK");
  ASSERT_STR_EQ(mp_strerror(0), "success");
  ASSERT_STR_EQ(mp_err_name(MP_EEMPTY), "MP_EEMPTY");
  ASSERT_STR_EQ(mp_err_name(MP_ETOOSHORT), "MP_ETOOSHORT");
  ASSERT_STR_EQ(mp_err_name(MP_EINVAL), "MP_EINVAL");
  ASSERT_EQ(MP_EINVAL, -EINVAL);
  ASSERT_EQ(MP_ENOENT, -ENOENT);
  ASSERT_STR_EQ(mp_strerror(MP_EFULL), "queue is full");
  ASSERT_STR_EQ(mp_strerror(MP_EOWNERDEAD),
                "previous owner died holding the lock");
  ASSERT_STR_EQ(mp_err_name(MP_EWORKERRANK), "MP_EWORKERRANK");
  ASSERT_STR_EQ(mp_strerror(MP_EBINARY), "MPI ranks run different binaries");
  ASSERT_STR_EQ(mp_err_name(-99999), "MP_EUNKNOWN");
  ASSERT_STR_EQ(mp_strerror(12345), "unknown error");
}

/* Codes outside the table still get the C library's words and an errno name;
 * our own codes say what they mean for mproc's calls. */
TEST(error_strerror_falls_back_to_libc) {
  ASSERT_STR_EQ(mp_strerror(-EDQUOT), strerrordesc_np(EDQUOT));
  ASSERT_STR_EQ(mp_strerror(-EHOSTUNREACH), strerrordesc_np(EHOSTUNREACH));
  ASSERT_STR_EQ(mp_err_name(-EDQUOT), "MP_EDQUOT");
  ASSERT_STR_EQ(mp_err_name(-EHOSTUNREACH), "MP_EHOSTUNREACH");
  ASSERT_STR_EQ(mp_strerror(-3999), "unknown error");
  ASSERT_STR_EQ(mp_strerror(-4999), "unknown error");
  ASSERT_STR_EQ(mp_err_name(-3999), "MP_EUNKNOWN");
  ASSERT(strstr(mp_strerror(MP_ETIMEDOUT), "connection") == NULL);
  ASSERT(strstr(mp_strerror(MP_EAGAIN), "not finished") != NULL);
  ASSERT(strstr(mp_strerror(MP_ETASK), "non-zero status") != NULL);
  /* Every table entry still has its own message and name. */
  ASSERT_STR_EQ(mp_strerror(MP_EINVAL), "invalid argument");
  ASSERT_STR_EQ(mp_err_name(MP_ENOENT), "MP_ENOENT");
}

TEST(error_codes_distinct) {
  int codes[] = {MP_EEMPTY,      MP_EFULL,  MP_ECLOSED,  MP_EWORKERDIED,
                 MP_EOWNERDEAD,  MP_ETASK,  MP_ETOOSHORT, MP_EWORKERRANK,
                 MP_EBINARY};
  for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
    ASSERT(codes[i] < 0);
    for (size_t j = i + 1; j < sizeof codes / sizeof codes[0]; j++)
      ASSERT(codes[i] != codes[j]);
  }
}

TEST(version) {
  ASSERT_EQ(mp_version(), MP_VERSION_HEX);
  ASSERT_STR_EQ(mp_version_string(), MP_VERSION_STRING);
}

TEST(timeout_check) {
  ASSERT_OK(mp__check_timeout(MP_FOREVER));
  ASSERT_OK(mp__check_timeout(0));
  ASSERT_OK(mp__check_timeout(5));
  ASSERT_ERR(mp__check_timeout(-2), MP_EINVAL);
}

TEST(segment_create_open_unlink) {
  mp__seg_t a, b;
  ASSERT_OK(mp__seg_create(&a, NULL, 4096, 1 << 20, true));
  ASSERT(mpt_shm_exists(a.name));
  ASSERT_OK(mp__seg_open(&b, a.name, 1 << 20));
  ((volatile char *)a.base)[10] = 42;
  ASSERT_EQ(((volatile char *)b.base)[10], 42);
  ASSERT_OK(mp__seg_grow(&a, 8192));
  ((volatile char *)b.base)[8000] = 7; /* visible through the reservation */
  ASSERT_EQ(((volatile char *)a.base)[8000], 7);
  ASSERT_ERR(mp__seg_grow(&a, 2 << 20), MP_EINVAL);
  mp__seg_t c;
  ASSERT_ERR(mp__seg_create(&c, a.name, 4096, 0, false), MP_EEXIST);
  mp__seg_close(&b);
  ASSERT_OK(mp__seg_unlink(a.name));
  ASSERT(!mpt_shm_exists(a.name));
  ASSERT_ERR(mp__seg_open(&b, a.name, 0), MP_ENOENT);
  mp__seg_close(&a);
  ASSERT_ERR(mp__seg_open(&b, "bad/name", 0), MP_EINVAL);
}

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

TEST(segment_removed_after_sigkill) {
  int p[2];
  ASSERT(pipe(p) == 0);
  pid_t pid = fork();
  if (pid == 0) {
    mp__seg_t s;
    if (mp__seg_create(&s, NULL, 4096, 0, true) != 0)
      _exit(1);
    struct stat st;
    if (fstat(s.fd, &st) != 0 || (st.st_mode & 0777) != 0600)
      _exit(2);
    if (write(p[1], s.name, sizeof s.name) != (ssize_t)sizeof s.name)
      _exit(3);
    pause();
    _exit(0);
  }
  close(p[1]);
  char name[MP__SEG_NAME_MAX];
  ASSERT_EQ(read(p[0], name, sizeof name), (ssize_t)sizeof name);
  close(p[0]);
  ASSERT(mpt_shm_exists(name));
  kill(pid, SIGKILL);
  int st;
  ASSERT_EQ(waitpid(pid, &st, 0), pid);
  for (int i = 0; i < 200 && mpt_shm_exists(name); i++)
    mpt_sleep_ms(10);
  ASSERT(!mpt_shm_exists(name));
}

TEST(segment_untracked_survives) {
  mp__seg_t s;
  pid_t pid = fork();
  if (pid == 0) {
    mp__seg_t k;
    if (mp__seg_create(&k, "/mp-test-keep-segment", 4096, 0, false) != 0)
      _exit(1);
    _exit(0);
  }
  mpt_wait_ok(pid);
  mpt_sleep_ms(50);
  ASSERT(mpt_shm_exists("/mp-test-keep-segment"));
  ASSERT_OK(mp__seg_open(&s, "/mp-test-keep-segment", 0));
  mp__seg_close(&s);
  ASSERT_OK(mp__seg_unlink("/mp-test-keep-segment"));
}
