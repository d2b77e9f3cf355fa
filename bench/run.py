#!/usr/bin/env python3
"""Runs the benchmark families side by side and writes build/bench.json.

A family is a set of programs, each printing one JSON object per line:
  build/bench/bench_<family>[_*]   ours: {"workload", "unit", "mproc",
                                   "floor", "higher_is_better", "target",
                                   "floor_max"}, and peers it measured
                                   itself: {"workload", "peer", "peer_value"}
  bench/python/<family>[_*].py     the Python peer: {"workload", "peer",
                                   "value"}, run with the system python3 -I
Each program measures every workload once per invocation. run.py runs them
RUNS times (default 5, env BENCH_RUNS or --runs), interleaved (ours, peer,
ours, peer, ..., the order flipped every other round) so that a noisy spell
hits both sides, and reports per row the median of the runs and their
min-max spread, for mproc, the peer and the floor alike.

A family may instead have bench/<family>.py printing whole rows ({"workload",
"peer", "unit", "mproc", "peer_value", "floor", "higher_is_better"}); it is
run once and repeats its runs itself: lists in "mproc_runs", "peer_runs" and
"floor_runs", when given, are its samples (the copy family does this), and
its "target" applies to its own peer (cp -a, rsync -a); elsewhere targets
apply to the Python peer's row.

Ratio: how many times better mproc is than the peer, whatever the unit,
median over median. ratio_worst: mproc's worst run over the peer's median.
A row whose spread (max/min of any side) exceeds WIDE is marked "wide".
"""
import argparse, glob, json, os, shutil, statistics, subprocess, sys

FAMILIES = ["process", "pipe", "lock", "queue", "pool", "manager", "copy", "mpi",
            "redis"]
HERE = os.path.dirname(os.path.abspath(__file__))
WIDE = 2.0


def system_python():
    for p in ("/usr/bin/python3", shutil.which("python3")):
        if p and os.path.exists(p):
            return p
    return sys.executable


def lines_of(cmd, env=None):
    print("  running: " + " ".join(cmd), file=sys.stderr, flush=True)
    try:
        out = subprocess.run(cmd, stdout=subprocess.PIPE, env=env, check=False,
                             timeout=3600).stdout.decode()
    except subprocess.TimeoutExpired:
        print("  timed out: " + " ".join(cmd), file=sys.stderr)
        return []
    rows = []
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except ValueError:
                print("  bad line: " + line, file=sys.stderr)
    return rows


def better(v, higher):
    """A key that sorts the best value last."""
    return v if higher else -v


def ratio(m, p, higher):
    if not m or not p:
        return None
    return m / p if higher else p / m


def summary(values):
    """(median, [min, max]) of a list of numbers, (None, None) if empty."""
    vs = [v for v in values if v is not None]
    if not vs:
        return None, None
    return statistics.median(vs), [min(vs), max(vs)]


def family_programs(fam, build, py):
    """[(kind, argv)]: kind "ours" or "peer", or "rows" for a whole-row
    script."""
    script = os.path.join(HERE, fam + ".py")
    if os.path.exists(script):
        return [("rows", [py, script, "--build", build])]
    exes = sorted(glob.glob(os.path.join(build, "bench", "bench_" + fam)) +
                  glob.glob(os.path.join(build, "bench", "bench_" + fam + "_*")))
    pys = sorted(glob.glob(os.path.join(HERE, "python", fam + ".py")) +
                 glob.glob(os.path.join(HERE, "python", fam + "_*.py")))
    # -I: isolated, so the script's own folder (with names such as queue.py)
    # does not shadow the standard library.
    return ([("ours", [e]) for e in exes] +
            [("peer", [py, "-I", s]) for s in pys])


class Samples:
    """Per workload: our meta and mproc/floor runs; per (workload, peer):
    the peer's runs. Kept in the order first seen."""

    def __init__(self):
        self.ours = {}   # workload -> {"meta": row, "mproc": [], "floor": []}
        self.peers = {}  # (workload, peer) -> [values]

    def add_ours(self, r):
        if "peer" in r:  # a peer the program measured itself
            self.peers.setdefault((r["workload"], r["peer"]), []).append(
                r.get("peer_value"))
            return
        o = self.ours.setdefault(r["workload"],
                                 {"meta": r, "mproc": [], "floor": []})
        o["mproc"].append(r.get("mproc"))
        o["floor"].append(r.get("floor"))

    def add_peer(self, r):
        self.peers.setdefault((r["workload"], r.get("peer", "python")),
                              []).append(r.get("value"))


