"""docs/controls.md stays true: its Python example runs, its numbers are the code's."""

from __future__ import annotations

import re
from pathlib import Path

from wan_demo.core.controls import CONTROLS, NAG_DEFAULTS, NUM_VIDEOS
from wan_demo.core.validate import END_FRAME_ASPECT_TOLERANCE
from wan_demo.media.interpolate import METHOD

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "controls.md").read_text()


def test_python_example_runs(tmp_path, monkeypatch):
    """The block with one substitution: a 64x64 budget and 2 steps, to stay fast."""
    code = re.findall(r"```python\n(.*?)```", DOC, flags=re.S)[0]
    assert 'Settings(model="tiny")' in code
    code = code.replace('Settings(model="tiny")', 'Settings(model="tiny", tiny_max_area=64 * 64, steps=2)')
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    namespace: dict = {}
    exec(compile(code, "docs/controls.md", "exec"), namespace)  # noqa: S102 - our own docs
    results = namespace["results"]
    assert [(r.num_frames, r.fps, r.seed_used) for r in results] == [(161, 32, 1000), (161, 32, 1001)]
    assert all(r.settings["end_frame"] and r.video_path.exists() for r in results)


def test_the_table_states_the_code_s_ranges_and_defaults():
    text = " ".join(DOC.split())
    scale, tau, alpha = NAG_DEFAULTS
    assert f"scale {scale:g}, tau {tau:g}, alpha {alpha:g}" in text
    for name in ("nag_scale", "nag_tau", "nag_alpha"):
        c = CONTROLS[name]
        assert f"| `{name}` | `{name}` | {c.low:g} - {c.high:g} |" in text
    assert f"| {NUM_VIDEOS.low} - {NUM_VIDEOS.high} | 1 |" in text
    assert f"within {END_FRAME_ASPECT_TOLERANCE:.0%}".replace("%", " %") in text
    assert "`mi_mode=mci`" in text and "mi_mode=mci" in METHOD
