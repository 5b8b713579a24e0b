"""Whose jobs are whose in the UI: the ownership rule, as pure functions.

- A logged-in Hugging Face user (Spaces with `hf_oauth: true`) owns "ui:hf:<username>".
- Otherwise the browser's anonymous token (made here with secrets.token_urlsafe, kept in the
  browser's localStorage through gr.BrowserState) owns "ui:anon:<sha256 of the token>": the store
  never holds the token itself, so its rows cannot be used to impersonate anyone.
- Gradio API calls (gradio_client, curl, MCP: no browser) share one owner, "ui:api": it has no
  history and opens nothing, and in the fair queue all of them together are one owner (a fresh
  owner per call would go first every time, ahead of every API key already served).

A UI owner comes only from the OAuth session cookie or the browser-kept token, never from a
query parameter: `?job=<id>` names a job, and it opens only for the job's own owner.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import uuid

TOKEN_BYTES = 32  # 256 random bits: guessing one is hopeless
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")  # what secrets.token_urlsafe(32) produces
USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")  # Hugging Face user names
HF_PREFIX, ANON_PREFIX, API_OWNER = "ui:hf:", "ui:anon:", "ui:api"


def new_token() -> str:
    """A fresh anonymous browser token."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def valid_token(token: object) -> bool:
    return isinstance(token, str) and TOKEN_RE.fullmatch(token) is not None


def owner_for(username: str | None, token: str | None) -> str | None:
    """The UI owner of a visitor: the HF user when logged in, else the browser token's owner.
    None when there is neither (nothing of theirs can be listed or opened)."""
    if isinstance(username, str) and USERNAME_RE.fullmatch(username):
        return HF_PREFIX + username
    if valid_token(token):
        return ANON_PREFIX + hashlib.sha256(token.encode()).hexdigest()[:32]  # 128 bits of the hash
    return None


def api_owner() -> str:
    """The owner of every Gradio API call: one lane in the fair queue, no history, opens nothing."""
    return API_OWNER


def has_history(owner: str | None) -> bool:
    """Only browser owners (HF users, anonymous tokens) have a history page."""
    return owner is not None and owner.startswith((HF_PREFIX, ANON_PREFIX))


def may_open(job_owner: str, viewer: str | None) -> bool:
    """A job opens only for its own owner, and only for an owner with a history."""
    return has_history(viewer) and hmac.compare_digest(job_owner.encode(), viewer.encode())


def job_id_from(value: object) -> str | None:
    """A `?job=` value as a canonical request id (a UUID), or None for anything else."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        return None


def oauth_enabled() -> bool:
    """Hugging Face login is offered on a Space with `hf_oauth: true` (Spaces then sets
    OAUTH_CLIENT_ID) and gradio[oauth] installed; elsewhere every visitor is anonymous."""
    import importlib.util

    return bool(os.environ.get("OAUTH_CLIENT_ID")) and importlib.util.find_spec("authlib") is not None
