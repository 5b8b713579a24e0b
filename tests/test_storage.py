"""Job files on local folders and in a real S3 endpoint (moto's server mode over HTTP): keys,
outputs uploaded by the worker, downloads through `video_url` (API and presigned), the UI's local
copies, and clean-up removing the objects."""

from __future__ import annotations

import time

import httpx
import pytest
from apitools import KEY_A, api_settings, auth, b64_image, body, serve, wait_status
from conftest import make_image

from bench.services import temp_s3
from wan_demo.jobs import cleanup
from wan_demo.jobs.storage.base import make_storage
from wan_demo.jobs.storage.common import check_key
from wan_demo.jobs.storage.local import LocalStorage

BASE = "/api/v1/apikey"
BUCKET = "wan-demo"


@pytest.fixture(scope="module")
def s3_env():
    with temp_s3(BUCKET) as env:
        yield env


@pytest.fixture
def s3(s3_env, monkeypatch):
    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    import boto3

    return boto3.client("s3")


def objects(s3, prefix: str = "") -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []))


@pytest.mark.parametrize(
    "key", ["../x", "outputs/../inputs/a", "/etc/passwd", "outputs//a", "other/a", "outputs"]
)
def test_keys_stay_inside_their_areas(key):
    with pytest.raises(ValueError, match="bad storage key"):
        check_key(key)


def test_local_storage_round_trip(tmp_path):
    store = LocalStorage(tmp_path / "out", tmp_path / "in")
    store.open()
    loc = store.put_bytes("inputs/r1.png", b"png")
    assert loc == str(tmp_path / "in" / "r1.png") and store.read_bytes(loc) == b"png"
    scratch = tmp_path / "out" / "rest" / "v.mp4"
    scratch.parent.mkdir(parents=True)
    scratch.write_bytes(b"mp4")
    assert store.put_file("outputs/rest/v.mp4", scratch) == str(scratch)  # already in place: kept
    stream, size = store.reader(str(scratch))
    with stream:
        assert (stream.read(), size) == (b"mp4", 3)
    assert store.url(str(scratch), 60) is None and store.local_path(loc) is not None
    assert store.older_than("outputs", time.time() + 1) == [str(scratch)]
    store.delete(str(scratch))
    assert store.older_than("outputs", time.time() + 1) == []


def test_s3_outputs_downloads_and_clean_up(engine, tmp_path, s3):
    """A REST job on S3 storage: input and outputs are objects (nothing left in the local output
    folder), video_url streams the MP4 through the API, presigned links work without the key, and
    the sweeper deletes the objects after output_ttl_h; the URL then answers 410."""
    settings = api_settings(tmp_path, storage_url=f"s3://{BUCKET}/run1")
    with serve(settings, engine) as (url, service, _worker), httpx.Client(base_url=url, timeout=30) as client:
        rid = client.post(f"{BASE}/requests", json=body(b64_image(make_image(96, 64))), headers=auth()).json()
        rid = rid["request_id"]
        assert objects(s3, "run1/inputs/") == [f"run1/inputs/{rid}.png"]
        done = wait_status(client, f"{BASE}/requests/{rid}", ("success", "failed"))
        assert done["status"] == "success", done
        names = objects(s3, "run1/outputs/rest/")
        assert len(names) == 3 and {n.rsplit(".", 1)[1] for n in names} == {"mp4", "jpg", "json"}
        assert not list((tmp_path / "outputs").rglob("*.mp4"))  # uploaded, local scratch removed
        video = client.get(done["outcome"]["video_url"], headers=auth(KEY_A))
        assert video.status_code == 200 and video.content[4:8] == b"ftyp"
        assert video.headers["content-type"] == "video/mp4" and int(video.headers["content-length"]) > 1000
        job = service.jobs.store.get(rid)
        assert job.video_path.startswith(f"s3://{BUCKET}/run1/outputs/rest/")

        service.settings = service.views.settings = settings.replace(presign_ttl_s=300)  # presigned links
        link = client.get(f"{BASE}/requests/{rid}", headers=auth()).json()["outcome"]["video_url"]
        assert "Signature=" in link and httpx.get(link).content == video.content  # no key needed

        removed = cleanup.sweep(service.jobs.store, settings, time.time() + 48 * 3600, service.jobs.storage)
        assert removed["outputs"] == 3 and removed["inputs"] == 1 and objects(s3, "run1/") == []
        service.settings = service.views.settings = settings
        gone = client.get(done["outcome"]["video_url"], headers=auth())
        assert gone.status_code == 410 and gone.json()["error"]["code"] == "expired"


