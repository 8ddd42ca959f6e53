// Interop test: the real nsqjs client library (npm `nsqjs` 0.13.x, used
// unchanged) against the real `triaged` binary.
//
// How to run (after `cargo build --bin triaged` in the workspace):
//
//   cd tests/interop/nsqjs && npm ci && node --test
//
// The broker binary is taken from $TRIAGED_BIN, or else
// `${CARGO_TARGET_DIR:-$HOME/.cache/triage/target}/debug/triaged`. The test
// starts it on 127.0.0.1 with port 0 for TCP and HTTP, learns the real ports
// from its `TCP: listening on ...` / `HTTP: listening on ...` stderr lines,
// and stops it at the end (SIGTERM, then SIGKILL after a deadline). Every wait
// is bounded. Set NSQJS_INTEROP_VERBOSE=1 to copy the broker's stderr through.

'use strict'

const {test, before, after} = require('node:test')
const assert = require('node:assert/strict')
const {spawn} = require('node:child_process')
const crypto = require('node:crypto')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const nsq = require('nsqjs')

const WAIT_MS = 10000 // upper bound for any single wait
const HOST = '127.0.0.1'

function triagedBin() {
  if (process.env.TRIAGED_BIN) return process.env.TRIAGED_BIN
  const target =
    process.env.CARGO_TARGET_DIR ||
    path.join(os.homedir(), '.cache', 'triage', 'target')
  return path.join(target, 'debug', 'triaged')
}

// Rejects with a descriptive error if `promise` has not settled in `ms`.
function bounded(promise, ms, what) {
  let timer
  const timeout = new Promise((_resolve, reject) => {
    timer = setTimeout(
      () => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)),
      ms
    )
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// ---------------------------------------------------------------- broker ---

const broker = {proc: null, dataDir: null, tcpPort: 0, httpPort: 0, log: ''}

function startBroker() {
  const bin = triagedBin()
  if (!fs.existsSync(bin)) {
    throw new Error(
      `triaged binary not found at ${bin}; run \`cargo build --bin triaged\` ` +
        'or set TRIAGED_BIN'
    )
  }
  broker.dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'triaged-nsqjs-'))
  const args = [
    `--tcp-address=${HOST}:0`,
    `--http-address=${HOST}:0`,
    `--data-path=${broker.dataDir}`,
  ]
  // On Linux, start the broker through util-linux `setpriv --pdeathsig KILL`
  // (it execs the broker, so the pid is the broker's): the kernel then kills
  // the broker even if this process dies without running any hook, e.g. when
  // `node --test`'s output is piped into `head` and the runner goes down.
  const setpriv = ['/usr/bin/setpriv', '/bin/setpriv'].find(
    (p) => process.platform === 'linux' && fs.existsSync(p)
  )
  const [cmd, argv] = setpriv
    ? [setpriv, ['--pdeathsig', 'KILL', '--', bin, ...args]]
    : [bin, args]
  const proc = spawn(cmd, argv, {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: {...process.env, NO_COLOR: '1'},
  })
  broker.proc = proc
  proc.stderr.setEncoding('utf8')

  return bounded(
    new Promise((resolve, reject) => {
      proc.stderr.on('data', (chunk) => {
        broker.log += chunk
        if (process.env.NSQJS_INTEROP_VERBOSE) process.stderr.write(chunk)
        // The log lines may carry ANSI colour codes; strip them first.
        // eslint-disable-next-line no-control-regex
        const plain = broker.log.replace(/\x1b\[[0-9;]*m/g, '')
        const tcp = plain.match(/TCP: listening on (\S+):(\d+)/)
        const http = plain.match(/HTTP: listening on (\S+):(\d+)/)
        if (tcp && http && !broker.tcpPort) {
          broker.tcpPort = Number(tcp[2])
          broker.httpPort = Number(http[2])
          resolve()
        }
      })
      proc.on('error', reject)
      proc.on('exit', (code, signal) =>
        reject(
          new Error(
            `triaged exited early (code ${code}, signal ${signal}):\n${broker.log}`
          )
        )
      )
    }),
    WAIT_MS,
    'triaged to log its listening addresses'
  )
}

