"""Standard Webhooks signatures: sign, verify, and remember delivery ids against replays.

The scheme (https://www.standardwebhooks.com, used by OpenAI and by Gemini's static webhooks):
HMAC-SHA256 over ``"{webhook-id}.{webhook-timestamp}.{raw body}"``, base64, sent as ``v1,<sig>`` in the
``webhook-signature`` header, which may hold several space-separated entries (key rotation). A secret
``whsec_<base64>`` is base64-decoded; any other secret is used as its raw UTF-8 bytes (as the OpenAI
SDK does). Timestamps more than ``tolerance`` seconds away from now, in either direction, are refused.

Pure standard library, no Airflow import: the intake plugin, the notifier and the emulator all share it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE = 300
HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"
SIGNATURE_VERSION = "v1"


class WebhookVerificationError(Exception):
    """A delivery that must not be trusted."""


class MissingHeaderError(WebhookVerificationError):
    """A required Standard Webhooks header is absent or empty."""


class MalformedHeaderError(WebhookVerificationError):
    """A header is present but unusable (timestamp not an integer, no `v1,` signature)."""


class TimestampOutOfToleranceError(WebhookVerificationError):
    """The signed timestamp is too far from now."""


class StaleTimestampError(TimestampOutOfToleranceError):
    """Signed longer ago than the tolerance allows."""


class FutureTimestampError(TimestampOutOfToleranceError):
    """Signed further in the future than the tolerance allows."""


class SignatureMismatchError(WebhookVerificationError):
    """No signature matches the body under any configured secret (wrong secret or tampered body)."""


class ReplayedWebhookError(WebhookVerificationError):
    """The exact same signed delivery (id and timestamp) was already accepted."""


class InvalidSecretError(ValueError):
    """A `whsec_` secret whose payload is not valid base64, or an empty secret."""


def decode_secret(secret: str | bytes) -> bytes:
    """The HMAC key of a secret: base64 payload of ``whsec_…``, else the raw bytes."""
    if isinstance(secret, bytes):
        if not secret:
            raise InvalidSecretError("the webhook secret is empty")
        return secret
    if not secret:
        raise InvalidSecretError("the webhook secret is empty")
    if secret.startswith(SECRET_PREFIX):
        try:
            key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
        except (binascii.Error, ValueError):
            raise InvalidSecretError("the whsec_ webhook secret is not valid base64") from None
        if not key:
            raise InvalidSecretError("the whsec_ webhook secret is empty")
        return key
    return secret.encode()


def generate_secret(nbytes: int = 32) -> str:
    """A fresh random secret in the ``whsec_<base64>`` form."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(nbytes)).decode()


def new_webhook_id(prefix: str = "msg_") -> str:
    """A random delivery id (Standard Webhooks calls it the message id)."""
    return prefix + secrets.token_hex(12)


