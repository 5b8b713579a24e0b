"""Whose UI jobs are whose: the ownership rule (web/owners.py) as pure functions, then through the
real job store: history listing, opening by id and deleting stay within one owner."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest
from conftest import ask

from wan_demo.jobs.common import Status
from wan_demo.jobs.service import JobService
from wan_demo.jobs.store.sqlite import SqliteJobStore
from wan_demo.web.history import History
from wan_demo.web.owners import (
    api_owner,
    has_history,
    job_id_from,
    may_open,
    new_token,
    owner_for,
    valid_token,
)


def test_a_logged_in_hf_user_wins_over_the_browser_token():
    token = new_token()
    assert owner_for("alice", token) == "ui:hf:alice"
    assert owner_for(None, token).startswith("ui:anon:")


def test_the_store_never_holds_the_browser_token():
    token = new_token()
    owner = owner_for(None, token)
    assert token not in owner and owner == "ui:anon:" + hashlib.sha256(token.encode()).hexdigest()[:32]
    assert owner_for(None, token) == owner  # stable: the same browser finds its history again
    assert owner_for(None, new_token()) != owner


@pytest.mark.parametrize(
    "username, token",
    [
        (None, None),
        (None, ""),
        (None, "short"),
        (None, "x" * 42 + "!"),  # right length, wrong alphabet
        (None, 12345),
        ("", None),
        ("../alice", None),  # not a Hugging Face user name
        ("alice\n", None),
    ],
)
def test_no_identity_means_no_owner(username, token):
    assert owner_for(username, token) is None and not has_history(None)


def test_tokens_are_unguessable_and_well_formed():
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100 and all(valid_token(t) and len(t) == 43 for t in tokens)


def test_api_calls_share_one_owner_with_no_history():
    """One lane in the fair queue for all Gradio API calls; no call can list or open a job."""
    first, second = api_owner(), api_owner()
    assert first == second == "ui:api"
    assert not has_history(first) and not may_open(first, first)


def test_a_job_opens_only_for_its_own_owner():
    alice, bob = owner_for("alice", None), owner_for(None, new_token())
    assert may_open(alice, alice) and may_open(bob, bob)
    assert not may_open(alice, bob) and not may_open(bob, alice) and not may_open(alice, None)
    assert not may_open("ui", "ui")  # the shared owner of jobs made before per-user history


@pytest.mark.parametrize("value", ["", "nope", "1' OR '1'='1", "../etc/passwd", None, 7, "a" * 500])
def test_malformed_job_ids_are_no_ids(value):
    assert job_id_from(value) is None


def test_a_job_id_is_read_as_a_canonical_uuid():
    rid = uuid.uuid4()
    assert job_id_from(str(rid).upper()) == str(rid)


@pytest.fixture
def jobs(engine, settings):
    service = JobService(SqliteJobStore(settings.data_dir / "jobs.sqlite3"), settings, engine.plan_info)
    yield service.start()
    service.close()


def test_history_lists_and_opens_only_the_visitors_own_jobs(jobs, image):
    alice, bob = owner_for("alice", None), owner_for(None, new_token())
    mine = [jobs.submit(ask(image, f"alice {i}", seed=i), alice, "ui") for i in range(3)]
    theirs = jobs.submit(ask(image, "bob"), bob, "ui")
    api = jobs.submit(ask(image, "api"), api_owner(), "ui")
    history = History(jobs)
    items, label, ids, page = history.page(alice, 0)
    assert ids == [j.request_id for j in reversed(mine)]  # newest first
    assert (len(items), label, page) == (3, "Page 1 of 1 · 3 results", 0)
    assert "alice 2" in items[0][1] and "seed 2" in items[0][1] and "5 s" in items[0][1]
    assert history.page(bob, 0)[2] == [theirs.request_id]
    assert history.page(None, 0)[2] == [] and history.page(api.owner, 0)[2] == []
    assert history.find(mine[0].request_id, alice).request_id == mine[0].request_id
    absent = [(bob, mine[0].request_id), (alice, theirs.request_id), (alice, api.request_id)]
    absent += [(api.owner, api.request_id), (alice, str(uuid.uuid4())), (alice, "garbage")]
    for owner, rid in absent:
        assert history.find(rid, owner) is None  # unknown, foreign, API-made, malformed: all absent


def test_history_pages(jobs, image, monkeypatch):
    monkeypatch.setattr("wan_demo.web.history.PAGE_SIZE", 2)
    owner = owner_for("carol", None)
    made = [jobs.submit(ask(image, f"c{i}"), owner, "ui").request_id for i in range(5)]
    history = History(jobs)
    assert history.page(owner, 1)[1:] == ("Page 2 of 3 · 5 results", made[2:0:-1], 1)
    assert history.page(owner, 9)[2:] == ([made[0]], 2)  # clamped to the last page
    assert history.page(owner, -3)[3] == 0


def test_delete_removes_the_row_and_its_files_for_the_owner_only(jobs, image, settings):
    alice, bob = owner_for("alice", None), owner_for(None, new_token())
    job = jobs.submit(ask(image, "to delete"), alice, "ui")
    outputs = settings.output_dir / "ui"
    outputs.mkdir(parents=True)
    files = {name: outputs / f"x.{name}" for name in ("mp4", "jpg")}
    outside = settings.data_dir.parent / "not-ours.json"  # a path outside our folders is never deleted
    for path in (*files.values(), outside):
        path.write_bytes(b"x")
    jobs.cancel(job.request_id, alice)
    jobs.store._db.execute(
        "UPDATE requests SET status = ?, video_path = ?, thumbnail_path = ?, metadata_path = ?"
        " WHERE request_id = ?",
        (Status.SUCCESS, str(files["mp4"]), str(files["jpg"]), str(outside), job.request_id),
    )
    history = History(jobs)
    assert not history.delete(job.request_id, bob) and jobs.get(job.request_id, alice) is not None
    assert history.delete(job.request_id, alice)
    assert jobs.get(job.request_id, alice) is None and jobs.store.get(job.request_id) is None
    assert not any(p.exists() for p in files.values()) and not Path(job.input_path).exists()
    assert outside.exists() and not history.delete(job.request_id, alice)  # gone: nothing to delete


def test_deleting_a_queued_job_cancels_it_first(jobs, image):
    owner = owner_for("dave", None)
    job = jobs.submit(ask(image, "waiting"), owner, "ui")
    assert jobs.delete(job.request_id, owner)
    assert jobs.store.count((Status.QUEUED,)) == 0


def test_a_signed_in_hf_profile_names_the_owner():
    import gradio as gr

    from wan_demo.web.history import owner_of

    token = new_token()
    alice = gr.OAuthProfile({"name": "A", "preferred_username": "alice", "profile": "", "picture": ""})
    assert owner_of(token, alice) == "ui:hf:alice"
    assert owner_of(token, None) == owner_for(None, token)


def test_oauth_is_offered_only_where_spaces_configured_it(monkeypatch):
    from wan_demo.web.owners import oauth_enabled

    monkeypatch.delenv("OAUTH_CLIENT_ID", raising=False)
    assert not oauth_enabled()
    monkeypatch.setenv("OAUTH_CLIENT_ID", "set-by-spaces")  # what hf_oauth: true makes Spaces set
    assert oauth_enabled()  # authlib comes with gradio[oauth] (requirements.txt)


@pytest.mark.parametrize("oauth", [True, False])
def test_the_login_button_appears_only_with_oauth(monkeypatch, engine, settings, oauth):
    import gradio as gr
    import gradio.oauth

    from wan_demo.web import ui

    monkeypatch.setattr(ui, "oauth_enabled", lambda: oauth)
    # Off a Space Gradio asks the hub who is logged in on this machine; that cannot run here.
    fake = {"userinfo": {"preferred_username": "alice"}, "access_token": "x", "scope": "", "expires_at": 0}
    monkeypatch.setattr(gradio.oauth, "_get_mocked_oauth_info", lambda: fake)
    jobs = JobService(SqliteJobStore(settings.data_dir / "j.sqlite3"), settings, engine.plan_info).start()
    try:  # the page lists the LoRA library, whose cache index lives in the job store
        demo = ui.build_ui(jobs, engine.plan_info(), settings)
    finally:
        jobs.close()
    buttons = [b for b in demo.blocks.values() if isinstance(b, gr.LoginButton)]
    assert len(buttons) == int(oauth) and demo.expects_oauth == oauth
