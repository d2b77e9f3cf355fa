#include "runner.h"

/* Numbers of a "{a: a, b: b}" or "[a, b]" line; pairs must match in a dict. */
static int parse_line(const char *line, long *out, int cap, bool dict) {
  int n = 0;
  const char *p = line + 1;
  while (*p && *p != '}' && *p != ']') {
    char *end;
    long k = strtol(p, &end, 10);
    ASSERT(end != p);
    p = end;
    if (dict) {
      ASSERT(p[0] == ':' && p[1] == ' ');
      long v = strtol(p + 2, &end, 10);
      ASSERT_EQ(k, v);
      p = end;
    }
    ASSERT(n < cap);
    out[n++] = k;
    if (*p == ',') {
      ASSERT(p[1] == ' ');
      p += 2;
    }
  }
  ASSERT(*p == (dict ? '}' : ']') && p[1] == '\0');
  return n;
}

TEST(example_manager_dict_list) {
  char *out = mpt_run_example("manager_dict_list", 0);
  ASSERT(out);
  int lines = 0, dicts = 0, lists = 0, longest = 0;
  long last[8];
  char *save, *line = strtok_r(out, "\n", &save);
  for (; line; line = strtok_r(NULL, "\n", &save)) {
    long nums[8];
    lines++;
    bool dict = line[0] == '{';
    ASSERT(dict || line[0] == '[');
    int n = parse_line(line, nums, 8, dict);
    ASSERT(n >= 1 && n <= 5);
    for (int i = 0; i < n; i++)
      for (int j = i + 1; j < n; j++)
        ASSERT(nums[i] != nums[j]);
    dicts += dict;
    lists += !dict;
    if (!dict && n > longest) {
      longest = n;
      memcpy(last, nums, sizeof nums);
    }
  }
  ASSERT_EQ(lines, 10);
  ASSERT_EQ(dicts, 5);
  ASSERT_EQ(lists, 5);
  /* Whoever appended last printed all five pids. */
  ASSERT_EQ(longest, 5);
  for (int i = 0; i < 5; i++)
    ASSERT(last[i] > 1);
  free(out);
}
