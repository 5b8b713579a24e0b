"""Where community LoRA files come from: the library folder, the hub, an https URL, an upload.

- The library is Settings.lora_dir: every `*.safetensors` in it is listed (name, size, sha256, the
  trainer layout it was recognised as, or why it cannot be used), read on every listing, so files
  added at run time appear without a restart. Digests and verdicts are kept per (size, mtime).
- Hub files, URL files (fetched by the REST layer under its URL rules, rest/inputs.py) and uploads go
  to the cache (model/lora_cache.py), by content, once checked.
- `resolve(choice)` finds and checks the file of a request's LoRA (model/lora_files.py) and fills in
  its name, sha256 and layout; `path_of` gives a resolved choice's local file at run time. Errors are
  InvalidRequest naming the entry (`loras[i]`), the file and the reason.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from wan_demo.core.loras import SUFFIX, source_kind
from wan_demo.core.request import InvalidRequest, LoraChoice
from wan_demo.core.settings import Settings
from wan_demo.model.lora_cache import LoraCache, sha256_file
from wan_demo.model.lora_verdict import LoraFileError, LoraInfo

Fetch = Callable[[str, BinaryIO], None]  # (https URL, file to write into): the REST layer's fetcher
Config = dict | Callable[[], dict]  # the served transformer's config, or how to get it when needed


@dataclass(frozen=True)
class Entry:
    """One library file as the UI and the docs list it."""

    name: str
    size: int  # bytes
    sha256: str
    layout: str = ""  # "" when the file cannot be used (see problem)
    targets: int = 0  # model layers it changes
    rank: int = 0
    notes: tuple[str, ...] = ()
    problem: str = ""  # why it is refused ("" = usable)


class LoraLibrary:
    def __init__(self, settings: Settings, config: Config | None = None):
        """`config`: the served transformer's config (or a function giving it; the check needs it)."""
        self.settings, self._config = settings, config
        self.folder = Path(settings.lora_dir)
        self.cache = LoraCache.of(settings)
        self.max_bytes = settings.lora_max_mb * 2**20
        self._digests: dict[Path, tuple[int, int, str]] = {}  # path -> (size, mtime_ns, sha256)
        self._verdicts: dict[str, LoraInfo | LoraFileError] = {}  # sha256 -> inspect() result

    def shapes(self) -> dict[str, tuple[int, int]]:
        if callable(self._config):
            self._config = self._config()
        if self._config is None:
            raise RuntimeError("this LoRA library was built without the model's config")
        from wan_demo.model.lora_files import linear_shapes  # torch: only once a file is checked

        return linear_shapes(self._config)

    # -- the library folder
    def listing(self) -> list[Entry]:
        """Every *.safetensors in the library folder, by name (none when the folder does not exist)."""
        return [self._entry(p) for p in self._files()]

    def _files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if p.suffix == SUFFIX and p.is_file())

    def _entry(self, path: Path) -> Entry:
        sha = self.digest(path)
        verdict, size = self.verdict(path, sha), path.stat().st_size
        if isinstance(verdict, LoraFileError):
            return Entry(path.name, size, sha, problem=verdict.problem)
        return Entry(path.name, size, sha, verdict.layout, verdict.targets, verdict.rank, verdict.notes)

    def digest(self, path: Path) -> str:
        stat = path.stat()
        known = self._digests.get(path)
        if known is None or known[:2] != (stat.st_size, stat.st_mtime_ns):
            known = (stat.st_size, stat.st_mtime_ns, sha256_file(path))
            self._digests[path] = known
        return known[2]

    def verdict(self, path: Path, sha: str) -> LoraInfo | LoraFileError:
        from wan_demo.model.lora_files import inspect  # torch: listing and sweeping need none

        if sha not in self._verdicts:
            try:
                self._verdicts[sha] = inspect(path, self.shapes())
            except LoraFileError as e:
                self._verdicts[sha] = e
            except OSError as e:
                return LoraFileError(f"cannot be read ({e.__class__.__name__})")
        return self._verdicts[sha]

    # -- a request's LoRA -> a checked local file
    def resolve(self, choice: LoraChoice, index: int, fetch: Fetch | None = None) -> LoraChoice:
        """`choice` with name, sha256 and layout of its checked file; InvalidRequest otherwise."""
        field, kind = f"loras[{index}]", source_kind(choice.source)
        if kind == "library":
            path, name = self._library_file(choice.source, field), _library_name(choice.source)
        elif kind == "cache":
            sha = choice.source.removeprefix("sha256:")
            path, name = self.cache.path(sha), self.cache.name(sha)
            if not path.is_file():
                raise InvalidRequest(field, f"no file with sha256 {sha[:12]}... is held here; add it again")
        else:
            path, name = self._fetched(choice.source, field, kind, fetch)
        sha = self.digest(path)
        verdict = self.verdict(path, sha)
        if isinstance(verdict, LoraFileError):
            raise InvalidRequest(field, f"{name!r} {verdict.problem}")
        self.cache.touch(path)
        return replace(choice, name=name, sha256=sha, layout=verdict.layout)

    def resolve_all(
        self, choices: tuple[LoraChoice, ...], fetch: Fetch | None = None
    ) -> tuple[LoraChoice, ...]:
        """Every choice resolved (already resolved ones kept); one file given twice is refused."""
        out = tuple(c if c.sha256 else self.resolve(c, i, fetch) for i, c in enumerate(choices))
        for i, choice in enumerate(out):
            first = next(j for j, c in enumerate(out) if c.sha256 == choice.sha256)
            if first != i:
                rule = f"{choice.name!r} is the same file as loras[{first}]; give it once with its scale"
                raise InvalidRequest(f"loras[{i}]", rule)
        return out

    def path_of(self, choice: LoraChoice, index: int = 0) -> Path:
        """The local file of a resolved choice: the library file while it still has that content, else
        the cached copy; a hub source is fetched again when both are gone."""
        kind = source_kind(choice.source)
        candidates = [self.folder / _library_name(choice.source)] if kind == "library" else []
        for path in [*candidates, self.cache.path(choice.sha256)]:
            if path.is_file() and self.digest(path) == choice.sha256:
                self.cache.touch(path)
                return path
        if kind == "hub":
            return self.path_of(self.resolve(replace(choice, sha256=""), index), index)
        gone = f"{choice.name or choice.source!r} (sha256 {choice.sha256[:12]}) is no longer available"
        raise InvalidRequest(f"loras[{index}]", f"{gone}: it left the library or the cache; send it again")

    def _library_file(self, source: str, field: str) -> Path:
        path = self.folder / _library_name(source)
        if not path.is_file():
            names = [p.name for p in self._files()]
            known = f"it holds {', '.join(names[:8])}" if names else "the library is empty"
            raise InvalidRequest(field, f"{source!r} is not in the LoRA library ({known})")
        return path

    def _fetched(self, source: str, field: str, kind: str, fetch: Fetch | None) -> tuple[Path, str]:
        """A hub or URL file: the cached copy when this source was fetched before, else fetched now
        into a part file, checked, and only then kept under its digest."""
        name = source.rsplit("/", 1)[-1].split("?")[0] or "download"
        known = self.cache.by_source(source)
        if known is not None:
            return known, self.cache.name(known.stem, name)
        if kind == "url" and fetch is None:
            raise InvalidRequest(
                field, "https URLs are accepted through the REST API only; add the file instead"
            )
        part = self.cache.part()
        try:
            if kind == "url":
                with part.open("wb") as sink:
                    try:
                        fetch(source, sink)  # the REST URL rules: SSRF guard, size and time caps
                    except InvalidRequest as e:
                        raise InvalidRequest(field, f"{name!r}: {e.rule}") from None
            else:
                self._hub(source, part, field)
            return self.keep(part, name, field, source), name
        finally:
            part.unlink(missing_ok=True)

    def _hub(self, source: str, part: Path, field: str) -> None:
        from huggingface_hub import hf_hub_download

        parts = source.split("/")
        repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
        try:
            local = hf_hub_download(repo, filename, local_files_only=self.settings.offline,
                                    etag_timeout=self.settings.lora_fetch_timeout_s)  # fmt: skip
        except Exception as e:  # hub errors come in many classes; all mean "cannot get the file"
            why = f"{e.__class__.__name__}: {str(e)[:120]}"
            raise InvalidRequest(field, f"{source!r}: cannot get it from the hub ({why})") from None
        self._check_size(Path(local), source, field)
        shutil.copyfile(local, part)

    def _check_size(self, path: Path, name: str, field: str) -> None:
        if path.stat().st_size > self.max_bytes:
            raise InvalidRequest(
                field, f"{name!r} is over the {self.settings.lora_max_mb} MB limit for a LoRA"
            )

    def keep(self, part: Path, name: str, field: str, source: str = "") -> Path:
        """Check a new file and keep it in the cache under its digest; a refused file is not kept
        (the caller removes the part file)."""
        self._check_size(part, name, field)
        sha = sha256_file(part)
        verdict = self.verdict(part, sha)
        if isinstance(verdict, LoraFileError):
            raise InvalidRequest(field, f"{name!r} {verdict.problem}")
        return self.cache.keep(part, sha, name, source)

    def add_upload(self, upload: Path, name: str, field: str = "loras") -> LoraChoice:
        """An uploaded file (the UI's): checked and cached; returns a choice naming it by digest."""
        self._check_size(upload, name, field)
        part = self.cache.part()
        try:
            shutil.copyfile(upload, part)
            sha = self.keep(part, name, field).stem
        finally:
            part.unlink(missing_ok=True)
        return LoraChoice(f"sha256:{sha}", 1.0, self.cache.name(sha, name), sha, self._verdicts[sha].layout)

    def cached(self) -> list[tuple[str, str]]:
        return self.cache.listing()

    def sweep(self, now: float | None = None) -> int:
        return self.cache.sweep(now)


def _library_name(source: str) -> str:
    return source if source.endswith(SUFFIX) else source + SUFFIX
