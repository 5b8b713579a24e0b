"""Extend a finished clip, and the 10 s second prompt, through generate() on the tiny model: frame
counts, the parent's frames unchanged, lineage in the MP4 and the sidecar, the seam colour match,
uploads re-encoded (and refused past the caps, leaving nothing behind), the CLIP embedding reused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from conftest import TEST_AREA, ask, make_image

from wan_demo.core.request import InvalidRequest, ParentClip
from wan_demo.core.settings import Settings
from wan_demo.core.validate import check_parent
from wan_demo.generate import generate
from wan_demo.media import clip
from wan_demo.media.colour import seam_difference
from wan_demo.media.video import count_frames, read_mp4_metadata, write_mp4, write_outputs


def decode(path: Path) -> np.ndarray:
    reader = imageio_ffmpeg.read_frames(str(path))
    width, height = next(reader)["size"]
    return np.stack([np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in reader])


@pytest.fixture(scope="module")
def parent(engine, tmp_path_factory):
    """A finished 5 s clip of ours (seed 7) and its settings."""
    settings = Settings(model="tiny", device="cpu", tiny_max_area=TEST_AREA, steps=2, prompt_extender="rules",
                        output_dir=tmp_path_factory.mktemp("extend") / "outputs")  # fmt: skip
    result = generate(ask(make_image(), "a cat walks", seed=7), engine, settings)
    return result, settings


def extension_of(result, request_id: str | None = "rid-1") -> tuple[ParentClip, object]:
    clip_ = clip.parent_from_result(result.video_path, result.metadata_path, request_id)
    return clip_, clip.last_frame(result.video_path)


def test_extend_adds_80_frames_after_the_parents_unchanged_frames(engine, parent):
    first, settings = parent
    source, last = extension_of(first)
    assert (source.num_frames, source.width, source.height, source.fps) == (81, 64, 48, 16)
    result = generate(ask(last, "the cat sits down", seed=8, parent=source), engine, settings)
    assert result.num_frames == 161 and count_frames(result.video_path) == (161, 64, 48)
    joined, before = decode(result.video_path), decode(first.video_path)
    np.testing.assert_array_equal(joined[:81], before)  # the parent's frames, bit for bit
    stored = read_mp4_metadata(result.video_path)
    assert stored == json.loads(result.metadata_path.read_text()) | {"timings_s": stored["timings_s"]}
    lineage = stored["lineage"]
    assert lineage["parent"]["request_id"] == "rid-1" and lineage["parent"]["sha256"] == clip.sha256_of(
        first.video_path
    )
    assert lineage["parent"]["lineage"]["segments"][0]["prompt"] == "a cat walks"  # the parent's own
    assert lineage["segments"] == [
        dict(index=0, frames=[81, 160], prompt="the cat sits down", final_prompt="the cat sits down",
             prompt_backend="off", seed=8, starts_from="the last frame before it", colour_match=1.0,
             ends_on=None),  # no end frame (issue 24)
    ]  # fmt: skip
    assert result.thumbnail_path.is_file() and not list(Path(settings.output_dir).glob("*.part"))


def test_ten_seconds_with_a_second_prompt_and_a_colour_matched_seam(engine, parent, monkeypatch):
    _, settings = parent
    recipe, writer, outs, written = (
        sys.modules[generate.__module__],
        sys.modules[write_outputs.__module__],
        [],
        [],
    )
    real_segment = recipe.run_segment

    def segment(engine, **kwargs):  # what the pipeline returned, before the seam colour match
        outs.append(real_segment(engine, **kwargs))
        return outs[-1]

    def keep(frames, path, fps, metadata):  # what the MP4 encoder received
        written.append(np.stack(frames))
        return write_mp4(frames, path, fps, metadata)

    monkeypatch.setattr(recipe, "run_segment", segment)
    monkeypatch.setattr(writer, "write_mp4", keep)
    request = ask(make_image(), "waves roll in", seed=3, video_length_s=10, prompt_2="a boat appears")
    result = generate(request, engine, settings)
    segments = result.lineage["segments"]
    assert [s["prompt"] for s in segments] == ["waves roll in", "a boat appears"]
    assert [s["frames"] for s in segments] == [[0, 80], [81, 160]] and result.num_frames == 161
    (ours,) = written
    np.testing.assert_array_equal(ours[:81], outs[0])  # segment 1 is never touched
    reference = list(ours[73:81])  # the 8 frames before the seam
    matched, raw = seam_difference(list(ours[81:]), reference), seam_difference(list(outs[1][1:]), reference)
    assert matched < raw / 10  # the second pass's colour drift away from the seam, corrected
    with pytest.raises(InvalidRequest, match="prompt_2: is the prompt of the second 5 s segment"):
        ask(make_image(), "x", prompt_2="y")


def test_an_upload_is_reencoded_at_the_model_size_and_16_fps(engine, parent, tmp_path):
    _, settings = parent
    upload = tmp_path / "phone.mp4"  # 2 s at 24 fps, 128x96 (4:3), not our size or rate
    write_mp4([np.asarray(make_image(128, 96, seed=i)) for i in range(48)], upload, 24, {})
    source, last = clip.import_upload(upload, tmp_path / "parent.mp4", 64 * 64)
    assert (source.num_frames, source.width, source.height, source.fps) == (32, 64, 48, 16)
    assert source.source == "upload" and source.sha256 == clip.sha256_of(upload) and last.size == (64, 48)
    result = generate(ask(last, "the camera pans", seed=1, parent=source), engine, settings)
    assert count_frames(result.video_path) == (32 + 80, 64, 48)
    np.testing.assert_array_equal(decode(result.video_path)[:32], decode(tmp_path / "parent.mp4"))


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda p: p.write_bytes(b"not a video at all"), "is not a readable video"),
        (lambda p: make_image(64, 64).save(p, format="PNG"), "is not a readable video"),
        (lambda p: write_mp4([np.zeros((48, 64, 3), np.uint8)] * 40, p, 16, {}), "is longer than 2 s"),
    ],
)
def test_bad_uploads_are_refused_and_leave_nothing(tmp_path, monkeypatch, make, words):
    monkeypatch.setattr(clip, "MAX_PARENT_S", 2.0)  # a 2.5 s video is then too long
    upload, folder = tmp_path / "upload.mp4", tmp_path / "job"
    make(upload)
    folder.mkdir()
    with pytest.raises(InvalidRequest, match=words) as refused:
        clip.import_upload(upload, folder / "parent.mp4", 64 * 64)
    assert refused.value.field == "video" and list(folder.iterdir()) == []


def test_parent_caps():
    long = ParentClip("x.mp4", num_frames=16 * 61, width=64, height=48, fps=16, source="upload")
    with pytest.raises(InvalidRequest, match="is 61.0 s long; videos up to 60 s can be extended"):
        check_parent(long)
    with pytest.raises(InvalidRequest, match="not a multiple of 16"):
        check_parent(ParentClip("x.mp4", 81, 60, 48, 16, "upload"))


def test_same_picture_reuses_its_clip_embedding_bit_identically(engine, parent, monkeypatch):
    """A re-run of the parent's picture (still among the cached pictures) skips the CLIP encoder and
    gives the parent's frames."""
    first, settings = parent
    calls = []
    encoder = engine.pipe.image_encoder
    monkeypatch.setattr(
        encoder, "forward", lambda *a, **k: calls.append(1) or type(encoder).forward(encoder, *a, **k)
    )
    hits = engine.image_embeds.hits
    again = generate(ask(make_image(), "a cat walks", seed=7), engine, settings)
    assert calls == [] and engine.image_embeds.hits == hits + 1
    np.testing.assert_array_equal(decode(again.video_path), decode(first.video_path))
