"""The job service's LoRA library: the one that checks LoRA files of submitted requests against the
served transformer (model/lora_library.py), and the resolving of a request's LoRAs before it queues.
The library is imported when first used, and imports torch only once it checks a file against the
model (model/lora_files.py): the web server starts, and a page lists an empty LoRA folder, without it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

from wan_demo.core.plan import EngineInfo
from wan_demo.core.request import ValidRequest
from wan_demo.core.settings import Settings

if TYPE_CHECKING:
    from wan_demo.model.lora_library import Fetch, LoraLibrary


class LoraRequests:
    """Mixed into JobService: needs `settings`, `engine_info` and `_loras` (None until first used)."""

    settings: Settings
    engine_info: Callable[[], EngineInfo]
    _loras: LoraLibrary | None

    @property
    def loras(self) -> LoraLibrary:
        """The LoRA library and cache (model/lora_library.py); built from Settings on an API node."""
        if self._loras is None:  # the served model: the tiny one when the engine info says so
            from wan_demo.model.engine import transformer_config
            from wan_demo.model.lora_library import LoraLibrary

            self._loras = LoraLibrary(
                self.settings, lambda: transformer_config(self.settings, self.engine_info().is_tiny)
            )
        return self._loras

    @loras.setter
    def loras(self, library: LoraLibrary) -> None:
        self._loras = library

    def resolve_loras(self, request: ValidRequest, fetch: Fetch | None = None) -> ValidRequest:
        """The request with each LoRA's file found and checked (name, sha256, layout filled); a refused
        file raises InvalidRequest naming it and is not kept. `fetch` downloads https URLs (REST)."""
        if all(lora.sha256 for lora in request.loras):
            return request
        return dataclasses.replace(request, loras=self.loras.resolve_all(request.loras, fetch))
