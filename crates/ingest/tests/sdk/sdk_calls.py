"""What the Python SDK drivers share: the calls of calls.json sent through an SDK's module API
(segment.analytics and rudderstack.analytics take the same arguments), and a record of every
error the SDK reports, through its `on_error` callback or its logger."""

import json
import logging
import sys
from datetime import datetime
from pathlib import Path

CALLS = Path(__file__).with_name("calls.json")


class ErrorLog(logging.Handler):
    """Keeps every warning and error the SDK logs."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(f"{record.name} {record.levelname}: {record.getMessage()}")


def args():
    """BASE_URL and WRITE_KEY from the command line."""
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} BASE_URL WRITE_KEY")
    return sys.argv[1], sys.argv[2]


def send(analytics, call):
    """Sends one call of calls.json with the SDK's own method for its type."""
    kind = call["type"]
    options = {"message_id": call["messageId"]}
    if "timestamp" in call:
        options["timestamp"] = datetime.fromisoformat(call["timestamp"])
    if kind != "alias":
        options["user_id"] = call.get("userId")
        options["anonymous_id"] = call.get("anonymousId")
    if kind == "track":
        return analytics.track(event=call["event"], properties=call.get("properties"), **options)
    if kind in ("page", "screen"):
        method = getattr(analytics, kind)
        return method(name=call.get("name"), properties=call.get("properties"), **options)
    if kind == "identify":
        return analytics.identify(traits=call.get("traits"), **options)
    if kind == "group":
        return analytics.group(group_id=call["groupId"], traits=call.get("traits"), **options)
    if kind == "alias":
        return analytics.alias(previous_id=call["previousId"], user_id=call["userId"], **options)
    raise ValueError(f"unknown call type {kind!r}")


def run(sdk, analytics, logger):
    """Sends every call, flushes, shuts the SDK down and prints a JSON summary on stdout.
    Exits 1 when the SDK reported any error."""
    log = ErrorLog()
    logging.getLogger(logger).addHandler(log)
    errors = []
    analytics.on_error = lambda error, batch: errors.append(
        f"on_error: {error!r} for {len(batch)} events"
    )
    calls = json.loads(CALLS.read_text())
    for call in calls:
        result = send(analytics, call)
        # segment.analytics answers (queued, message); rudderstack.analytics answers nothing.
        if isinstance(result, tuple) and not result[0]:
            errors.append(f"{call['messageId']} was not queued")
    analytics.shutdown()
    errors += log.messages
    print(json.dumps({"sdk": sdk, "sent": len(calls), "errors": errors}))
    sys.exit(1 if errors else 0)
