/* mpcp --mpi: the cases of test_mpcp.c listed in the RERUN lines run again
 * with every mpcp command as `mpirun --oversubscribe -n 3 mpcp --mpi` (the
 * root and two worker ranks), checked entry by entry the same way; then what
 * is MPI's own: hard-link groups whose names are walked by different ranks,
 * errors that name the rank, the launch errors. */
#define MPCP_RUN_FMT MP_MPIRUN_CMD " %s --mpi"
#include "test_mpcp.c"

/* Each case's mpcp runs are mpirun jobs (a few seconds each, a minute
 * under the sanitizers): the cases with many runs are left to test_mpcp. */
#define RERUN(name)
RERUN(mpcp_archive_all_cases)
RERUN(mpcp_archive_tmpfile_one_job)
RERUN(mpcp_recursive_without_a)
RERUN(mpcp_unreadable_file)
RERUN(mpcp_exclude)
RERUN(mpcp_no_clobber_and_update)
RERUN(mpcp_dry_run)
RERUN(mpcp_verify_redoes_mismatch)
RERUN(mpcp_update_keeps_hard_links)
RERUN(mpcp_verbose_lines_as_cp)
RERUN(mpcp_resume_copies_only_differences)
RERUN(mpcp_json_files_count_with_walk_error)
RERUN(mpcp_existing_dest_as_cp)
RERUN(mpcp_disk_full_names_file_once)
RERUN(mpcp_xattr_failure_keeps_file)
RERUN(mpcp_user_copy_modes)
RERUN(mpcp_default_acl_not_inherited)
RERUN(mpcp_recursive_drops_dir_setgid)
RERUN(mpcp_symlink_src_followed_as_cp)
RERUN(mpcp_exclude_dir_pattern)

/* Hard-link groups spread over many directories, so that their names are
 * met by the walks of different ranks: each group ends as one inode with
 * all its names (never a copy per rank), and each group's data is whole;
 * the big files among them are also split into chunks. */
TEST(mpcp_mpi_hard_links_across_ranks) {
  setup(false);
  mkdir_p("src");
  int root = open(path("src"), O_PATH | O_DIRECTORY | O_CLOEXEC);
  ASSERT(root >= 0);
  size_t big = 1u << 20;
  char *buf = malloc(big);
  fill(buf, big, 11);
  enum { GROUPS = 6, DIRS = 24 };
  for (int g = 0; g < GROUPS; g++) {
    char n[32];
    snprintf(n, sizeof n, "g%d", g);
    /* groups 0 and 1 are big enough to be split into chunks */
    write_at(root, n, buf + g, g < 2 ? big - 16 : (size_t)(100 + g), 0640);
  }
  for (int d = 0; d < DIRS; d++) {
    char dn[32];
    snprintf(dn, sizeof dn, "d%02d", d);
    ASSERT(mkdirat(root, dn, 0755) == 0);
    for (int f = 0; f < 40; f++) {
      char fn[48];
      snprintf(fn, sizeof fn, "%s/f%02d", dn, f);
      write_at(root, fn, buf + f, (size_t)(f * 13), 0644);
    }
    for (int g = 0; g < GROUPS; g++) {
      char from[32], to[48];
      snprintf(from, sizeof from, "g%d", g);
      snprintf(to, sizeof to, "%s/link%d", dn, g);
      ASSERT(linkat(root, from, root, to, 0) == 0);
    }
  }
  close(root);
  free(buf);
  int rc;
  run_env = "MPCP_CHUNK_MIN=262144 MPCP_CHUNK_SIZE=65536";
  char *out = mpcp(&rc, true, "-a --json src dst");
  if (rc != 0)
    mpt_fail(__FILE__, __LINE__, "mpcp failed (%d): %s", rc, out);
  /* every name but the first of each group is a link made at the end */
  ASSERT_EQ(json_field(out, "hard_links"), GROUPS * DIRS);
  ASSERT_EQ(json_field(out, "files"), GROUPS * (DIRS + 1) + DIRS * 40);
  ASSERT_EQ(json_field(out, "dirs"), DIRS + 1);
  ASSERT_EQ(json_field(out, "errors"), 0);
  free(out);
  compare_trees("src", "dst", true);
  for (int g = 0; g < GROUPS; g++) {
    char n[32];
    snprintf(n, sizeof n, "dst/g%d", g);
    struct stat first, st;
    ASSERT(stat(path(n), &first) == 0);
    ASSERT_EQ(first.st_nlink, DIRS + 1);
    for (int d = 0; d < DIRS; d++) {
      snprintf(n, sizeof n, "dst/d%02d/link%d", d, g);
      ASSERT(stat(path(n), &st) == 0);
      if (st.st_ino != first.st_ino)
        mpt_fail(__FILE__, __LINE__, "%s is not a link of dst/g%d", n, g);
    }
  }
  int d = open(path("dst"), O_PATH | O_DIRECTORY | O_CLOEXEC);
  ASSERT_EQ(count_temps(d), 0);
  close(d);
  cleanup();
}

/* Errors found by a worker rank name the path and the rank (and its host);
 * errors of the root's own name the path. */
TEST(mpcp_mpi_errors_name_rank) {
  if (!is_root())
    return;
  setup(true);
  ASSERT(chmod(work, 0755) == 0);
  mkdir_p("src/sub/locked");
  write_file("src/sub/secret", "s");
  write_file("src/sub/locked/x", "x");
  write_file("src/a", "a");
  ASSERT(sh("chown -R 65534:65534 src && chmod 000 src/sub/secret "
            "src/sub/locked && mkdir dst && chown 65534 dst") == 0);
  int rc;
  char *out = mpcp(&rc, false, AS_NOBODY "%s -a src dst/c", bin());
  ASSERT_EQ(rc, 1);
  const char *l = strstr(out, "'src/sub/secret': Permission denied (rank ");
  if (!l)
    mpt_fail(__FILE__, __LINE__, "no error naming the file and rank: %s", out);
  ASSERT(strstr(l, " on ")); /* ... (rank R on HOST) */
  /* the walk of src/sub ran on a rank too: its error names it */
  l = strstr(out, "'src/sub/locked': Permission denied (rank ");
  if (!l)
    mpt_fail(__FILE__, __LINE__, "walk error without the rank: %s", out);
  free(out);
  assert_content("dst/c/a", "a");
  cleanup();
}

/* Started without a second rank (no mpirun, or one rank), --mpi says how
 * to start it and copies nothing. */
TEST(mpcp_mpi_needs_ranks) {
  setup(false);
  write_file("a", "a");
  char exe[PATH_MAX], cmd[PATH_MAX * 3];
  snprintf(exe, sizeof exe, "%s/mpcp", mpt_build_dir());
  const char *how[] = {"", MP_MPIEXEC_PATH " -n 1 "};
  for (int i = 0; i < 2; i++) {
    snprintf(cmd, sizeof cmd, "cd '%s' && %s%s --mpi a b 2>&1", work, how[i],
             exe);
    int st;
    char *out = mpt_run_cmd(cmd, &st);
    ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    if (!strstr(out, "mpcp: --mpi needs at least 2 MPI ranks: run it as "
                     "'mpirun -n N mpcp --mpi ...'"))
      mpt_fail(__FILE__, __LINE__, "unexpected output: %s", out);
    ASSERT(!exists("b"));
    free(out);
  }
  cleanup();
}
