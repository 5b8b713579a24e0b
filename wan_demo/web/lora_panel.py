"""The page's LoRA rows: pick up to MAX_LORAS LoRAs from the library (or add one by upload), a weight
slider each; and the wrappers that hand them to the page's handlers. Layout and wiring only: files
are found and checked by model/lora_library.py (through JobService.loras).

The rows are extra inputs of the page's own (private) events: Generate, New seed, Extend, the
validator, "copy as code"; restore fills them from the result's metadata. The public API keeps
/generate as it is and adds /generate_with_loras (web/api.py), whose last parameter is the list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from wan_demo.core.controls import LORA_SCALE, LORA_SCALE_DEFAULT, MAX_LORAS
from wan_demo.core.loras import SUFFIX, check_loras
from wan_demo.core.request import InvalidRequest
from wan_demo.jobs.service import JobService
from wan_demo.web import restore
from wan_demo.web.handlers import refusals
from wan_demo.web.history import History, owner_of

if TYPE_CHECKING:  # built through JobService.loras; it imports torch once it checks a file
    from wan_demo.model.lora_library import LoraLibrary

PRIVATE = {"api_visibility": "private"}


def choices(library: LoraLibrary) -> list[tuple[str, str]]:
    """(label, value) of every usable LoRA: library files by name, added ones by sha256."""
    usable = [(e.name, e.name) for e in library.listing() if not e.problem]
    return usable + [(f"{name} (added)", f"sha256:{sha}") for sha, name in library.cached()]


def table(library: LoraLibrary) -> str:
    """The library as a Markdown table: name, size, sha256, layout, rank, layers, notes or problem."""
    entries = library.listing()
    if not entries:
        return f"The library folder `{library.folder}` holds no .safetensors files yet."
    rows = ["| LoRA | MB | sha256 | layout | rank | layers | notes |", "|---|---|---|---|---|---|---|"]
    for e in entries:
        note = f"**refused**: {e.problem}" if e.problem else "; ".join(e.notes)
        cells = [e.name, f"{e.size / 1e6:.1f}", f"`{e.sha256[:12]}`", e.layout or "-", e.rank or "-"]
        rows.append("| " + " | ".join(map(str, [*cells, e.targets or "-", note.replace("|", "/")])) + " |")
    return "\n".join(rows)


def picks(values: tuple | list) -> list[dict]:
    """Interleaved (source, weight) widget values -> [{"path", "scale"}] for the rows in use."""
    pairs = zip(values[::2], values[1::2], strict=False)
    return [{"path": src, "scale": LORA_SCALE_DEFAULT if w is None else float(w)} for src, w in pairs if src]


@dataclass
class LoraRows:
    dropdowns: list[gr.Dropdown]
    sliders: list[gr.Slider]
    upload: gr.File
    refresh: gr.Button
    table: gr.Markdown

    @property
    def widgets(self) -> list:
        """Dropdown and weight of each row, interleaved: the order `picks` reads."""
        return [w for pair in zip(self.dropdowns, self.sliders, strict=True) for w in pair]


def build() -> LoraRows:
    """The rows, empty: each page load fills the choices and the table (`wire`), so building the page
    reads no LoRA file and imports no torch (the page answers before the model loads)."""
    with gr.Accordion("LoRAs: motion and effect LoRAs, up to 4 stacked", open=False, elem_id="loras"):
        dropdowns, sliders = [], []
        for i in range(MAX_LORAS):
            with gr.Row(equal_height=True):
                dropdowns.append(
                    # any value passes Gradio's own check: a tab whose server session is gone (a restart,
                    # another API node) still sends its pick; resolve_loras refuses unknown files by name
                    gr.Dropdown(
                        [],
                        value=None,
                        label=f"LoRA {i + 1}",
                        elem_id=f"lora-{i}",
                        scale=3,
                        allow_custom_value=True,
                    )
                )
                sliders.append(gr.Slider(LORA_SCALE.low, LORA_SCALE.high, value=LORA_SCALE_DEFAULT, step=0.05,
                                         label="Weight", elem_id=f"lora-scale-{i}", scale=2))  # fmt: skip
        upload = gr.File(
            label="Add a LoRA file (.safetensors; checked, then offered above)", file_types=[SUFFIX],
            type="filepath", elem_id="lora-upload", height=90,
        )  # fmt: skip
        refresh = gr.Button("Refresh the list", size="sm", elem_id="lora-refresh")
        listing = gr.Markdown("Reading the LoRA library ...", elem_id="lora-library")
    return LoraRows(dropdowns, sliders, upload, refresh, listing)


class LoraPanel:
    """Handlers of the LoRA rows (private events)."""

    def __init__(self, jobs: JobService):
        self.jobs, self.history = jobs, History(jobs)

    def refresh(self) -> list:
        options = choices(self.jobs.loras)
        return [*(gr.update(choices=options) for _ in range(MAX_LORAS)), table(self.jobs.loras)]

    def add(self, path: str | None, *rows: str | None) -> list:
        """An uploaded file, checked and kept: offered in every row and picked in the first free one."""
        if not path:
            return [gr.skip()] * (MAX_LORAS + 3)
        with refusals():
            added = self.jobs.loras.add_upload(Path(path), Path(path).name, "lora file")
        options, free = choices(self.jobs.loras), next((i for i, r in enumerate(rows) if not r), None)
        updates = [
            gr.update(choices=options, **({"value": added.source} if i == free else {}))
            for i in range(MAX_LORAS)
        ]
        where = f"in row {free + 1}" if free is not None else "in the lists (every row is in use)"
        return [
            *updates,
            table(self.jobs.loras),
            None,
            f"Added {added.name} ({added.layout} layout) {where}.",
        ]

    def restored(self, loras: tuple[tuple[str, str, float], ...]) -> list:
        """Rows showing what ran: the library file with that content, else the added copy."""
        library, options = self.jobs.loras, choices(self.jobs.loras)
        by_sha = {e.sha256: e.name for e in library.listing() if not e.problem}
        held = {sha for sha, _ in library.cached()}
        values = []
        for i in range(MAX_LORAS):
            sha, _, scale = loras[i] if i < len(loras) else ("", "", LORA_SCALE_DEFAULT)
            value = by_sha.get(sha) or (f"sha256:{sha}" if sha in held else None)
            values += [gr.update(choices=options, value=value), scale]
        return values

    def restore_job(self, token: Any, view: Any, profile: gr.OAuthProfile | None = None) -> list:
        job = self.history.find(view.job_id, owner_of(token, profile))
        if job is None:
            return [gr.skip()] * (2 * MAX_LORAS)
        try:
            return self.restored(restore.from_job(job, self.jobs.storage.read_bytes).loras)
        except restore.NoSettings:
            return [gr.skip()] * (2 * MAX_LORAS)

    def restore_file(self, path: str | None) -> list:
        try:
            ran = restore.from_file(path, self.jobs.settings.max_file_size_mb * 2**20) if path else None
        except restore.NoSettings:
            ran = None
        return self.restored(ran.loras) if ran else [gr.skip()] * (2 * MAX_LORAS)


def with_loras(handler: Callable, n_form: int) -> Callable:
    """A page handler (token, view, *form, profile=, loras=) fed the form and then the LoRA rows."""

    def run(profile: gr.OAuthProfile | None, token: Any, view: Any, *values: Any):
        return handler(token, view, *values[:n_form], profile=profile, loras=picks(values[n_form:]))

    return run


def check_with_loras(check: Callable, n_form: int) -> Callable:
    """The page validator with one verdict per LoRA widget too (a bad row is named on its dropdown)."""

    def run(token: Any, view: Any, *values: Any) -> list[dict]:
        verdicts = [gr.validate(True, "") for _ in values[n_form:]]
        rows = [i for i, src in enumerate(values[n_form::2]) if src]
        try:
            check_loras(picks(values[n_form:]))
        except InvalidRequest as e:
            index = int(e.field[6:-1]) if e.field.startswith("loras[") else 0
            verdicts[2 * rows[min(index, len(rows) - 1)] if rows else 0] = gr.validate(False, e.rule)
        return [*check(token, view, *values[:n_form]), *verdicts]

    return run


def check_api_inputs(check: Callable) -> Callable:
    """/generate_with_loras' validator: /generate's verdicts, then one for the list of LoRAs."""

    def run(*values: Any) -> list[dict]:
        try:
            check_loras(values[-1])
            verdict = gr.validate(True, "")
        except InvalidRequest as e:
            verdict = gr.validate(False, str(e))
        return [*check(*values[:-1]), verdict]

    return run


def code_with_loras(code: Callable, n_form: int) -> Callable:
    def run(request: gr.Request, *values: Any) -> tuple[str, str, str]:
        return code(*values[:n_form], request=request, loras=picks(values[n_form:]))

    return run


def wire(panel: LoraPanel, rows: LoraRows, memory, demo: gr.Blocks) -> None:
    """Refresh (also at every page load: files added at run time appear), upload, and restore (beside
    the form's own restore handlers, which do not know the rows)."""
    outputs = [*rows.dropdowns, rows.table]
    rows.refresh.click(panel.refresh, None, outputs, queue=False, **PRIVATE)
    demo.load(panel.refresh, None, outputs, queue=False, **PRIVATE)  # not behind a full queue
    added = [*outputs, rows.upload, memory.message]
    rows.upload.upload(panel.add, [rows.upload, *rows.dropdowns], added, **PRIVATE)
    memory.buttons["restore"].click(panel.restore_job, [memory.token, memory.view], rows.widgets, **PRIVATE)
    memory.restore_file.upload(panel.restore_file, [memory.restore_file], rows.widgets, **PRIVATE)
