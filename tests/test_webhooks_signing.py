"""Standard Webhooks signing and verification, replay protection, and interop with the OpenAI SDK's verifier."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import openai
import pytest

from airflow_batchwork.webhooks.signing import (
    FutureTimestampError,
    InMemorySeenIds,
    InvalidSecretError,
    MalformedHeaderError,
    MissingHeaderError,
    ReplayedWebhookError,
    SignatureMismatchError,
    SQLiteSeenIds,
    StaleTimestampError,
    decode_secret,
    generate_secret,
    sign,
    signed_headers,
    verify,
    verify_once,
)

SECRET = "whsec_" + base64.b64encode(b"a very secret key of 32 bytes!!!").decode()
BODY = json.dumps({"id": "evt_1", "object": "event", "type": "batch.completed", "created_at": 1,
                   "data": {"id": "batch_1"}}).encode()


def test_valid_delivery_verifies() -> None:
    headers = signed_headers(SECRET, BODY, webhook_id="msg_1")
    delivery = verify(SECRET, headers, BODY)
    assert (delivery.webhook_id, delivery.timestamp) == ("msg_1", int(headers["webhook-timestamp"]))
    assert headers["webhook-signature"].startswith("v1,")


def test_whsec_secret_is_base64_decoded_and_raw_secret_is_used_as_bytes() -> None:
    assert decode_secret(SECRET) == b"a very secret key of 32 bytes!!!"
    assert decode_secret("plain-secret") == b"plain-secret"
    # The same key as whsec_ or raw produces the same signature.
    raw = "a very secret key of 32 bytes!!!"
    assert sign(SECRET, "msg_1", 1700000000, BODY) == sign(raw, "msg_1", 1700000000, BODY)
    headers = signed_headers(raw, BODY)
    verify(raw, headers, BODY)
    verify(SECRET, headers, BODY)


def test_wrong_secret_is_refused() -> None:
    headers = signed_headers(generate_secret(), BODY)
    with pytest.raises(SignatureMismatchError):
        verify(SECRET, headers, BODY)


def test_tampered_body_is_refused() -> None:
    headers = signed_headers(SECRET, BODY)
    with pytest.raises(SignatureMismatchError):
        verify(SECRET, headers, BODY.replace(b"batch_1", b"batch_2"))


def test_stale_and_future_timestamps_are_refused_with_300s_tolerance() -> None:
    now = time.time()
    old = signed_headers(SECRET, BODY, timestamp=int(now) - 301)
    with pytest.raises(StaleTimestampError):
        verify(SECRET, old, BODY, now=now)
    future = signed_headers(SECRET, BODY, timestamp=int(now) + 302)
    with pytest.raises(FutureTimestampError):
        verify(SECRET, future, BODY, now=now)
    # Inside the window, both ways.
    verify(SECRET, signed_headers(SECRET, BODY, timestamp=int(now) - 299), BODY, now=now)
    verify(SECRET, signed_headers(SECRET, BODY, timestamp=int(now) + 299), BODY, now=now)


def test_replayed_delivery_is_refused() -> None:
    seen = InMemorySeenIds()
    headers = signed_headers(SECRET, BODY, webhook_id="msg_replay")
    verify_once(SECRET, headers, BODY, seen)
    with pytest.raises(ReplayedWebhookError):
        verify_once(SECRET, headers, BODY, seen)
    # The sender's own retry is signed anew (new timestamp): a different delivery of the same id.
    retry = signed_headers(SECRET, BODY, webhook_id="msg_replay", timestamp=int(headers["webhook-timestamp"]) + 5)
    verify_once(SECRET, retry, BODY, seen)


def test_multiple_signatures_one_valid_is_accepted() -> None:
    headers = signed_headers([generate_secret(), SECRET], BODY)
    assert len(headers["webhook-signature"].split()) == 2
    verify(SECRET, headers, BODY)
    # Unknown schemes and garbage entries are skipped, not fatal.
    headers["webhook-signature"] = "v1a,abc v2,xyz v1,!!! " + headers["webhook-signature"]
    verify(SECRET, headers, BODY)
    # Several candidates, none valid.
    bad = signed_headers([generate_secret(), generate_secret()], BODY)
    with pytest.raises(SignatureMismatchError):
        verify(SECRET, bad, BODY)


def test_rotation_accepts_any_configured_secret() -> None:
    new = generate_secret()
    verify([new, SECRET], signed_headers(SECRET, BODY), BODY)
    verify([new, SECRET], signed_headers(new, BODY), BODY)


def test_missing_and_malformed_headers() -> None:
    headers = signed_headers(SECRET, BODY)
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        partial = {k: v for k, v in headers.items() if k != name}
        with pytest.raises(MissingHeaderError, match=name):
            verify(SECRET, partial, BODY)
    with pytest.raises(MalformedHeaderError):
        verify(SECRET, {**headers, "webhook-timestamp": "yesterday"}, BODY)
    with pytest.raises(MalformedHeaderError):
        verify(SECRET, {**headers, "webhook-signature": "v2,abc"}, BODY)
    # Header names are case-insensitive, as in HTTP.
    verify(SECRET, {k.upper(): v for k, v in headers.items()}, BODY)


def test_bad_secrets() -> None:
    with pytest.raises(InvalidSecretError):
        decode_secret("whsec_not*base64")
    with pytest.raises(InvalidSecretError):
        decode_secret("")


def test_openai_sdk_verifies_our_signatures() -> None:
    client = openai.OpenAI(api_key="unused", webhook_secret=SECRET)
    headers = signed_headers(SECRET, BODY)
    client.webhooks.verify_signature(BODY, headers)
    event = client.webhooks.unwrap(BODY, headers)
    assert event.type == "batch.completed" and event.data.id == "batch_1"
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.verify_signature(BODY + b" ", headers)


def test_in_memory_store_expires_and_stays_bounded() -> None:
    now = [1000.0]
    seen = InMemorySeenIds(max_entries=3, clock=lambda: now[0])
    assert seen.add("a", ttl=10) and not seen.add("a", ttl=10)
    now[0] += 11
    assert seen.add("a", ttl=10)
    for key in "bcd":
        assert seen.add(key, ttl=100)
    assert len(seen) == 3
    seen.discard("d")
    assert seen.add("d", ttl=100)


def test_sqlite_store_is_shared_between_instances(tmp_path: Path) -> None:
    # An injected clock: expiry is tested without wall-clock margins (a loaded box is not a timer).
    now = [time.time()]
    first = SQLiteSeenIds(tmp_path / "seen.db", clock=lambda: now[0])
    second = SQLiteSeenIds(tmp_path / "seen.db", clock=lambda: now[0])
    headers = signed_headers(SECRET, BODY)
    verify_once(SECRET, headers, BODY, first)
    with pytest.raises(ReplayedWebhookError):
        verify_once(SECRET, headers, BODY, second)
    assert second.add("k", ttl=10) and not first.add("k", ttl=10)
    now[0] += 9.9
    assert not first.add("k", ttl=10)
    now[0] += 0.2
    assert first.add("k", ttl=10)
