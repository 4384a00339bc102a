// Sends calls.json through @segment/analytics-node, Segment's official SDK, unmodified.
//
//   SIGHTLINE_SDK_NODE_MODULES=… node segment_node.mjs BASE_URL WRITE_KEY
//
// The SDK posts batches to new URL('/v1/batch', host): JSON, the write key as HTTP Basic user
// and as the body's `writeKey`, and a `sentAt`. Exits 1 if it reported an error.

import { args, finish, loadCalls, loadSdk, sendAll, describe } from './sdk_calls.mjs'

const { baseUrl, writeKey } = args()
const { Analytics } = loadSdk('@segment/analytics-node')
// Fail within seconds, not after the default 10 retries with backoff.
const analytics = new Analytics({ writeKey, host: baseUrl, maxRetries: 2 })
const errors = []
analytics.on('error', (error) => errors.push(`error event: ${describe(error)}`))

const calls = loadCalls()
const deliveries = sendAll(analytics, calls, errors)
await finish('@segment/analytics-node', calls, deliveries, errors, () =>
  analytics.closeAndFlush({ timeout: 20_000 }),
)
