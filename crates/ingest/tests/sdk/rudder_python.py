"""Sends calls.json through rudder-sdk-python, RudderStack's official SDK, unmodified.

    rudder_python.py BASE_URL WRITE_KEY

The SDK posts batches to `dataPlaneUrl` + /v1/batch: gzip JSON, the write key as HTTP Basic
user, a `sentAt`, and an identify call's traits in `context.traits` only. Exits 1 if it
reported an error.
"""

import rudderstack.analytics as analytics

import sdk_calls

base_url, write_key = sdk_calls.args()
analytics.write_key = write_key
analytics.dataPlaneUrl = base_url
# Fail within seconds, not after the default 10 retries with backoff.
analytics.max_retries = 2
sdk_calls.run("rudder-sdk-python", analytics, logger="rudderstack")
