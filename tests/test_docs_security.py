"""docs/security.md stays true: its Python block runs, and the numbers it states are the code's."""

import re
from pathlib import Path

from wan_demo.jobs import cleanup
from wan_demo.rest import netguard, ratelimit

DOC = (Path(__file__).resolve().parents[1] / "docs" / "security.md").read_text()


def test_the_python_block_runs():
    blocks = re.findall(r"```python\n(.*?)```", DOC, flags=re.S)
    assert len(blocks) == 1
    exec(compile(blocks[0], "docs/security.md", "exec"), {})  # noqa: S102 - our own document


def test_the_stated_limits_are_the_code_s():
    assert f"at most {netguard.MAX_URL_CHARS} characters" in DOC
    assert f"**{ratelimit.REFUSED_FACTOR} times larger**" in DOC
    assert f"at most {cleanup.SWEEP_BATCH} items" in DOC
    assert f"the first run comes {cleanup.FIRST_RUN_S:g} s after start" in DOC
    assert cleanup.SWEEP_MAX_S == 600 and "at least every 10 minutes" in DOC
