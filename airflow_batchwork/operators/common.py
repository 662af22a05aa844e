"""What both operator modules share (`batch` and its resubmission rounds, `resubmit`): the deferral backstop,
trigger-event validation and handle timestamps. It imports neither of them, so they do not import each other."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from airflow.sdk.exceptions import AirflowException

from airflow_batchwork.triggers.batch import EVENT_STATUSES

# The deferral backstop outlives the trigger's own deadline, so the trigger gets to cancel first.
BACKSTOP_MARGIN = 60


def validate_event(event: Any) -> dict[str, Any]:
    """Refuse an event that did not come from BatchCompleteTrigger."""
    if not isinstance(event, Mapping) or event.get("status") not in EVENT_STATUSES:
        raise AirflowException(f"unexpected trigger event: {event!r}")
    return dict(event)


def parse_time(value: str) -> float:
    """A handle's ISO timestamp as epoch seconds (now, when it cannot be read)."""
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time()
