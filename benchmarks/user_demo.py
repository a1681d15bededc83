"""The README's first command timed as a new user meets it: a clean clone of the committed HEAD,
a fresh virtualenv, empty product caches (no feature cache: the run directory is new; no XLA
compilation cache: ``SPEECHMI_CACHE``, the user's cache, is a new folder in the work folder and
``JAX_COMPILATION_CACHE_DIR`` is unset), each step under ``/usr/bin/time -v``.

    python benchmarks/user_demo.py                 # install + demo; 9-17 min on 2 cores
    python benchmarks/user_demo.py --again         # and the demo once more into a new folder
    python benchmarks/user_demo.py --compare runs/demo_before   # and check the records
    python benchmarks/user_demo.py --table runs/demo_before     # only the split of a run
    python benchmarks/user_demo.py --compare-runs NEW OLD       # only the records of two runs

Prints install and demo wall time and peak RSS, the load average before and after, and the
demo's own split from ``results.json`` (per encoder: encoding, each measure, and the seconds
XLA spent compiling in each). pip's download cache is kept: the packages come from the local
cache as they would on a second install, so the install time is pip's resolution and
unpacking, not the network. ``--compare`` reads an earlier run's results.json and reports,
per measure, how many records are identical. ``--again`` then runs ``speechmi demo --out
runs/demo2`` as the same user would next: a new run folder (features encoded again), the
user's XLA compilation cache as the first run left it; its records are compared with the
first run's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path


def timed(cmd: list[str], cwd: Path, env: dict) -> dict:
    """Runs ``cmd`` under /usr/bin/time -v -> {wall_s, max_rss_mb, returncode}."""
    p = subprocess.run(["/usr/bin/time", "-v", *cmd], cwd=cwd, env=env, capture_output=True, text=True)
    if p.returncode:
        sys.stderr.write(p.stdout[-3000:] + p.stderr[-3000:])
        raise SystemExit(f"{' '.join(cmd)} failed with status {p.returncode}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", p.stderr).group(1)
    parts = [float(x) for x in wall.split(":")]
    seconds = sum(v * 60 ** i for i, v in enumerate(reversed(parts)))
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    return {"wall_s": seconds, "max_rss_mb": rss_kb / 1024}


def compare(new: Path, old: Path) -> list[str]:
    """Per measure, the demo's records against an earlier run's (``results.measure_summary``;
    imported here: timing the demo needs no installed package, comparing its records does)."""
    from speechmi_jax.analysis import results

    rows = results.measure_summary(results.read_results(old), results.read_results(new))
    lines = ["| measure | records | identical | in the earlier CI | missing before |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        inside = r["records"] - r["missing_before"] - r["outside_old_ci"]
        lines.append(f"| `{r['measure']}` | {r['records']} | {r['identical']} | {inside} | {r['missing_before']} |")
    return lines


def run_compare(work: Path, new: Path, old: Path, env: dict) -> str:
    """:func:`compare` in the new virtualenv, which has the package whatever runs this script."""
    return subprocess.check_output([str(work / "venv" / "bin" / "python"), str(Path(__file__).resolve()),
                                    "--compare-runs", str(new), str(old)], env=env, text=True)


def split_table(res: dict) -> list[str]:
    """The demo's own split from its results.json (``res``): per encoder, encoding, each measure
    and the seconds XLA spent compiling in each, and their totals, as a markdown table."""
    timings = res["metadata"]["timings_s"]
    cols = sorted({k for t in timings.values() for k in t})
    lines = ["| encoder | " + " | ".join(cols) + " |", "| --- | " + " | ".join("---" for _ in cols) + " |"]
    for enc, t in timings.items():
        lines.append(f"| {enc} | " + " | ".join(f"{t[c]:.0f}" if c in t else "" for c in cols) + " |")
    totals = {c: sum(t.get(c, 0.0) for t in timings.values()) for c in cols}
    lines.append("| total | " + " | ".join(f"{totals[c]:.0f}" for c in cols) + " |")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    ap.add_argument("--again", action="store_true",
                    help="then run the demo again into a new folder (the user's caches as left)")
    ap.add_argument("--compare", type=Path, default=None, help="an earlier run folder (results.json)")
    ap.add_argument("--table", type=Path, default=None,
                    help="only print the split of an earlier run folder (results.json) and stop")
    ap.add_argument("--compare-runs", type=Path, nargs=2, metavar=("NEW", "OLD"),
                    help="only print the records' comparison of two run folders and stop")
    a = ap.parse_args()
    if a.compare_runs:
        print("\n".join(compare(*a.compare_runs)))
        return
    if a.table:
        print("\n".join(split_table(json.loads((a.table / "results.json").read_text()))))
        return
    repo = Path(subprocess.check_output(["git", "rev-parse", "--show-toplevel"], text=True).strip())
    work = a.keep or Path(tempfile.mkdtemp(prefix="speechmi-user-"))
    work.mkdir(parents=True, exist_ok=True)
    clone = work / "speechmi_jax"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    head = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=clone, text=True).strip()
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_", "SPEECHMI_"))}
    env["PATH"] = f"{work / 'venv' / 'bin'}:{env['PATH']}"
    env["VIRTUAL_ENV"] = str(work / "venv")
    env["SPEECHMI_CACHE"] = str(work / "user-cache")  # the user's cache, empty
    load0 = os.getloadavg()
    install = timed(["python3", "-m", "pip", "install", "-q", "-e", ".[demo]"], clone, env)
    demo = timed(["speechmi", "demo", "--out", "runs/demo"], clone, env)
    again = timed(["speechmi", "demo", "--out", "runs/demo2"], clone, env) if a.again else None
    load1 = os.getloadavg()
    res = json.loads((clone / "runs" / "demo" / "results.json").read_text())
    print(f"commit {head}; {os.cpu_count()} cores; load average before {load0[0]:.1f} / "
          f"{load0[1]:.1f} (1 / 5 min), after {load1[0]:.1f} / {load1[1]:.1f}\n")
    print("| step | wall s | peak RSS MB |")
    print("| --- | --- | --- |")
    print(f"| install (`pip install -e \".[demo]\"`, pip's cache warm) | {install['wall_s']:.0f} | "
          f"{install['max_rss_mb']:.0f} |")
    print(f"| demo (`speechmi demo --out runs/demo`, cold) | {demo['wall_s']:.0f} | {demo['max_rss_mb']:.0f} |")
    if again:
        print(f"| demo again (`speechmi demo --out runs/demo2`, the XLA cache as the first left it) | "
              f"{again['wall_s']:.0f} | {again['max_rss_mb']:.0f} |")
    print("\n" + "\n".join(split_table(res)))
    if again:
        print("\nThe second run:\n\n" + "\n".join(split_table(
            json.loads((clone / "runs" / "demo2" / "results.json").read_text()))))
        print("\nIts records against the first run's:\n\n" + run_compare(work, clone / "runs" / "demo2",
                                                                        clone / "runs" / "demo", env))
    if a.compare:
        print(f"\nThe (first) run's records against {a.compare}'s:\n\n"
              + run_compare(work, clone / "runs" / "demo", a.compare.resolve(), env))
    print(f"\nwork folder: {work}")


if __name__ == "__main__":
    main()