async function stopBroker() {
  const proc = broker.proc
  if (proc && proc.exitCode === null && proc.signalCode === null) {
    const exited = new Promise((resolve) => proc.once('exit', resolve))
    proc.kill('SIGTERM')
    try {
      await bounded(exited, 5000, 'triaged to exit after SIGTERM')
    } catch (_e) {
      proc.kill('SIGKILL')
      await bounded(exited, 5000, 'triaged to exit after SIGKILL')
    }
  }
  if (broker.dataDir) fs.rmSync(broker.dataDir, {recursive: true, force: true})
}

// Best effort if this process ends without running the after() hook (an
// uncaught error, Ctrl-C, SIGTERM): kill the broker synchronously. Deaths that
// run no JavaScript at all (seen when the output is piped into `head`: the
// per-file child exits with code 7) are covered by --pdeathsig above.
function killBrokerNow() {
  const proc = broker.proc
  if (proc && proc.exitCode === null && proc.signalCode === null) {
    proc.kill('SIGKILL')
  }
  if (broker.dataDir) fs.rmSync(broker.dataDir, {recursive: true, force: true})
}
process.on('exit', killBrokerNow)
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(signal, () => {
    killBrokerNow()
    process.kill(process.pid, signal)
  })
}

before(startBroker)
after(stopBroker)

// ------------------------------------------------------------ nsqjs glue ---

// Unique per test run, so reruns against a persistent data dir cannot mix.
const RUN = `${process.pid}_${Date.now().toString(36)}`
const topicName = (tag) => `nsqjs_${tag}_${RUN}`

// Bodies that exercise framing: short text, every byte value (newlines and
// NULs included), an incompressible body and a compressible one, both larger
// than a snappy chunk (64 KiB) and than one 16 KiB socket read.
function payloads(tag, count = 10) {
  const bodies = []
  for (let i = 0; i < count; i++) bodies.push(Buffer.from(`${tag}-${i}`))
  const all = Buffer.alloc(256)
  for (let i = 0; i < 256; i++) all[i] = i
  bodies.push(Buffer.concat([Buffer.from(tag), all]))
  bodies.push(Buffer.concat([Buffer.from(tag), crypto.randomBytes(200 * 1024)]))
  bodies.push(Buffer.from(tag + 'abcdefgh'.repeat(40 * 1024)))
  return bodies
}

// Every body sent arrived exactly once, in any order.
function assertSameBodies(received, sent) {
  const key = (b) => Buffer.from(b).toString('base64')
  const short = (b) =>
    b.length > 40 ? `${b.subarray(0, 40)}...(${b.length} bytes)` : String(b)
  const want = new Map()
  for (const b of sent) want.set(key(b), (want.get(key(b)) || 0) + 1)
  const extra = []
  for (const b of received) {
    const k = key(b)
    if (want.get(k)) want.set(k, want.get(k) - 1)
    else extra.push(short(b))
  }
  const missing = []
  for (const b of sent) {
    if (want.get(key(b)) > 0) {
      missing.push(short(b))
      want.set(key(b), want.get(key(b)) - 1)
    }
  }
  assert.ok(
    missing.length === 0 && extra.length === 0,
    `missing ${missing.length} bodies ${JSON.stringify(missing)}, ` +
      `unexpected ${extra.length} bodies ${JSON.stringify(extra)}`
  )
}

async function openWriter(options = {}) {
  const writer = new nsq.Writer(HOST, broker.tcpPort, options)
  const ready = new Promise((resolve, reject) => {
    writer.once('ready', resolve)
    writer.once('error', reject)
    writer.once('closed', () => reject(new Error('writer closed early')))
  })
  writer.connect()
  await bounded(ready, WAIT_MS, 'the nsqjs Writer to become ready')
  // Later errors must not crash the process as unhandled 'error' events;
  // they surface through the publish callbacks.
  writer.on('error', () => {})
  return writer
}

function publish(writer, topic, msgs) {
  return bounded(
    new Promise((resolve, reject) =>
      writer.publish(topic, msgs, (err) => (err ? reject(err) : resolve()))
    ),
    WAIT_MS,
    `PUB/MPUB to ${topic} to be acknowledged`
  )
}

// nsqjs 0.13.0 quirk (client side, not the broker): Writer.deferPublish only
// works when the message is wrapped in a one-element array, as in its README
// example; a bare string/Buffer throws "Expect an array of messages to
// produceMessages" before anything is sent.
function deferPublish(writer, topic, msg, ms) {
  return bounded(
    new Promise((resolve, reject) =>
      writer.deferPublish(topic, [msg], ms, (err) =>
        err ? reject(err) : resolve()
      )
    ),
    WAIT_MS,
    `DPUB to ${topic} to be acknowledged`
  )
}

