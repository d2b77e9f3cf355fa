/* The progress line: one stderr line redrawn about ten times a second. */
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "mpcp.h"

double mpcp_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void mpcp_human_bytes(double v, char *buf, size_t len) {
  static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    u++;
  }
  snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", v, units[u]);
}

static void fmt_eta(double s, char *buf, size_t len) {
  if (s < 0 || s > 359999) {
    snprintf(buf, len, "--:--");
    return;
  }
  long t = (long)(s + 0.5);
  if (t >= 3600)
    snprintf(buf, len, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  else
    snprintf(buf, len, "%ld:%02ld", t / 60, t % 60);
}

static int term_width(void) {
  struct winsize ws;
  if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20)
    return ws.ws_col;
  return 80;
}

/* Totals grow while the walk runs, so the fraction shown is held at its
 * highest value: the bar never moves backwards. */
void mpcp_progress_draw(mpcp_progress_t *p, bool force) {
  if (!p->enabled)
    return;
  double now = mpcp_now();
  if (!force && now - p->last_draw < 0.1)
    return;
  p->last_draw = now;
  double el = now - p->start;
  double rate = el > 0 ? (double)p->bytes_done / el : 0;
  double frac =
      p->bytes_total
          ? (double)p->bytes_done / (double)p->bytes_total
          : (p->files_total ? (double)p->files_done / (double)p->files_total
                            : 0);
  if (frac > 1)
    frac = 1;
  if (frac < p->shown_frac)
    frac = p->shown_frac;
  p->shown_frac = frac;
  char bd[32], bt[32], rt[32], eta[32];
  mpcp_human_bytes((double)p->bytes_done, bd, sizeof bd);
  mpcp_human_bytes((double)p->bytes_total, bt, sizeof bt);
  mpcp_human_bytes(rate, rt, sizeof rt);
  double left = rate > 0 ? (double)(p->bytes_total - p->bytes_done) / rate : -1;
  if (!p->bytes_total && p->files_done && el > 0)
    left =
        (double)(p->files_total - p->files_done) / ((double)p->files_done / el);
  fmt_eta(left, eta, sizeof eta);
  char bar[24];
  int fill = (int)(frac * 20);
  for (int i = 0; i < 20; i++)
    bar[i] = i < fill ? '#' : '-';
  bar[20] = '\0';
  char line[256];
  int n = snprintf(line, sizeof line,
                   "[%s] %3.0f%% %llu/%llu%s files %s/%s%s %s/s ETA %s", bar,
                   frac * 100, (unsigned long long)p->files_done,
                   (unsigned long long)p->files_total, p->walk_done ? "" : "+",
                   bd, bt, p->walk_done ? "" : "+", rt, eta);
  if (p->errors)
    n += snprintf(line + n, sizeof line - (size_t)n, " %llu err",
                  (unsigned long long)p->errors);
  int w = term_width() - 1;
  if (n > w)
    n = w;
  fprintf(stderr, "\r%.*s\033[K", n, line);
  fflush(stderr);
  p->drawn_len = n;
}

void mpcp_progress_clear(mpcp_progress_t *p) {
  if (p->enabled && p->drawn_len) {
    fputs("\r\033[K", stderr);
    p->drawn_len = 0;
  }
}
