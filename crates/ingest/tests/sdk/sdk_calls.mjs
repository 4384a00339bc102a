// What the Node SDK drivers share: the SDK loaded from the installed SDK folder, the calls of
// calls.json sent through methods that take a Segment-style object and a callback
// (@segment/analytics-node and @rudderstack/rudder-sdk-node both do), and a record of every
// error the SDK reports.

import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'

/** How long the SDK gets to confirm every call after the flush. */
const CONFIRM_WITHIN_MS = 30_000

function fail(message) {
  console.error(message)
  process.exit(2)
}

/** BASE_URL and WRITE_KEY from the command line. */
export function args() {
  const [baseUrl, writeKey] = process.argv.slice(2)
  if (!baseUrl || !writeKey) fail(`usage: node ${process.argv[1]} BASE_URL WRITE_KEY`)
  return { baseUrl, writeKey }
}

/** Loads an SDK from $SIGHTLINE_SDK_NODE_MODULES (installed by scripts/lib/sdks.sh). */
export function loadSdk(name) {
  const modules = process.env.SIGHTLINE_SDK_NODE_MODULES
  if (!modules) {
    fail('SIGHTLINE_SDK_NODE_MODULES is not set: scripts/test installs the SDKs (scripts/lib/sdks.sh)')
  }
  return createRequire(join(modules, '..', 'package.json'))(name)
}

export function loadCalls() {
  return JSON.parse(readFileSync(new URL('./calls.json', import.meta.url), 'utf8'))
}

/** A readable account of an SDK error: an HTTP answer, a Segment delivery failure, or an Error. */
export function describe(error) {
  if (error?.response) {
    return `HTTP ${error.response.status}: ${JSON.stringify(error.response.data)}`
  }
  if (error?.reason) return `${error.code ?? 'error'}: ${describe(error.reason)}`
  return error instanceof Error ? error.message : String(error)
}

/**
 * Sends every call with the SDK's method for its type; each promise settles when the SDK calls
 * the call's callback, which it does once the call was delivered or given up.
 */
export function sendAll(analytics, calls, errors) {
  return calls.map(
    ({ type, timestamp, ...fields }) =>
      new Promise((resolve) => {
        const message = timestamp ? { ...fields, timestamp: new Date(timestamp) } : fields
        analytics[type](message, (error) => {
          if (error) errors.push(`${fields.messageId}: ${describe(error)}`)
          resolve()
        })
      }),
  )
}

/** Flushes, waits for every callback, prints a JSON summary on stdout; exits 1 on any error. */
export async function finish(sdk, calls, deliveries, errors, flush) {
  try {
    await flush()
  } catch (error) {
    errors.push(`flush: ${describe(error)}`)
  }
  let timer
  const timeout = new Promise((resolve) => {
    timer = setTimeout(() => resolve('timeout'), CONFIRM_WITHIN_MS)
  })
  if ((await Promise.race([Promise.all(deliveries), timeout])) === 'timeout') {
    errors.push(`not every call was confirmed within ${CONFIRM_WITHIN_MS} ms`)
  }
  clearTimeout(timer)
  console.log(JSON.stringify({ sdk, sent: calls.length, errors }))
  process.exit(errors.length ? 1 : 0)
}