function closeWriter(writer) {
  const closed = new Promise((resolve) => writer.once('closed', resolve))
  writer.close()
  return bounded(closed, WAIT_MS, 'the Writer to close').catch(() => {})
}

// Starts a Reader and resolves once `handler` has called done() (or rejects on
// a Reader error / the deadline). handler(msg, done) must finish or requeue.
function consume(topic, channel, options, handler, what, ms = WAIT_MS) {
  const reader = new nsq.Reader(topic, channel, {
    nsqdTCPAddresses: [`${HOST}:${broker.tcpPort}`],
    maxInFlight: 10,
    ...options,
  })
  const result = new Promise((resolve, reject) => {
    reader.on('error', (err) => reject(new Error(`Reader error: ${err}`)))
    reader.on('message', (msg) => {
      try {
        handler(msg, resolve)
      } catch (err) {
        reject(err)
      }
    })
  })
  reader.connect()
  return bounded(result, ms, what).finally(() => reader.close())
}

// Receives exactly `count` messages (finishing each); returns them.
async function receiveN(topic, options, count, channel = 'ch') {
  const got = []
  await consume(
    topic,
    channel,
    options,
    (msg, done) => {
      got.push({
        body: Buffer.from(msg.body),
        attempts: msg.attempts,
        id: msg.id,
        timestamp: msg.timestamp,
        at: Date.now(),
      })
      msg.finish()
      if (got.length === count) done()
    },
    `${count} messages on ${topic}/${channel}`
  ).catch((err) => {
    err.message += ` (got ${got.length} of ${count})`
    throw err
  })
  return got
}

// ----------------------------------------------------------------- tests ---

test('Writer PUB + MPUB + DPUB, Reader receives all and FINs them', async () => {
  const topic = topicName('basic')
  const writer = await openWriter()
  const single = Buffer.from('single message')
  const many = payloads('mpub')
  const deferred = Buffer.from('deferred message')
  const DEFER_MS = 1000

  await publish(writer, topic, single) // one body: nsqjs sends PUB
  await publish(writer, topic, many) // an array: nsqjs sends MPUB
  const deferredAt = Date.now()
  await deferPublish(writer, topic, deferred, DEFER_MS) // DPUB
  await closeWriter(writer)

  const got = await receiveN(topic, {}, 1 + many.length + 1)
  assertSameBodies(
    got.map((m) => m.body),
    [single, ...many, deferred]
  )
  for (const m of got) {
    assert.equal(m.attempts, 1, `first delivery has attempts 1 (${m.body.subarray(0, 20)})`)
    assert.match(m.id, /^[0-9a-f]{16}$/, 'message id is 16 hex chars')
    // Timestamp: int64 nanoseconds since the epoch, set at publish time.
    const ageMs = Date.now() - Number(m.timestamp / 1000000n)
    assert.ok(ageMs >= -1000 && ageMs < 60000, `timestamp is recent (age ${ageMs} ms)`)
  }
  assert.equal(new Set(got.map((m) => m.id)).size, got.length, 'message ids are unique')

  const d = got.find((m) => m.body.equals(deferred))
  // queue-scan granularity in nsqd is ~100 ms; never early by more than that.
  assert.ok(
    d.at - deferredAt >= DEFER_MS - 100,
    `deferred message arrived after ${d.at - deferredAt} ms, defer was ${DEFER_MS} ms`
  )
})

test('Reader subscribed first receives live PUB/MPUB', async () => {
  const topic = topicName('live')
  const bodies = payloads('live')
  const got = []
  const received = consume(
    topic,
    'ch',
    {},
    (msg, done) => {
      got.push(Buffer.from(msg.body))
      msg.finish()
      if (got.length === bodies.length) done()
    },
    'live messages'
  )
  await sleep(300) // let the Reader SUB before publishing
  const writer = await openWriter()
  await publish(writer, topic, bodies[0])
  await publish(writer, topic, bodies.slice(1))
  await closeWriter(writer)
  await received
  assertSameBodies(got, bodies)
})

