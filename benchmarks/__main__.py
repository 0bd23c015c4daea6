"""``python -m benchmarks [w1 w2 w3 w4] [--quick|--full] [--out DIR]``: run the workloads, print the
figures, write JSON and PNG plots. Quick mode finishes in a few minutes on a 2-core machine.
``python -m benchmarks soak --minutes 3``: the bounded soak (memory flat, errors counted); never part of
the default set.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ._common import Progress, machine

QUICK_W1 = {"lats": [0.1, 1.0], "cs": [16, 256], "total_factor": 2, "skip": [(1.0, 16)]}
FULL_W1 = {"lats": [0.1, 1.0], "cs": [16, 64, 256], "total_factor": 10}


def _steps(names: list[str], quick: bool, impls: list[str], minutes: float = 0.0) -> int:
    grid = QUICK_W1 if quick else FULL_W1
    steps = 0
    if "w1" in names:
        points = len(grid["lats"]) * len(grid["cs"]) - len(grid.get("skip", []))  # type: ignore[arg-type]
        steps += points * len(impls)
    if "w2" in names:
        steps += 5
    if "w3" in names:
        from .w3 import steps_w3

        steps += steps_w3(quick)
    if "w4" in names:
        from .w4 import steps_w4

        steps += steps_w4(quick)
    if "soak" in names:
        steps += 2 + int(minutes * 60 // 15)
    return steps


def _targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each workload's targets as [{target, value, met}] (W3/W4 report one flat mapping)."""
    raw = result.get("targets", [])
    if isinstance(raw, dict):
        detail = {k: v for k, v in raw.items() if k != "met"}
        return [
            {
                "target": f"{result.get('workload', '')} {detail}",
                "value": raw.get("met"),
                "met": bool(raw.get("met")),
            }
        ]
    return list(raw)


def merge_report(path: Path, report: dict[str, Any]) -> dict[str, Any]:
    """``report`` over what ``path`` already holds: a run of some workloads keeps the others' results.

    Each workload's result carries the machine/commit/date it was measured on (``measured``), so a merged
    file never passes older figures off as this run's.
    """
    for result in report["results"].values():
        result["measured"] = report["machine"]
    try:
        previous = json.loads(path.read_text())
        kept = {k: v for k, v in previous.get("results", {}).items() if k not in report["results"]}
        for result in kept.values():  # files from before per-workload stamps: stamp with their run
            result.setdefault("measured", previous.get("machine"))
    except (OSError, ValueError, AttributeError):
        kept = {}  # no file, or not ours: start afresh
    return {**report, "results": dict(sorted({**kept, **report["results"]}.items()))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "workloads", nargs="*", metavar="{w1,w2,w3,w4,soak}", help="which workloads (default: w1-w4)"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", default=True, help="small grid, < 2 min (default)")
    mode.add_argument("--full", action="store_true", help="the whole grid of benchmarks.md")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--no-autogen", action="store_true", help="skip the autogen-core baseline of W1")
    parser.add_argument("--minutes", type=float, default=3.0, help="length of the soak (default 3)")
    args = parser.parse_args(argv)
    quick = not args.full
    impls = ["orchestra", "asyncio"] + ([] if args.no_autogen else ["autogen"])
    names = list(dict.fromkeys(args.workloads or ["w1", "w2", "w3", "w4"]))
    unknown = [n for n in names if n not in ("w1", "w2", "w3", "w4", "soak")]
    if unknown:  # checked here: argparse's choices reject an empty nargs="*" list on Python 3.11
        parser.error(f"unknown workload(s) {unknown}; choose from w1 w2 w3 w4 soak")
    progress = Progress(_steps(names, quick, impls, args.minutes), "benchmarks")
    report: dict[str, Any] = {"machine": machine(), "mode": "quick" if quick else "full", "results": {}}
    plots: list[Path] = []
    started = time.perf_counter()
    try:
        if "w1" in names:
            from .w1 import plot_w1, run_w1

            grid = QUICK_W1 if quick else FULL_W1
            result = run_w1(impls=impls, progress=progress, **grid)  # type: ignore[arg-type]
            report["results"]["w1"] = result
            plots += plot_w1(result, args.out)
            for r in result["ratios"]:
                progress.write(
                    f"W1 LAT={r['lat']:g} C={r['c']}: efficiency {r['efficiency']:.3f}"
                    + "".join(f", x{r[k]:.2f} {k[3:]}" for k in ("vs_asyncio", "vs_autogen") if k in r)
                )
        if "w2" in names:
            from .w2 import plot_w2, run_w2

            result = run_w2(quick, progress)
            report["results"]["w2"] = result
            plots += plot_w2(result, args.out)
            for row in result["layers"]:
                progress.write(
                    f"W2 {row['layer']:14} p50 {row['p50_us']:9.1f} µs  (+{row['overhead_p50_us']:.1f})"
                )
        if "w3" in names:
            from .w3 import plot_w3, run_w3

            result = run_w3(quick, progress)
            report["results"]["w3"] = result
            plots += plot_w3(result, args.out)
        if "w4" in names:
            from .w4 import plot_w4, run_w4

            result = run_w4(quick, progress)
            report["results"]["w4"] = result
            plots += plot_w4(result, args.out)
        if "soak" in names:
            from .soak import plot_soak, run_soak, summary_line

            result = run_soak(args.minutes, progress)
            report["results"]["soak"] = result
            plots += plot_soak(result, args.out)
            progress.write(summary_line(result))
    finally:
        progress.close()
    report["elapsed_s"] = round(time.perf_counter() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"results-{report['mode']}.json"
    path.write_text(json.dumps(merge_report(path, report), indent=2))
    targets = [t for r in report["results"].values() for t in _targets(r)]
    print("\ntargets:")
    for t in targets:
        print(f"  {'MET ' if t['met'] else 'MISS'} {t['target']}: {t['value']}")
    print(f"\nwrote {path} and {', '.join(str(p) for p in plots)} in {report['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
