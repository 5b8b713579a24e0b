"""Community LoRAs on the tiny model: every key layout diffusers' Wan conversion handles gives every
targeted layer W + scale * (alpha / rank) * B @ A (bias + scale * diff_b; the `.diff` rule for full
deltas), the files are checked before anything is stored, sets switch without reloading, the warm
adapters stay within their byte budget, and the memory planner counts that budget.

The files come from bench/lora_files.py (one writer per published layout); the expected deltas are
computed there from the tensors written, never through diffusers.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from bench import lora_files as writers
from wan_demo.core.request import InvalidRequest, LoraChoice
from wan_demo.core.settings import Settings
from wan_demo.model.lora_library import LoraLibrary
from wan_demo.model.loras import LoraState, memory_terms
from wan_demo.model.tiny import build_tiny_pipeline

SCALE = 0.7


@pytest.fixture(scope="module")
def base():
    """The tiny transformer every file is written for (fp32, so effective weights compare tightly)."""
    return build_tiny_pipeline().transformer


def layouts(transformer, folder: Path) -> dict[str, writers.LoraFile]:
    """One file per published layout (label -> file); the label's first word is the layout we report."""
    return {
        "wan, alpha": writers.write_wan(transformer, folder / "wan_alpha.safetensors", alpha=2.0),
        "wan, lora_A/B, no alpha, every family": writers.write_wan(
            transformer, folder / "wan_ab.safetensors", alpha=None, names=("lora_A", "lora_B"), extras=True
        ),
        "wan lightx2v (published keys)": writers.write_lightx2v(transformer, folder / "lightx2v.safetensors"),
        "wan .diff": writers.write_wan_diff(transformer, folder / "wan_diff.safetensors"),
        "wan T2V (no image attention)": writers.write_wan(
            transformer, folder / "t2v.safetensors", image_attn=False
        ),
        "musubi, alpha": writers.write_musubi(transformer, folder / "musubi.safetensors", alpha=8.0),
        "musubi (kohya), no alpha": writers.write_musubi(
            transformer, folder / "kohya.safetensors", alpha=None
        ),
        "diffusers, bias": writers.write_diffusers(transformer, folder / "diffusers.safetensors", bias=True),
    }


LABELS = [
    "wan, alpha", "wan, lora_A/B, no alpha, every family", "wan lightx2v (published keys)", "wan .diff",
    "wan T2V (no image attention)", "musubi, alpha", "musubi (kohya), no alpha", "diffusers, bias",
]  # fmt: skip