for (const [name, options] of [
  ['deflate', {deflate: true}],
  ['deflate level 1', {deflate: true, deflateLevel: 1}],
  ['snappy', {snappy: true}],
]) {
  test(`Reader with ${name} receives messages`, async () => {
    const topic = topicName(name.replace(/ /g, '_'))
    const bodies = payloads(name.replace(/ /g, '_'))
    const writer = await openWriter()
    await publish(writer, topic, bodies)
    await closeWriter(writer)

    // Peek at the negotiated connection so the test proves compression was
    // actually used rather than silently declined.
    const reader = new nsq.Reader(topic, 'ch', {
      nsqdTCPAddresses: [`${HOST}:${broker.tcpPort}`],
      maxInFlight: 10,
      ...options,
    })
    const got = []
    let identify = null
    let inflater = null
    const done = new Promise((resolve, reject) => {
      reader.on('error', (err) => reject(new Error(`Reader error: ${err}`)))
      reader.on('message', (msg) => {
        const conn = reader.readerRdy.connections[0].conn
        identify = conn.statemachine.identifyResponse
        inflater = conn.inflater
        got.push(Buffer.from(msg.body))
        msg.finish()
        if (got.length === bodies.length) resolve()
      })
    })
    reader.connect()
    try {
      await bounded(done, WAIT_MS, `${name} messages`).catch((err) => {
        err.message += ` (got ${got.length} of ${bodies.length})`
        throw err
      })
    } finally {
      reader.close()
    }
    assertSameBodies(got, bodies)
    if (options.deflate) {
      assert.equal(identify.deflate, true, 'IDENTIFY reply has deflate: true')
      assert.equal(identify.snappy, false, 'IDENTIFY reply has snappy: false')
      assert.equal(identify.deflate_level, options.deflateLevel || 6)
    } else {
      assert.equal(identify.snappy, true, 'IDENTIFY reply has snappy: true')
      assert.equal(identify.deflate, false, 'IDENTIFY reply has deflate: false')
    }
    assert.ok(inflater, 'the connection is wrapped in a decompressor')
  })
}

for (const [name, options] of [
  ['deflate', {deflate: true}],
  ['snappy', {snappy: true}],
]) {
  test(`Writer with ${name} publishes PUB + MPUB + DPUB`, async () => {
    const tag = `w_${name}`
    const topic = topicName(tag)
    const bodies = payloads(tag)
    const writer = await openWriter(options)
    assert.ok(writer.conn.inflater, 'the Writer connection is compressed')
    await publish(writer, topic, bodies[0])
    await publish(writer, topic, bodies.slice(1))
    await deferPublish(writer, topic, Buffer.from(`${tag}-deferred`), 200)
    await closeWriter(writer)
    const got = await receiveN(topic, {}, bodies.length + 1)
    assertSameBodies(
      got.map((m) => m.body),
      [...bodies, Buffer.from(`${tag}-deferred`)]
    )
  })
}

test('requeue(0) once: message comes back with attempts 2', async () => {
  const topic = topicName('requeue')
  const body = Buffer.from('requeue me')
  const writer = await openWriter()
  await publish(writer, topic, body)
  await closeWriter(writer)

  const deliveries = []
  // nsqjs backs off after requeue(); with maxBackoffDuration 128 s the first
  // backoff is ~3.6 s, inside the bound below.
  await consume(
    topic,
    'ch',
    {maxInFlight: 1},
    (msg, done) => {
      deliveries.push({id: msg.id, attempts: msg.attempts, body: Buffer.from(msg.body)})
      if (deliveries.length === 1) {
        msg.requeue(0)
      } else {
        msg.finish()
        done()
      }
    },
    'the requeued message to come back',
    15000
  ).catch((err) => {
    err.message += ` (deliveries: ${JSON.stringify(deliveries)})`
    throw err
  })
  assert.equal(deliveries.length, 2)
  assert.equal(deliveries[0].attempts, 1)
  assert.equal(deliveries[1].attempts, 2)
  assert.equal(deliveries[1].id, deliveries[0].id, 'same message id')
  assert.ok(deliveries[1].body.equals(body), 'same body')
})

test('HTTP /ping answers OK (the port learned from stderr is right)', async () => {
  const res = await bounded(
    fetch(`http://${HOST}:${broker.httpPort}/ping`),
    WAIT_MS,
    'GET /ping'
  )
  assert.equal(res.status, 200)
  assert.equal((await res.text()).trim(), 'OK')
})
