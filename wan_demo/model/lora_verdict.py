"""What checking a LoRA file concludes (model/lora_files.py checks): plain types, no torch, so the
library (model/lora_library.py) can be built, list an empty folder and hold verdicts on a process that
has not imported torch (an API node, a page visit)."""

from __future__ import annotations

from dataclasses import dataclass


class LoraFileError(ValueError):
    """A file that is not a usable LoRA for this model; `problem` says why (the caller names the file)."""

    def __init__(self, problem: str):
        super().__init__(problem)
        self.problem = problem


@dataclass(frozen=True)
class LoraInfo:
    layout: str  # "wan" | "musubi" | "diffusers"
    targets: int  # model layers it changes
    rank: int  # the largest rank among them
    t2v: bool  # no image cross-attention keys: diffusers adds zero add_k/add_v adapters (a T2V LoRA)
    notes: tuple[str, ...] = ()  # what is not applied, and why
