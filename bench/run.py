#!/usr/bin/env python3
"""Runs the benchmark families side by side and writes build/bench.json.

For each family: build/bench/bench_<family>[_*] (mproc and floor figures, one
JSON object per line) and bench/python/<family>.py run with the system
python3 (peer figures: {"workload", "peer", "value"}). A family may instead
have bench/<family>.py printing whole rows (the copy family does).
Ratio: how many times better mproc is than the peer, whatever the unit.
"""
import argparse, glob, json, os, shutil, subprocess, sys

FAMILIES = ["process", "pipe", "lock", "queue", "pool", "manager", "copy", "mpi",
            "redis"]
HERE = os.path.dirname(os.path.abspath(__file__))


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


def ratio(row):
    m, p = row.get("mproc"), row.get("peer_value")
    if not m or not p:
        return None
    return m / p if row.get("higher_is_better") else p / m


def run_family(fam, build, py):
    rows = []
    script = os.path.join(HERE, fam + ".py")
    if os.path.exists(script):
        for r in lines_of([py, script, "--build", build]):
            r["ratio"] = ratio(r)
            rows.append(r)
        return rows
    # bench_<family> and bench_<family>_<more>: several programs may share a
    # family; likewise python/<family>.py and python/<family>_<more>.py.
    exes = sorted(glob.glob(os.path.join(build, "bench", "bench_" + fam)) +
                  glob.glob(os.path.join(build, "bench", "bench_" + fam + "_*")))
    ours = []
    for exe in exes:
        ours += lines_of([exe])
    peers = []
    pyscripts = sorted(glob.glob(os.path.join(HERE, "python", fam + ".py")) +
                       glob.glob(os.path.join(HERE, "python", fam + "_*.py")))
    for pyscript in pyscripts:
        # -I: isolated, so the script's own folder (with names such as
        # queue.py) does not shadow the standard library.
        peers += [dict(r, peer_value=r.get("value")) for r in lines_of([py, "-I", pyscript])]
    own_peers = [r for r in ours if "peer" in r]
    ours = [r for r in ours if "peer" not in r]
    for o in ours:
        matched = [p for p in peers + own_peers if p["workload"] == o["workload"]]
        if not matched:
            matched = [{"peer": None, "peer_value": None}]
        for p in matched:
            row = {"workload": o["workload"], "peer": p["peer"], "unit": o["unit"],
                   "mproc": o["mproc"], "peer_value": p["peer_value"],
                   "floor": o.get("floor"),
                   "higher_is_better": o.get("higher_is_better", False),
                   "target": o.get("target", 0) if p["peer"] == "python" else 0,
                   "floor_max": o.get("floor_max", 0)}
            row["ratio"] = ratio(row)
            rows.append(row)
    return rows


def verdict(r):
    notes = []
    t = r.get("target") or 0
    if t and r.get("ratio") is not None:
        notes.append(("ok" if r["ratio"] >= t else "MISS") + " >=%gx" % t)
    fm = r.get("floor_max") or 0
    if fm and r.get("floor"):
        m, f = r["mproc"], r["floor"]
        slower = f / m if r.get("higher_is_better") else m / f
        notes.append(("ok" if slower <= fm else "MISS") + " %.2fx floor (<=%g)" % (slower, fm))
    return ", ".join(notes)


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return "%.4g" % v
    return str(v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--family", default="")
    a = ap.parse_args()
    fams = [f for f in a.family.split(",") if f] or FAMILIES
    for f in fams:
        if f not in FAMILIES:
            sys.exit("unknown family %s (have: %s)" % (f, ", ".join(FAMILIES)))
    py = system_python()
    rows = []
    for f in fams:
        print("== family %s" % f, file=sys.stderr, flush=True)
        rows += run_family(f, a.build, py)
    cols = ["workload", "peer", "unit", "mproc", "peer_value", "floor", "ratio", "check"]
    table = [[fmt(r.get(c)) if c != "check" else verdict(r) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(t[i]) for t in table]) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for t in table:
        print("  ".join(x.ljust(w) for x, w in zip(t, widths)))
    out = os.path.join(a.build, "bench.json")
    keep = ["workload", "peer", "unit", "mproc", "peer_value", "floor", "ratio"]
    with open(out, "w") as f:
        json.dump([{k: r.get(k) for k in keep} for r in rows], f, indent=1)
    print("wrote " + out)


if __name__ == "__main__":
    main()