def make_row(workload, peer, meta, mproc, peer_vals, floor, own_target=False):
    """own_target: the row's target is against its own peer (a whole-row
    script such as copy.py: cp -a, rsync -a); otherwise targets apply to
    the Python peer's row only."""
    higher = bool(meta.get("higher_is_better"))
    row = {"workload": workload, "peer": peer, "unit": meta.get("unit")}
    row["mproc"], row["mproc_range"] = summary(mproc)
    row["peer_value"], row["peer_range"] = summary(peer_vals)
    row["floor"], row["floor_range"] = summary(floor)
    row["runs"] = len([v for v in mproc if v is not None])
    row["higher_is_better"] = higher
    row["ratio"] = ratio(row["mproc"], row["peer_value"], higher)
    worst = row["mproc_range"] and min(row["mproc_range"],
                                       key=lambda v: better(v, higher))
    row["ratio_worst"] = ratio(worst, row["peer_value"], higher)
    row["wide"] = any(r and r[0] > 0 and r[1] / r[0] > WIDE
                      for r in (row["mproc_range"], row["peer_range"],
                                row["floor_range"]))
    row["target"] = (meta.get("target", 0) if peer == "python" or own_target
                     else 0)
    row["floor_max"] = meta.get("floor_max", 0)
    return row


def run_rows_script(argv):
    rows = []
    for r in lines_of(argv):
        meta = {"unit": r.get("unit"),
                "higher_is_better": r.get("higher_is_better", False)}
        rows.append(make_row(r["workload"], r.get("peer"), dict(r, **meta),
                             r.get("mproc_runs") or [r.get("mproc")],
                             r.get("peer_runs") or [r.get("peer_value")],
                             r.get("floor_runs") or [r.get("floor")],
                             own_target=True))
    return rows


def run_family(fam, build, py, runs):
    progs = family_programs(fam, build, py)
    if progs and progs[0][0] == "rows":
        return run_rows_script(progs[0][1])
    s = Samples()
    for rnd in range(runs):
        print("  round %d/%d" % (rnd + 1, runs), file=sys.stderr, flush=True)
        for kind, argv in (progs if rnd % 2 == 0 else progs[::-1]):
            for r in lines_of(argv):
                (s.add_ours if kind == "ours" else s.add_peer)(r)
    rows = []
    for w, o in s.ours.items():
        peers = [(p, v) for (pw, p), v in s.peers.items() if pw == w]
        for p, vals in peers or [(None, [])]:
            rows.append(make_row(w, p, o["meta"], o["mproc"], vals,
                                 o["floor"]))
    return rows


def verdict(r):
    notes = []
    t = r.get("target") or 0
    if t and r.get("ratio") is not None:
        notes.append("%s >=%gx (worst run %.3gx)" % (
            "ok" if r["ratio"] >= t else "MISS", t, r["ratio_worst"] or 0))
    fm = r.get("floor_max") or 0
    if fm and r.get("floor"):
        m, f = r["mproc"], r["floor"]
        slower = f / m if r.get("higher_is_better") else m / f
        notes.append(("ok" if slower <= fm else "MISS") +
                     " %.2fx floor (<=%g)" % (slower, fm))
    if r.get("wide"):
        notes.append("WIDE spread >%gx" % WIDE)
    return ", ".join(notes)


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return "%.4g" % v
    return str(v)


def fmt_spread(v, rng):
    """median [min-max]"""
    if v is None:
        return "-"
    if not rng or rng[0] == rng[1]:
        return fmt(v)
    return "%s [%s-%s]" % (fmt(v), fmt(rng[0]), fmt(rng[1]))


def print_table(rows):
    cols = ["workload", "peer", "unit", "mproc [min-max]", "peer [min-max]",
            "floor [min-max]", "ratio", "check"]
    table = [[fmt(r["workload"]), fmt(r["peer"]), fmt(r["unit"]),
              fmt_spread(r["mproc"], r["mproc_range"]),
              fmt_spread(r["peer_value"], r["peer_range"]),
              fmt_spread(r["floor"], r["floor_range"]), fmt(r["ratio"]),
              verdict(r)] for r in rows]
    widths = [max([len(c)] + [len(t[i]) for t in table])
              for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for t in table:
        print("  ".join(x.ljust(w) for x, w in zip(t, widths)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--family", default="")
    ap.add_argument("--runs", type=int,
                    default=int(os.environ.get("BENCH_RUNS", "5") or 5))
    a = ap.parse_args()
    fams = [f for f in a.family.split(",") if f] or FAMILIES
    for f in fams:
        if f not in FAMILIES:
            sys.exit("unknown family %s (have: %s)" % (f, ", ".join(FAMILIES)))
    py = system_python()
    rows = []
    for f in fams:
        print("== family %s" % f, file=sys.stderr, flush=True)
        rows += run_family(f, a.build, py, max(1, a.runs))
    print("median of %d runs each, [min-max] over the runs" % max(1, a.runs))
    print_table(rows)
    out = os.path.join(a.build, "bench.json")
    keep = ["workload", "peer", "unit", "mproc", "peer_value", "floor",
            "ratio", "target", "mproc_range", "peer_range", "floor_range", "runs",
            "ratio_worst", "wide"]
    with open(out, "w") as f:
        json.dump([{k: r.get(k) for k in keep} for r in rows], f, indent=1)
    print("wrote " + out)


if __name__ == "__main__":
    main()