def effective(layer: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) a linear layer applies, read from its outputs: x = [I; 0] gives rows W^T + b, then b."""
    probe = torch.cat([torch.eye(layer.in_features), torch.zeros(1, layer.in_features)])
    with torch.no_grad():
        out = layer(probe).double()
    return (out[:-1] - out[-1]).T, out[-1]


@pytest.fixture(scope="module")
def written(base, tmp_path_factory):
    folder = tmp_path_factory.mktemp("loras")
    return folder, layouts(base, folder)


@pytest.fixture(scope="module")
def loaded(written, tmp_path_factory):
    """One pipeline and its LoRA state; each test activates only its own file."""
    folder, _ = written
    settings = Settings(model="tiny", device="cpu", lora_dir=folder, data_dir=tmp_path_factory.mktemp("d"))
    pipe = build_tiny_pipeline()
    linears = {n: effective(m) for n, m in pipe.transformer.named_modules() if isinstance(m, torch.nn.Linear)}
    return LoraState(settings, dict(pipe.transformer.config)), pipe, linears


@pytest.mark.parametrize("label", LABELS)
def test_every_layout_applies_its_exact_delta(written, loaded, label):
    lora = written[1][label]
    loras, pipe, before = loaded
    applied = loras.apply(pipe, (LoraChoice(lora.path.name, SCALE),), fast=False)
    assert applied[0]["layout"] == label.split()[0].rstrip(",") and applied[0]["applied"] == "unfused adapter"
    checked = 0
    for name, (base_w, base_b) in before.items():
        layer = pipe.transformer.get_submodule(name)
        weight, bias = effective(layer)
        delta = lora.deltas.get(name, writers.Delta())
        want_w = base_w + SCALE * (delta.weight if delta.weight is not None else 0)
        want_b = base_b + SCALE * (delta.bias if delta.bias is not None else 0)
        torch.testing.assert_close(weight, want_w, rtol=1e-4, atol=1e-5, msg=f"{name} weight")
        torch.testing.assert_close(bias, want_b, rtol=1e-4, atol=1e-5, msg=f"{name} bias")
        checked += name in lora.deltas
    assert checked == len(lora.deltas) > 0  # every targeted layer was checked, untargeted ones unchanged


def test_layout_notes_and_untouched_layers(base, tmp_path):
    folder = tmp_path / "loras"
    folder.mkdir()
    files = layouts(base, folder)
    library = LoraLibrary(Settings(lora_dir=folder, data_dir=tmp_path / "data"), dict(base.config))
    entries = {e.name: e for e in library.listing()}
    assert set(entries) == {f.path.name for f in files.values()}
    light = entries["lightx2v.safetensors"]
    assert (light.layout, light.rank, light.targets, light.problem) == ("wan", 4, 24, "")
    assert light.notes == ("14 zero norm/modulation deltas dropped (as diffusers does)",)  # incl. norm_k_img
    assert entries["t2v.safetensors"].notes[-1].startswith("no image cross-attention keys (a T2V LoRA)")
    assert entries["wan_ab.safetensors"].targets == 32  # block linears + the 8 non-block families
    assert {entries[n].layout for n in ("musubi.safetensors", "kohya.safetensors")} == {"musubi"}
    assert entries["diffusers.safetensors"].layout == "diffusers"
    assert all(len(e.sha256) == 64 and e.size == (folder / e.name).stat().st_size for e in entries.values())


# --- the library, the cache and the refusals (nothing stored) ------------------------------------
def other_model_files(base, folder: Path) -> dict[str, Path]:
    """Files that are not usable LoRAs for this model, by what is wrong with them."""
    wider = build_tiny_pipeline(head_dim=16).transformer  # another model's widths (Wan 1.3B, Wan2.2 5B ...)
    files = {"widths": writers.write_wan(wider, folder / "other_widths.safetensors").path}
    key = "transformer.single_transformer_blocks.0.attn.to_q"  # a Flux LoRA: no key is a Wan layer
    save_file({f"{key}.lora_A.weight": torch.zeros(4, 64), f"{key}.lora_B.weight": torch.zeros(64, 4)},
              str(folder / "flux.safetensors"))  # fmt: skip
    files["flux"] = folder / "flux.safetensors"
    good = writers.write_wan(base, folder / "wan22.safetensors").path
    tensors = __import__("safetensors.torch", fromlist=["load_file"]).load_file(str(good))
    save_file(tensors, str(good), metadata={"modelspec.architecture": "wan2.2-i2v-a14b/lora"})
    files["wan22"] = good
    cut = folder / "truncated.safetensors"
    cut.write_bytes(writers.write_wan(base, folder / "whole.tmp").path.read_bytes()[:-300])
    files["truncated"] = cut
    torch.save({"lora": torch.zeros(2)}, folder / "pickled.safetensors")
    files["pickle"] = folder / "pickled.safetensors"
    (folder / "text.safetensors").write_text("not a tensor file at all")
    files["garbage"] = folder / "text.safetensors"
    return files


def serving(data: bytes):
    """A stand-in for the REST fetcher (tested with a real TLS server in test_lora_api.py)."""
    return lambda _url, sink: sink.write(data)


REFUSALS = {  # what is wrong -> the words of the refusal
    "widths": "was made for a model of other widths",
    "flux": "matches no layer of this model: nothing would be applied",
    "wan22": "was trained for another model (its metadata modelspec.architecture = 'wan2.2",
    "truncated": "is truncated",
    "pickle": "is a pickle checkpoint (torch.save); only .safetensors files are accepted",
    "garbage": "is not a safetensors file",
}


def test_refusals_name_the_file_and_the_reason_and_keep_nothing(base, tmp_path):
    folder = tmp_path / "loras"
    folder.mkdir()
    files = other_model_files(base, folder)
    library = LoraLibrary(Settings(lora_dir=folder, data_dir=tmp_path / "data"), dict(base.config))
    listed = {e.name: e.problem for e in library.listing()}
    for what, words in REFUSALS.items():
        name = files[what].name
        assert words in listed[name], (what, listed[name])
        with pytest.raises(InvalidRequest, match=rf"loras\[2\]: '{name}' .*{re.escape(words[:30])}"):
            library.resolve(LoraChoice(name), 2)
        # the same bytes from a URL are refused too, and not kept
        with pytest.raises(InvalidRequest, match=rf"loras\[0\]: '{name}'"):
            library.resolve(LoraChoice(f"https://loras.test/{name}"), 0, serving(files[what].read_bytes()))
    assert not [p for p in (tmp_path / "data" / "loras").glob("*") if p.name != "index.json"]
    with pytest.raises(InvalidRequest, match=r"'nope' is not in the LoRA library \(it holds flux"):
        library.resolve(LoraChoice("nope"), 0)
    with pytest.raises(InvalidRequest, match="https URLs are accepted through the REST API only"):
        library.resolve(LoraChoice("https://loras.test/a.safetensors"), 0)
    with pytest.raises(InvalidRequest, match="no file with sha256 aaaaaaaaaaaa... is held here"):
        library.resolve(LoraChoice("sha256:" + "a" * 64), 0)


def test_files_added_at_run_time_appear_and_changes_are_seen(base, tmp_path):
    folder = tmp_path / "loras"
    library = LoraLibrary(Settings(lora_dir=folder, data_dir=tmp_path / "data"), dict(base.config))
    assert library.listing() == []  # no folder yet: an empty library
    folder.mkdir()
    first = writers.write_diffusers(base, folder / "motion.safetensors", seed=1).path
    assert [e.name for e in library.listing()] == ["motion.safetensors"]
    sha = library.listing()[0].sha256
    time.sleep(0.01)
    writers.write_diffusers(base, first, seed=2)  # replaced in place: a new digest
    os.utime(first, ns=(time.time_ns(), time.time_ns() + 10**6))
    writers.write_musubi(base, folder / "zoom.safetensors")
    entries = library.listing()
    assert [e.name for e in entries] == ["motion.safetensors", "zoom.safetensors"]
    assert entries[0].sha256 != sha
    chosen = library.resolve(LoraChoice("motion", 0.5), 0)  # the suffix may be left out
    assert (chosen.name, chosen.layout, chosen.scale) == ("motion.safetensors", "diffusers", 0.5)
    assert chosen.sha256 == entries[0].sha256


def test_cache_reuses_by_source_evicts_by_bytes_and_is_swept(base, tmp_path):
    data, calls = {}, []
    for i in range(3):
        path = writers.write_diffusers(base, tmp_path / f"l{i}.safetensors", seed=i).path
        data[f"https://loras.test/l{i}.safetensors"] = path.read_bytes()
    size = len(next(iter(data.values())))

    def fetch(url, sink):
        calls.append(url)
        sink.write(data[url])

    settings = Settings(data_dir=tmp_path / "data", lora_cache_gb=2.5 * size / 1e9, output_ttl_h=1.0)
    library = LoraLibrary(settings, dict(base.config))
    urls = list(data)
    first = library.resolve(LoraChoice(urls[0]), 0, fetch)
    assert library.resolve(LoraChoice(urls[0]), 1, fetch).sha256 == first.sha256 and calls == urls[:1]
    assert first.name == "l0.safetensors" and library.path_of(first).name == f"{first.sha256}.safetensors"
    time.sleep(0.02)
    library.resolve(LoraChoice(urls[1]), 0, fetch)
    time.sleep(0.02)
    library.path_of(first)  # used again: now the most recent
    time.sleep(0.02)
    library.resolve(LoraChoice(urls[2]), 0, fetch)  # 3 files > 2.5 files' bytes: the LRU (l1) goes
    assert [name for _, name in library.cached()] == ["l2.safetensors", "l0.safetensors"]
    old = time.time() - 2 * 3600
    for path in (tmp_path / "data" / "loras").glob("*.safetensors"):
        os.utime(path, (old, old))
    assert library.sweep() == 2 and library.cached() == []
    with pytest.raises(
        InvalidRequest, match=r"'l0.safetensors' \(sha256 [0-9a-f]{12}\) is no longer available"
    ):
        library.path_of(first)


def test_hub_source_through_huggingface_hubs_offline_cache(base, tmp_path, monkeypatch):
    """The hub path as huggingface_hub resolves it offline: a pre-populated cache folder (its
    models--owner--repo/refs/main + snapshots/<commit>/<file> layout), HF_HUB_OFFLINE on."""
    import huggingface_hub.constants as hub

    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "hub" / "models--someone--wan-loras" / "snapshots" / commit / "i2v"
    snapshot.mkdir(parents=True)
    lora = writers.write_lightx2v(base, snapshot / "orbit.safetensors")
    (tmp_path / "hub" / "models--someone--wan-loras" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--wan-loras" / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    library = LoraLibrary(Settings(data_dir=tmp_path / "data", offline=True), dict(base.config))
    chosen = library.resolve(LoraChoice("someone/wan-loras/i2v/orbit.safetensors", 0.8), 0)
    assert (chosen.name, chosen.layout) == ("orbit.safetensors", "wan")
    assert library.path_of(chosen).read_bytes() == lora.path.read_bytes()  # kept by content, reused
    with pytest.raises(
        InvalidRequest, match=r"someone/wan-loras/missing.safetensors': cannot get it from the hub"
    ):
        library.resolve(LoraChoice("someone/wan-loras/missing.safetensors"), 0)


# --- switching, the warm budget, the planner ----------------------------------------------------
def latents(pipe):
    from conftest import tiny_latents

    return tiny_latents(pipe)


def test_switching_sets_reloads_nothing_and_never_changes_base_weights(base, tmp_path):
    folder = tmp_path / "loras"
    folder.mkdir()
    a = writers.write_wan(base, folder / "a.safetensors", seed=3).path.name
    b = writers.write_musubi(base, folder / "b.safetensors", seed=4).path.name
    settings = Settings(model="tiny", device="cpu", lora_dir=folder, data_dir=tmp_path / "data")
    pipe = build_tiny_pipeline()
    loras = LoraState(settings, dict(pipe.transformer.config))
    weights = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    none = latents(pipe)
    runs = {}
    for key, choices in [("a", (LoraChoice(a, 1.0),)), ("ab", (LoraChoice(a, 0.5), LoraChoice(b, -1.0))),
                         ("none", ()), ("a again", (LoraChoice(a, 1.0),)), ("ab again", (LoraChoice(a, 0.5),
                         LoraChoice(b, -1.0)))]:  # fmt: skip
        loras.apply(pipe, choices, fast=False)
        runs[key] = latents(pipe)
    assert loras.adapters.loads == 2  # each file loaded once; every switch after that sets flags only
    assert torch.equal(runs["a"], runs["a again"]) and torch.equal(runs["ab"], runs["ab again"])
    assert torch.equal(runs["none"], none) and not torch.equal(runs["a"], none)  # none = the base model
    assert not torch.allclose(runs["a"], runs["ab"])
    for name, value in pipe.transformer.state_dict().items():
        if "lora_" not in name:
            assert torch.equal(value, weights[name.replace(".base_layer", "")]), name


def test_warm_adapters_stay_within_their_byte_budget(base, tmp_path):
    folder = tmp_path / "loras"
    folder.mkdir()
    names = [writers.write_diffusers(base, folder / f"l{i}.safetensors", seed=i).path.name for i in range(3)]
    settings = Settings(model="tiny", device="cpu", lora_dir=folder, data_dir=tmp_path / "data")
    pipe = build_tiny_pipeline()
    one = LoraState(settings, dict(pipe.transformer.config))
    one.apply(pipe, (LoraChoice(names[0]),), fast=False)
    size = one.held_bytes()
    assert size > 0 and one.adapters.loads == 1
    budget = 2.5 * size / 1e9  # room for two
    loras = LoraState(settings.replace(lora_warm_gb=budget), dict(pipe.transformer.config))
    pipe = build_tiny_pipeline()
    for name in names:
        loras.apply(pipe, (LoraChoice(name),), fast=False)
    assert len(loras.adapters.sizes) == 2 and loras.held_bytes() <= budget * 1e9
    loaded = {a for m in pipe.transformer.modules() if hasattr(m, "lora_A") for a in m.lora_A}
    assert loaded == set(loras.adapters.sizes)  # the evicted adapter left the model too
    loras.apply(pipe, (LoraChoice(names[0]),), fast=False)  # evicted earlier: loaded again
    assert loras.adapters.loads == 4


def test_the_planner_counts_the_lora_budget():
    from wan_demo.model.memory import plan as memory
    from wan_demo.model.memory.estimate import Shape
    from wan_demo.model.memory.sizes import real_sizes
    from wan_demo.model.memory.start import REAL_DIMS, with_lora_budget

    sizes = dict(real_sizes())
    assert memory_terms(Settings(lora_warm_gb=3.0), 30.0) == (3.0, 0.0)
    warm, host = with_lora_budget(Settings(lora_warm_gb=3.0), sizes, "bf16")
    assert host == 0 and warm["transformer"].weights_gb() == pytest.approx(
        sizes["transformer"].weights_gb() + 3
    )
    budget = memory.Budget(80, 256, "test")
    plain = memory.estimate(memory.BY_NAME["resident"], sizes, Shape(), budget, REAL_DIMS)
    more = memory.estimate(memory.BY_NAME["resident"], warm, Shape(), budget, REAL_DIMS)
    assert more.peak_vram_gb == pytest.approx(plain.peak_vram_gb + 3.0, abs=0.11)  # with the transformer
    merged, host = with_lora_budget(Settings(lora_warm_gb=1.0, lora_merge_after=3), sizes, "Q4_K_M")
    q4 = memory.memory_weights.with_weights(sizes, "Q4_K_M")["transformer"].weights_gb()
    assert host == pytest.approx(q4)  # the originals merge-on-load keeps to switch back
    grown = merged["transformer"].weights_gb() - q4  # the warm budget + Q4_K layers requantized to Q5_0
    assert 1.0 < grown < 1.0 + q4 * ((22 / 32) / (144 / 256) - 1) + 0.01
