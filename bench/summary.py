#!/usr/bin/env python3
"""Summarises the hyperfine JSON exports of bench/cache-hit.sh as a markdown report.

Usage: summary.py RESULTS_DIR   (reads roundN-{small,heavy,link}.json, prints markdown)
"""

import json
import pathlib
import re
import sys


def load(results: pathlib.Path):
    """{round: {group: {command name: result}}} from the exports."""
    rounds = {}
    for path in sorted(results.glob("round*-*.json")):
        m = re.fullmatch(r"round(\d+)-(\w+)\.json", path.name)
        if not m:
            continue
        data = json.loads(path.read_text())
        rounds.setdefault(int(m[1]), {})[m[2]] = {r["command"]: r for r in data["results"]}
    return rounds


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}" if seconds < 1 else f"{seconds * 1000:.0f}"


def main() -> int:
    results = pathlib.Path(sys.argv[1])
    rounds = load(results)
    if not rounds:
        print(f"no results in {results}", file=sys.stderr)
        return 1
    out = []
    out.append("## Medians (ms; ± is the standard deviation)\n")
    out.append("| round | file | plain compile | ccache preprocessor hit | ccache direct hit | meshcc hit |")
    out.append("|---|---|---|---|---|---|")
    for r, groups in sorted(rounds.items()):
        for f in ("small", "heavy"):
            g = groups.get(f)
            if not g:
                continue
            cells = [
                f"{ms(g[c]['median'])} ± {ms(g[c]['stddev'])}"
                for c in ("plain", "ccache_pp", "ccache_direct", "meshcc")
            ]
            out.append(f"| {r} | {f} | " + " | ".join(cells) + " |")
    out.append("")
    out.append("## Ratios of medians\n")
    out.append("| round | file | meshcc hit / ccache preprocessor hit (target ≤ 1.0) "
               "| meshcc hit / plain compile | meshcc hit / ccache direct hit |")
    out.append("|---|---|---|---|---|")
    for r, groups in sorted(rounds.items()):
        for f in ("small", "heavy"):
            g = groups.get(f)
            if not g:
                continue
            mesh = g["meshcc"]["median"]
            out.append(
                f"| {r} | {f} | {mesh / g['ccache_pp']['median']:.2f} "
                f"| {mesh / g['plain']['median']:.3f} | {mesh / g['ccache_direct']['median']:.2f} |"
            )
    out.append("")
    out.append("## Link step (`gcc a.o b.o -o prog`, exec'd straight through by meshcc)\n")
    out.append("| round | gcc (ms) | meshcc gcc (ms) | overhead, medians (ms; target < 2) "
               "| overhead, means (ms) |")
    out.append("|---|---|---|---|---|")
    for r, groups in sorted(rounds.items()):
        g = groups.get("link")
        if not g:
            continue
        p, m = g["plain"], g["meshcc"]
        out.append(
            f"| {r} | {ms(p['median'])} ± {ms(p['stddev'])} | {ms(m['median'])} ± {ms(m['stddev'])} "
            f"| {(m['median'] - p['median']) * 1000:+.2f} | {(m['mean'] - p['mean']) * 1000:+.2f} |"
        )
    out.append("")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
