"""Start-up time of `python app.py` on the tiny model, beside the floor `python -c "import gradio"`:
python -m bench.startup [--runs 5]

Each run is a fresh process (the OS file cache stays warm, as on any restart after the first),
timed side by side in one run of this script, interleaved so machine load hits every row alike:

- import gradio: `python -c "import gradio"` until the import is done (a time stamp it prints; not
  its exit, whose tear-down takes 0.3-0.6 s): nothing of ours can answer sooner;
- first HTTP 200: from starting `python app.py` until GET / answers 200 (the page, and REST with it);
- model ready: until GET /api/v1/apikey/models/<id> says status.state == "ready" (the tiny model
  loaded in the background, the worker running);
- --help: `python app.py --help` to its exit.

Prints the median of the runs and every run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-startup-key"
TIMEOUT_S = 300.0  # a start that takes longer is a failure, not a figure
POLL_S = 0.02
FLOOR = "import gradio, time; print(time.time())"  # the stamp is taken once the import is done


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str) -> tuple[int, bytes]:
    """(status, body) of GET http://127.0.0.1:port/path; (0, b"") while nothing listens."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {KEY}"})
        response = conn.getresponse()
        return response.status, response.read()
    except OSError:
        return 0, b""
    finally:
        conn.close()


def import_floor() -> float:
    """Seconds from starting `python -c "import gradio"` until the import has finished (a time stamp
    the process prints, same wall clock), without the interpreter's tear-down after it: the first
    HTTP 200 is timed to the answer, not to an exit, so the floor must be too."""
    start = time.time()
    out = subprocess.run([sys.executable, "-c", FLOOR], cwd=ROOT, check=True, capture_output=True, text=True)
    return float(out.stdout.split()[-1]) - start


def timed_exit(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def app_start(folder: Path, root: Path = ROOT, wait_ready: bool = True) -> tuple[float, float | None]:
    """Seconds from starting `python app.py` (in `root`) to the first 200 on /, and to the model
    being ready (None when not waited for: a checkout without the status field)."""
    from wan_demo.core.settings import API_MODEL_ID

    port = free_port()
    env = {**os.environ, "WAN_DEMO_MODEL": "tiny", "WAN_DEMO_DEVICE": "cpu", "WAN_DEMO_PORT": str(port),
           "WAN_DEMO_DATA_DIR": str(folder / "data"), "WAN_DEMO_OUTPUT_DIR": str(folder / "outputs"),
           "WAN_DEMO_API_KEYS": KEY, "WAN_DEMO_PROMPT_EXTENDER": "off"}  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    page = ready = None
    try:
        while (ready is None if wait_ready else page is None) and time.perf_counter() - start < TIMEOUT_S:
            if proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {proc.returncode} before it was ready")
            if page is None and get(port, "/")[0] == 200:
                page = time.perf_counter() - start
            if page is not None and wait_ready:
                status, body = get(port, f"/api/v1/apikey/models/{API_MODEL_ID}")
                if status == 200 and json.loads(body)["status"]["state"] == "ready":
                    ready = time.perf_counter() - start
            time.sleep(POLL_S)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if page is None or (wait_ready and ready is None):
        raise RuntimeError(f"app.py was not ready within {TIMEOUT_S:.0f} s")
    return page, ready


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline", type=Path, help="another checkout (e.g. main): its first HTTP 200 too")
    a = parser.parse_args()
    keys = ["import gradio", "first HTTP 200", "model ready", "--help"] + ["baseline"] * bool(a.baseline)
    rows: dict[str, list[float]] = {key: [] for key in keys}
    with tempfile.TemporaryDirectory(prefix="wan-startup-") as tmp:
        for i in range(a.runs):  # interleaved: a load spike hits every row alike
            rows["import gradio"].append(import_floor())
            page, ready = app_start(Path(tmp) / str(i))
            rows["first HTTP 200"].append(page)
            rows["model ready"].append(ready)
            rows["--help"].append(timed_exit([sys.executable, "app.py", "--help"]))
            if a.baseline:
                rows["baseline"].append(app_start(Path(tmp) / f"b{i}", a.baseline.resolve(), False)[0])
    floor = statistics.median(rows["import gradio"])
    cores = os.cpu_count()
    load = os.getloadavg()[1]  # 5-min average: a shared machine's runs are slower alike, ratios hold
    print(f"python app.py on the tiny model, {a.runs} fresh processes each, measured on CPU ({cores} cores,")
    print(f"machine load average {load:.1f} over the last 5 minutes)\n")
    print("| what | median s | x import gradio | runs s |")
    print("|---|---|---|---|")
    labels = {
        "import gradio": 'python -c "import gradio" (the floor)',
        "first HTTP 200": "python app.py: first HTTP 200 on / (page + REST)",
        "model ready": "python app.py: model ready (GET /models/{id} status ready)",
        "--help": "python app.py --help",
        "baseline": f"{a.baseline}/app.py: first HTTP 200 on /",
    }
    for key in keys:
        times = rows[key]
        median = statistics.median(times)
        each = ", ".join(f"{t:.2f}" for t in times)
        print(f"| {labels[key]} | {median:.2f} | {median / floor:.2f} | {each} |")


if __name__ == "__main__":
    main()
