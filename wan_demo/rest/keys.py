"""API keys for the REST API: `Authorization: Bearer <key>`, compared in constant time.

Keys come from Settings.api_keys (comma-separated) and Settings.api_key_file (one per line, `#`
comments). An entry is either the key itself or `sha256:<hex>` of it, so keys can be kept hashed at
rest: `python -c "import hashlib,sys; print('sha256:'+hashlib.sha256(sys.argv[1].encode()).hexdigest())" KEY`.

Webhook signing secrets (Standard Webhooks, `whsec_<base64>`) are derived per key from
Settings.webhook_secret, so every API node signs alike and nothing secret is stored per key. The
admin reads a key's secret once, to hand it to that client:
`WAN_DEMO_WEBHOOK_SECRET=... WAN_DEMO_API_KEYS=... python -m wan_demo.rest.keys --webhook-secret KEY`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import sys
from pathlib import Path

from wan_demo.core.settings import MIN_WEBHOOK_SECRET, Settings, from_cli

SETUP_HINT = (
    "the REST API is disabled: no API keys are configured. Set WAN_DEMO_API_KEYS=<key>[,<key>...] "
    "(or sha256:<hex> entries) or WAN_DEMO_API_KEY_FILE=<file> and restart"
)


WEBHOOK_LABEL = b"wan-demo webhook signing secret v1\x00"  # domain separation for the derivation


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_id(key: str) -> str:
    """The owner id a key's requests are stored under (first 16 hex digits of its SHA-256)."""
    return digest(key.strip())[:16]


def webhook_secret(master: str, owner: str) -> str:
    """The Standard Webhooks secret of one key: whsec_ + base64(HMAC-SHA256(master, label + key id))."""
    raw = hmac.new(master.encode("utf-8"), WEBHOOK_LABEL + owner.encode("utf-8"), hashlib.sha256).digest()
    return "whsec_" + base64.b64encode(raw).decode("ascii")


def parse_entry(entry: str) -> str:
    """Hex SHA-256 of one configured key (plain keys are hashed here and not kept)."""
    entry = entry.strip()
    if entry.lower().startswith("sha256:"):
        hexpart = entry[7:].strip().lower()
        if len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
            raise ValueError("an api key entry 'sha256:...' must hold 64 hex digits")
        return hexpart
    return digest(entry)


class KeyRing:
    def __init__(self, hashes: list[str]):
        self._hashes = [bytes.fromhex(h) for h in hashes]

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        entries = [e for e in settings.api_keys.split(",") if e.strip()]
        if settings.api_key_file:
            lines = Path(settings.api_key_file).read_text(encoding="utf-8").splitlines()
            entries += [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
        return cls([parse_entry(e) for e in entries])

    @property
    def enabled(self) -> bool:
        return bool(self._hashes)

    def owner_of(self, authorization: str | None) -> str | None:
        """The caller's key id (first 16 hex digits of the key's SHA-256), or None if not a valid key.
        Every configured hash is compared, so timing does not reveal which one matched."""
        if not authorization:
            return None
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return None
        presented = hashlib.sha256(key.strip().encode("utf-8")).digest()
        match = False
        for known in self._hashes:
            match |= hmac.compare_digest(presented, known)
        return presented.hex()[:16] if match else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="API key admin (settings from WAN_DEMO_* env vars)")
    parser.add_argument("--webhook-secret", metavar="KEY", required=True, help="print KEY's webhook secret")
    args = parser.parse_args(argv)
    settings = from_cli([])  # WAN_DEMO_* only: the flags here are this tool's
    if len(settings.webhook_secret) < MIN_WEBHOOK_SECRET:
        print(f"set WAN_DEMO_WEBHOOK_SECRET (>= {MIN_WEBHOOK_SECRET} characters) first", file=sys.stderr)
        return 2
    owner = KeyRing.from_settings(settings).owner_of(f"Bearer {args.webhook_secret}")
    if owner is None:
        print("that key is not configured (WAN_DEMO_API_KEYS / WAN_DEMO_API_KEY_FILE)", file=sys.stderr)
        return 2
    print(webhook_secret(settings.webhook_secret, owner))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
