"""How long the command line takes to answer when nothing is served: `--help` and a bad setting.

    python -m bench.cli [--repeats 5] [--floor]

Each row is the median wall time of fresh `python` processes, run alternately in this one run,
next to `python -c pass` (the interpreter's own start-up). Goal (issue 26): `--help` under 1.5 s.
`--floor` adds `import wan_demo.server` (torch, diffusers, gradio: what `--help` waited for
before the settings were read first), with fewer repeats: it takes seconds.
Figures are measured on this machine's CPU; a shared machine adds noise, so compare ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS = {
    "python -c pass": ["-c", "pass"],
    "python app.py --help": ["app.py", "--help"],
    "python app.py --port abc (exit 2)": ["app.py", "--port", "abc"],
    "python app.py --memory-mode bogus (exit 2)": ["app.py", "--memory-mode", "bogus"],
}
FLOOR = {"python -c 'import wan_demo.server'": ["-c", "import wan_demo.server"]}


def run_once(args: list[str]) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAN_DEMO_")}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, check=False)
    return time.perf_counter() - t0


def medians(rows: dict[str, list[str]], repeats: int) -> dict[str, float]:
    """Alternate the rows (1, 2, 3, 1, 2, 3, ...) so load on a shared machine hits each alike."""
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(repeats):
        for name, args in rows.items():
            times[name].append(run_once(args))
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--floor", action="store_true", help="also time importing the server (slow)")
    args = parser.parse_args()
    result = medians(ROWS, args.repeats)
    if args.floor:
        result.update(medians(FLOOR, max(1, args.repeats // 2)))
    base = result["python -c pass"]
    print(f"Command-line answer times, median of {args.repeats} fresh processes (measured on CPU)")
    print(f"{'command':<46}{'seconds':>9}{'x pass':>8}")
    for name, seconds in result.items():
        note = "   (goal < 1.5 s)" if name.endswith("--help") else ""
        print(f"{name:<46}{seconds:>9.3f}{seconds / base:>8.1f}{note}")


if __name__ == "__main__":
    main()
