"""Process memory per pipeline phase, for bench/rehearsal.py: a thread reads RssAnon and RssFile from
/proc/self/status every 5 ms and keeps, per phase, the peaks and the value the phase ended with.

Phases are set by wrapping the app's loaders (transformer file, text encoder, pipeline components,
plan application) and by forward pre-hooks on the pipeline's components (text encode, CLIP, VAE
encode, denoise, VAE decode): instrumentation only, the code under test runs unchanged.
"""

from __future__ import annotations

import functools
import threading
import time

GB = 1e9


def read_rss() -> tuple[int, int]:
    """(anonymous, file-backed) resident bytes of this process."""
    anon = file = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                anon = int(line.split()[1]) * 1024
            elif line.startswith("RssFile:"):
                file = int(line.split()[1]) * 1024
    return anon, file


class PhaseRss:
    def __init__(self, every_s: float = 0.005):
        self.every_s, self.current, self.stats = every_s, "", {}
        self._stop, self._lock = threading.Event(), threading.Lock()

    def start(self, phase: str) -> PhaseRss:
        self.phase(phase)
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def phase(self, name: str) -> None:
        with self._lock:
            self._sample()
            self.current = name
            self._sample()

    def now(self) -> dict:
        anon, file = read_rss()
        return {"anon_gb": round(anon / GB, 3), "file_gb": round(file / GB, 3)}

    def _sample(self) -> None:
        anon, file = read_rss()
        s = self.stats.setdefault(self.current, {"peak_anon": 0, "peak_file": 0, "peak_total": 0})
        s["peak_anon"], s["peak_file"] = max(s["peak_anon"], anon), max(s["peak_file"], file)
        s["peak_total"] = max(s["peak_total"], anon + file)
        s["end_anon"], s["end_file"] = anon, file

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            with self._lock:
                self._sample()

    def stop(self) -> None:
        self._stop.set()

    def report(self) -> dict:
        return {p: {k: round(v / GB, 3) for k, v in s.items()} for p, s in self.stats.items()}

    def watch(self, pipe) -> None:
        """Forward pre-hooks: the phase follows the component that runs."""
        for name, module in (("image", pipe.image_encoder), ("vae_encode", pipe.vae.encoder),
                             ("denoise", pipe.transformer), ("decode", pipe.vae.decoder)):  # fmt: skip
            module.register_forward_pre_hook(lambda *_a, n=name: self.phase(n))


def instrument(rss: PhaseRss) -> None:
    """Phase markers around the app's loaders and the prompt encoder (the functions run unchanged)."""
    import diffusers

    from wan_demo.model import load, text_encoder
    from wan_demo.model.memory import apply
    from wan_demo.model.text_cache import PromptEmbeddings

    def mark(owner, attr: str, phase: str, only_while_loading: bool = False) -> None:
        inner = getattr(owner, attr)

        @functools.wraps(inner)
        def wrapper(*args, **kwargs):
            if not only_while_loading or rss.current.startswith("load"):
                rss.phase(phase)
            return inner(*args, **kwargs)

        setattr(owner, attr, wrapper)

    mark(load, "load_transformer_file", "load transformer")
    mark(text_encoder, "load_text_encoder", "load text encoder", only_while_loading=True)
    pipeline = diffusers.WanImageToVideoPipeline
    original = pipeline.from_pretrained.__func__

    def from_pretrained(cls, *args, **kwargs):
        rss.phase("load image encoder, vae")
        return original(cls, *args, **kwargs)

    pipeline.from_pretrained = classmethod(from_pretrained)
    mark(apply, "apply_plan", "apply")
    get = PromptEmbeddings.get

    def encode(self, *args, **kwargs):
        rss.phase("encode")
        return get(self, *args, **kwargs)

    PromptEmbeddings.get = encode
    time.sleep(0)
