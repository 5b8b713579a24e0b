"""REST job API with the hosted provider's contract (placeholder until the REST issue lands)."""

from __future__ import annotations

from wan_demo.jobs import Worker
from wan_demo.settings import Settings


def attach(app, worker: Worker, settings: Settings) -> None:
    """Add the /api/v1/apikey/* routes to the running FastAPI app."""
