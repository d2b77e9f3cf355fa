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

/* The terminal's width; 80 when it cannot be asked (not a terminal). */
static int term_width(void) {
  struct winsize ws;
  if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
    return ws.ws_col;
  return 80;
}

/* "35.6/78.1 MiB": done in the unit of the total. */
static void bytes_pair(uint64_t done, uint64_t total, char *buf, size_t len) {
  static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double d = (double)done, t = (double)total;
  int u = 0;
  while (t >= 1024 && u < 5) {
    d /= 1024;
    t /= 1024;
    u++;
  }
  snprintf(buf, len, u ? "%.1f/%.1f %s" : "%.0f/%.0f %s", d, t, units[u]);
}

/* Totals grow while the walk runs, so the fraction shown is held at its
 * highest value: the bar never moves backwards. The ETA takes the slower of
 * the byte rate and the file rate so far (many small files left can take
 * longer than their few bytes suggest); the throughput shown is smoothed
 * over about a second. */
void mpcp_progress_draw(mpcp_progress_t *p, bool force) {
  if (!p->enabled)
    return;
  double now = mpcp_now();
  if (!force && now - p->last_draw < 0.1)
    return;
  double dt = now - p->last_draw;
  if (p->last_draw > 0 && dt > 0 && p->bytes_done >= p->rate_bytes) {
    double inst = (double)(p->bytes_done - p->rate_bytes) / dt;
    double w = dt > 1 ? 1 : dt;
    p->rate = p->rate_bytes ? p->rate * (1 - w) + inst * w : inst;
  }
  p->rate_bytes = p->bytes_done;
  p->last_draw = now;
  double el = now - p->start;
  if (el < 1.5 && el > 0) /* too early for a moving average */
    p->rate = (double)p->bytes_done / el;
  /* Entries retried after a worker died may be counted twice. */
  if (p->files_done > p->files_total && p->walk_done)
    p->files_done = p->files_total;
  char line[256], bar[24];
  int n;
  if (p->verify_total) {
    double frac = (double)p->verify_done / (double)p->verify_total;
    if (frac > 1)
      frac = 1;
    int fill = (int)(frac * 16);
    for (int i = 0; i < 16; i++)
      bar[i] = i < fill ? '#' : '-';
    bar[16] = '\0';
    n = snprintf(line, sizeof line, "verify %3d%% [%s] %llu/%llu files",
                 (int)(frac * 100), /* 100% only when done */ bar,
                 (unsigned long long)p->verify_done,
                 (unsigned long long)p->verify_total);
  } else {
    double frac =
        p->bytes_total   ? (double)p->bytes_done / (double)p->bytes_total
        : p->files_total ? (double)p->files_done / (double)p->files_total
                         : 0;
    if (p->bytes_total && p->files_total) {
      /* weigh files in too: a tree of empty files still moves the bar */
      double ff = (double)p->files_done / (double)p->files_total;
      frac = (frac * 3 + ff) / 4;
    }
    if (frac > 1)
      frac = 1;
    if (frac < p->shown_frac)
      frac = p->shown_frac;
    p->shown_frac = frac;
    int fill = (int)(frac * 16);
    for (int i = 0; i < 16; i++)
      bar[i] = i < fill ? '#' : '-';
    bar[16] = '\0';
    char bp[48], rt[32], eta[32];
    bytes_pair(p->bytes_done, p->bytes_total, bp, sizeof bp);
    mpcp_human_bytes(p->rate, rt, sizeof rt);
    double left = -1;
    if (p->walk_done && p->files_done >= p->files_total &&
        p->bytes_done >= p->bytes_total)
      left = 0;
    else if (el > 0.2 && (p->bytes_done || p->files_done)) {
      double lb = p->bytes_done ? (double)(p->bytes_total - p->bytes_done) /
                                      ((double)p->bytes_done / el)
                                : 0;
      double lf = p->files_done ? (double)(p->files_total - p->files_done) /
                                      ((double)p->files_done / el)
                                : 0;
      left = lb > lf ? lb : lf;
    }
    fmt_eta(left, eta, sizeof eta);
    /* Narrow terminals get fewer whole fields, never one cut in the
     * middle: the bar goes first, then the rate and ETA, then bytes. */
    int w = term_width() - 1;
    const char *plus = p->walk_done ? "" : "+";
    unsigned long long fd = p->files_done, ft = p->files_total;
    int pct = (int)(frac * 100);
    n = snprintf(line, sizeof line,
                 "%3d%% [%s] %llu/%llu%s files %s%s %s/s ETA %s", pct, bar,
                 fd, ft, plus, bp, plus, rt, eta);
    if (n > w)
      n = snprintf(line, sizeof line, "%3d%% %llu/%llu%s files %s%s %s/s "
                   "ETA %s", pct, fd, ft, plus, bp, plus, rt, eta);
    if (n > w)
      n = snprintf(line, sizeof line, "%3d%% %llu/%llu%s files %s%s", pct,
                   fd, ft, plus, bp, plus);
    if (n > w)
      n = snprintf(line, sizeof line, "%3d%% %llu/%llu%s", pct, fd, ft,
                   plus);
    if (n > w)
      n = snprintf(line, sizeof line, "%3d%%", pct);
  }
  int w = term_width() - 1;
  if (p->errors && n > 0 && (size_t)n < sizeof line) {
    int e = snprintf(line + n, sizeof line - (size_t)n, " %llu err",
                     (unsigned long long)p->errors);
    if (e > 0 && n + e <= w)
      n += e;
    else
      line[n] = '\0';
  }
  if (n > w)
    n = w > 0 ? w : 0;
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