def _as_bytes(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else bytes(body)


def compute_signature(secret: str | bytes, webhook_id: str, timestamp: int, body: bytes | str) -> str:
    """base64(HMAC-SHA256(key, "id.timestamp.body")), without the version prefix."""
    signed = f"{webhook_id}.{timestamp}.".encode() + _as_bytes(body)
    return base64.b64encode(hmac.new(decode_secret(secret), signed, hashlib.sha256).digest()).decode()


def sign(secret: str | bytes, webhook_id: str, timestamp: int, body: bytes | str) -> str:
    """One ``v1,<base64>`` signature entry."""
    return f"{SIGNATURE_VERSION},{compute_signature(secret, webhook_id, timestamp, body)}"


def signed_headers(
    secret: str | bytes | Iterable[str | bytes],
    body: bytes | str,
    *,
    webhook_id: str | None = None,
    timestamp: int | None = None,
) -> dict[str, str]:
    """The three Standard Webhooks headers for `body`; several secrets give several signatures."""
    webhook_id = webhook_id or new_webhook_id()
    timestamp = int(time.time()) if timestamp is None else int(timestamp)
    keys = [secret] if isinstance(secret, str | bytes) else list(secret)
    return {
        HEADER_ID: webhook_id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_SIGNATURE: " ".join(sign(k, webhook_id, timestamp, body) for k in keys),
    }


@dataclass(frozen=True)
class VerifiedDelivery:
    """What a successful verification vouches for."""

    webhook_id: str
    timestamp: int


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            if value and value.strip():
                return value.strip()
            break
    raise MissingHeaderError(f"missing required header {name!r}")


def _candidates(signature_header: str) -> list[bytes]:
    found: list[bytes] = []
    for entry in signature_header.split():
        version, _, value = entry.partition(",")
        if version != SIGNATURE_VERSION or not value:
            continue  # other schemes (e.g. v1a asymmetric) are not ours to check
        try:
            found.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue
    return found


def verify(
    secret: str | bytes | Iterable[str | bytes],
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> VerifiedDelivery:
    """Check a delivery's headers and raw body; raise a :class:`WebhookVerificationError` subclass if untrusted.

    `secret` may be several secrets (rotation): any one of them verifying is enough. Checks run in the
    order of the OpenAI SDK: headers present, timestamp parseable and within `tolerance` both ways,
    then the signatures (constant-time compare).
    """
    keys = [decode_secret(secret)] if isinstance(secret, str | bytes) else [decode_secret(s) for s in secret]
    if not keys:
        raise InvalidSecretError("no webhook secret configured")
    webhook_id = _header(headers, HEADER_ID)
    raw_timestamp = _header(headers, HEADER_TIMESTAMP)
    signature_header = _header(headers, HEADER_SIGNATURE)
    try:
        timestamp = int(raw_timestamp)
    except ValueError:
        raise MalformedHeaderError(f"{HEADER_TIMESTAMP} is not an integer") from None
    current = time.time() if now is None else now
    if current - timestamp > tolerance:
        raise StaleTimestampError(f"{HEADER_TIMESTAMP} is {int(current - timestamp)}s old (tolerance {tolerance:g}s)")
    if timestamp - current > tolerance:
        raise FutureTimestampError(
            f"{HEADER_TIMESTAMP} is {int(timestamp - current)}s in the future (tolerance {tolerance:g}s)"
        )
    candidates = _candidates(signature_header)
    if not candidates:
        raise MalformedHeaderError(f"{HEADER_SIGNATURE} holds no '{SIGNATURE_VERSION},<base64>' entry")
    signed = f"{webhook_id}.{timestamp}.".encode() + _as_bytes(body)
    # Compare every pair without an early exit, so timing does not tell which entry or secret matched.
    matched = False
    for key in keys:
        expected = hmac.new(key, signed, hashlib.sha256).digest()
        for candidate in candidates:
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureMismatchError("no webhook-signature entry matches the body")
    return VerifiedDelivery(webhook_id=webhook_id, timestamp=timestamp)


# --- replay protection --------------------------------------------------------------------------


class SeenIdStore(Protocol):
    """Remembers keys for a while; `add` is atomic, so two workers cannot both accept one delivery."""

    def add(self, key: str, ttl: float) -> bool:
        """Record `key` for `ttl` seconds; False if it is already recorded and not expired."""

    def discard(self, key: str) -> None:
        """Forget `key` (e.g. when processing the delivery failed and a retry must be accepted)."""


class InMemorySeenIds:
    """A bounded, thread-safe in-process store: enough for one API-server worker.

    When full, expired entries are dropped, then the oldest ones; size `max_entries` above the number of
    deliveries expected within the longest ttl used.
    """

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, float] = OrderedDict()

    def _purge(self, now: float) -> None:
        expired = [k for k, expiry in self._entries.items() if expiry <= now]
        for key in expired:
            del self._entries[key]

    def add(self, key: str, ttl: float) -> bool:
        now = self._clock()
        with self._lock:
            expiry = self._entries.get(key)
            if expiry is not None and expiry > now:
                return False
            if len(self._entries) >= self.max_entries:
                self._purge(now)
                while len(self._entries) >= self.max_entries:
                    self._entries.popitem(last=False)
            self._entries[key] = now + ttl
            self._entries.move_to_end(key)
            return True

    def discard(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


class SQLiteSeenIds:
    """A file-backed store shared by every process on one host (e.g. several API-server workers).

    One SQLite file with a primary key on the id: the insert is the atomic check. For API servers on
    several hosts put the file on storage they all lock correctly, or rely on the per-worker store and
    the intake's idempotent processing.
    """

    def __init__(self, path: str | os.PathLike[str], clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, expires_at REAL NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10, isolation_level=None)

    def add(self, key: str, ttl: float) -> bool:
        now = self._clock()
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM seen WHERE expires_at <= ?", (now,))
            inserted = db.execute(
                "INSERT OR IGNORE INTO seen (key, expires_at) VALUES (?, ?)", (key, now + ttl)
            ).rowcount
            db.execute("COMMIT")
            return inserted == 1
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def discard(self, key: str) -> None:
        db = self._connect()
        try:
            db.execute("DELETE FROM seen WHERE key = ?", (key,))
        finally:
            db.close()


def verify_once(
    secret: str | bytes | Iterable[str | bytes],
    headers: Mapping[str, str],
    body: bytes | str,
    seen: SeenIdStore,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> VerifiedDelivery:
    """`verify`, then refuse a second copy of the same signed delivery (:class:`ReplayedWebhookError`).

    The key is ``id.timestamp``: a captured request can only be replayed inside the tolerance window,
    so it is remembered for twice the tolerance. A sender's own retry is signed anew with a fresh
    timestamp and passes here; dedupe those on the webhook id where processing must happen once.
    """
    delivery = verify(secret, headers, body, tolerance=tolerance, now=now)
    if not seen.add(f"{delivery.webhook_id}.{delivery.timestamp}", ttl=2 * tolerance + 60):
        raise ReplayedWebhookError(f"delivery {delivery.webhook_id} at {delivery.timestamp} was already accepted")
    return delivery
