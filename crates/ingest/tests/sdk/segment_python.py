"""Sends calls.json through segment-analytics-python, Segment's official SDK, unmodified.

    segment_python.py BASE_URL WRITE_KEY

The SDK posts batches to `host` + /v1/batch: JSON (gzip only when `gzip = True`), the write key
as HTTP Basic user and as the body's `writeKey`, and a `sentAt`. Exits 1 if it reported an error.
"""

import segment.analytics as analytics

import sdk_calls

base_url, write_key = sdk_calls.args()
analytics.write_key = write_key
analytics.host = base_url
# Fail within seconds, not after the default 10 retries with backoff.
analytics.max_retries = 2
sdk_calls.run("segment-analytics-python", analytics, logger="segment")
