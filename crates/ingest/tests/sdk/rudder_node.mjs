// Sends calls.json through @rudderstack/rudder-sdk-node, RudderStack's official SDK, unmodified.
//
//   SIGHTLINE_SDK_NODE_MODULES=… node rudder_node.mjs BASE_URL WRITE_KEY
//
// The SDK posts batches to dataPlaneUrl + /v1/batch: gzip JSON (sent as
// application/x-www-form-urlencoded by axios), the write key as HTTP Basic user, `sentAt` on
// the batch and on each event, and `originalTimestamp` rather than `timestamp` when none is
// given. Its first call is sent at once, the rest on flush. Exits 1 if it reported an error.

import { args, describe, finish, loadCalls, loadSdk, sendAll } from './sdk_calls.mjs'

const { baseUrl, writeKey } = args()
const Analytics = loadSdk('@rudderstack/rudder-sdk-node')
const errors = []
const analytics = new Analytics(writeKey, {
  dataPlaneUrl: baseUrl,
  errorHandler: (error) => errors.push(`errorHandler: ${describe(error)}`),
})

const calls = loadCalls()
const deliveries = sendAll(analytics, calls, errors)
await finish('@rudderstack/rudder-sdk-node', calls, deliveries, errors, () => analytics.flush())