def test_ui_jobs_get_local_copies_from_the_bucket(engine, tmp_path, s3):
    from conftest import ask

    from wan_demo.jobs.service import JobService
    from wan_demo.jobs.store.sqlite import SqliteJobStore
    from wan_demo.jobs.worker import Worker

    settings = api_settings(tmp_path, storage_url=f"s3://{BUCKET}/ui-run")
    jobs = JobService(SqliteJobStore(tmp_path / "j.sqlite3"), settings, engine.plan_info).start()
    worker = Worker(jobs.store, engine, settings, storage=jobs.storage).start()
    try:
        job = jobs.submit(ask(make_image(), "ui job"), "ui", "ui")
        deadline = time.monotonic() + 120
        while (job := jobs.store.get(job.request_id)).status in ("queued", "processing"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        video, thumbnail = jobs.local_files(job)
        assert job.video_path.startswith("s3://") and objects(s3, "ui-run/outputs/ui/")
        assert video.startswith(str(settings.output_dir / "ui")) and open(video, "rb").read()[4:8] == b"ftyp"
        assert thumbnail.endswith(".jpg") and (settings.output_dir / "ui").is_dir()
    finally:
        worker.stop()
        jobs.close()


def test_unknown_storage_url_is_refused(tmp_path):
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        make_storage(api_settings(tmp_path, storage_url="ftp://x"))


def test_s3_live_preview_and_extend_through_the_bucket(engine, tmp_path, s3, monkeypatch):
    """Previews are bucket objects served by preview_url while the job runs and deleted at its end;
    extending a request copies the parent MP4 from the bucket into the new job's input."""
    from apitools import paused_generation

    from wan_demo.media.video import count_frames

    settings = api_settings(tmp_path, storage_url=f"s3://{BUCKET}/run2")
    with (
        serve(settings, engine) as (url, _service, _worker),
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        with paused_generation(monkeypatch) as (reached, release):
            rid = client.post(f"{BASE}/requests", json=body(b64_image(make_image())), headers=auth()).json()
            rid = rid["request_id"]
            assert reached.wait(60)
            view = client.get(f"{BASE}/requests/{rid}", headers=auth()).json()
            assert objects(s3, "run2/outputs/rest/") == [f"run2/outputs/rest/{rid}.preview.1.webp"]
            shown = client.get(view["preview_url"], headers=auth())
            assert shown.status_code == 200 and shown.content[8:12] == b"WEBP"
            release.set()
        assert wait_status(client, f"{BASE}/requests/{rid}", ("success", "failed"))["status"] == "success"
        assert not [n for n in objects(s3, "run2/outputs/") if ".preview." in n]  # gone with the run
        extend = {"prompt": "then it rains", "parent_request_id": rid}
        xid = client.post(f"{BASE}/requests", json={**body(""), "payload": extend}, headers=auth()).json()
        xid = xid["request_id"]
        assert f"run2/inputs/{xid}.mp4" in objects(s3, "run2/inputs/")
        done = wait_status(client, f"{BASE}/requests/{xid}", ("success", "failed"))
        assert done["status"] == "success", done
        joined = tmp_path / "joined.mp4"
        joined.write_bytes(client.get(done["outcome"]["video_url"], headers=auth()).content)
        assert count_frames(joined)[0] == 161
        assert not list((tmp_path / "outputs").rglob("*.mp4"))  # the parent's scratch copy is gone too
