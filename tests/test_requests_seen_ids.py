"""Duplicate custom_ids are found with a fixed-size filter and 16 bytes per id (values/requests.py `SeenIds`),
exactly: the same errors as a dict of the ids gave, also when every hash collides."""

from __future__ import annotations

import pytest

from airflow_batchwork.core import parse_model
from airflow_batchwork.values.errors import RequestValidationError
from airflow_batchwork.values.requests import SeenIds, iter_requests

REF = parse_model("openai/gpt-4o-mini")


def _error(requests: list[dict[str, str]]) -> str:
    with pytest.raises(RequestValidationError) as info:
        list(iter_requests(requests, ref=REF))
    return str(info.value)


@pytest.fixture(params=["real hashes", "colliding hashes"])
def hashing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(SeenIds, "RUN", 3)  # several sorted runs even for a few ids
    if request.param == "colliding hashes":
        monkeypatch.setattr(SeenIds, "hash", staticmethod(lambda value: len(value) % 2))
    return str(request.param)


def test_duplicates_name_both_positions(hashing: str) -> None:
    requests = [{"custom_id": f"id-{i}", "prompt": "p"} for i in range(20)]
    requests[13]["custom_id"] = "id-2"  # in an earlier run
    requests[19]["custom_id"] = "id-17"  # still pending
    message = _error(requests)
    assert "requests[13].custom_id" in message and "duplicate custom_id 'id-2' (also at requests[2])" in message
    assert "requests[19].custom_id: duplicate custom_id 'id-17' (also at requests[17])" in message


def test_distinct_ids_pass(hashing: str) -> None:
    requests = [{"custom_id": f"c{i}", "prompt": "p"} for i in range(50)]
    assert [r.custom_id for _, r in iter_requests(requests, ref=REF)] == [f"c{i}" for i in range(50)]


def test_first_position_is_named_for_a_third_copy(hashing: str) -> None:
    requests = [{"custom_id": "same", "prompt": "p"}, {"custom_id": "other", "prompt": "p"},
                {"custom_id": "same", "prompt": "p"}, {"custom_id": "same", "prompt": "p"}]
    message = _error(requests)
    assert "requests[2].custom_id: duplicate custom_id 'same' (also at requests[0])" in message
    assert "requests[3].custom_id: duplicate custom_id 'same' (also at requests[0])" in message
