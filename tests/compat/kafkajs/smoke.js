// Smoke test of kafkajs, a Kafka client written in plain JavaScript that
// shares no code with librdkafka, against a running Weir broker.
//
// Usage: node smoke.js HOST:PORT (tests/compat/kafkajs.sh starts the broker).
// Each numbered check prints `ok N ...` or `FAIL N ...`; the last line is
// `kafkajs: N passed, M failed`, and the exit status is 1 if any check failed.
'use strict'

const { Kafka, logLevel, Partitioners } = require('kafkajs')

const bootstrap = process.argv[2]
if (!bootstrap) {
  console.error('usage: node smoke.js HOST:PORT')
  process.exit(2)
}

// Bounds on every wait, so a broker that never answers fails a check instead
// of hanging the suite.
const STEP_TIMEOUT_MS = 30000
const GROUP_CONSUME_TIMEOUT_MS = 45000
const SMOKE_TIMEOUT_MS = 240000

const PARTITIONS = 3
// Per partition: records stamped an hour ago, then records stamped now.
const OLD_PER_PARTITION = 4
const NEW_PER_PARTITION = 3
const PER_PARTITION = OLD_PER_PARTITION + NEW_PER_PARTITION

const suffix = `${Date.now()}-${Math.floor(Math.random() * 1e6)}`
const topic = `kafkajs-smoke-${suffix}`
const groupId = `kafkajs-smoke-group-${suffix}`
const nowMs = Date.now()
const oldTimestampMs = nowMs - 3600 * 1000
// Between the two generations of records: a look-up by this timestamp must
// land on the first new record of each partition.
const boundaryMs = nowMs - 1800 * 1000

// kafkajs logs its own errors; indent them under the check they belong to.
const logCreator = () => ({ namespace, label, log }) => {
  const { message, error } = log
  console.log(`     kafkajs ${label} ${namespace}: ${message}${error ? ` (${error})` : ''}`)
}

const kafka = new Kafka({
  clientId: 'weir-kafkajs-smoke',
  brokers: [bootstrap],
  connectionTimeout: 5000,
  requestTimeout: 10000,
  retry: { retries: 3, initialRetryTime: 200, maxRetryTime: 2000 },
  logLevel: logLevel.ERROR,
  logCreator,
})

function withTimeout (promise, ms, what) {
  let timer
  const timeout = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

function assert (condition, message) {
  if (!condition) throw new Error(message)
}

function sameJson (actual, expected, what) {
  const a = JSON.stringify(actual)
  const e = JSON.stringify(expected)
  assert(a === e, `${what}: expected ${e}, got ${a}`)
}

let passed = 0
let failed = 0
let number = 0

async function check (name, body) {
  number += 1
  try {
    await withTimeout(Promise.resolve().then(body), STEP_TIMEOUT_MS + GROUP_CONSUME_TIMEOUT_MS, name)
    passed += 1
    console.log(`ok   ${number} ${name}`)
  } catch (err) {
    failed += 1
    console.log(`FAIL ${number} ${name}`)
    console.log(`     ${err && err.stack ? err.stack.split('\n').slice(0, 4).join('\n     ') : err}`)
  }
}

function expectedRecord (partition, i) {
  const old = i < OLD_PER_PARTITION
  return {
    key: `key-${partition}-${i}`,
    value: `value-${partition}-${i}`,
    // A repeated header key: Kafka keeps both values, in order.
    headers: { trace: `t-${partition}-${i}`, tag: ['first', 'second'] },
    timestamp: String(old ? oldTimestampMs + i : nowMs + i),
  }
}

function headerValue (value) {
  if (Array.isArray(value)) return value.map(v => v.toString())
  return value === undefined ? undefined : value.toString()
}

async function main () {
  const admin = kafka.admin()
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner })
  const consumer = kafka.consumer({
    groupId,
    sessionTimeout: 10000,
    rebalanceTimeout: 10000,
    heartbeatInterval: 1000,
    maxWaitTimeInMs: 500,
  })

  await check('admin connects and creates a topic with 3 partitions', async () => {
    await withTimeout(admin.connect(), STEP_TIMEOUT_MS, 'admin.connect')
    const created = await withTimeout(
      admin.createTopics({ topics: [{ topic, numPartitions: PARTITIONS }], waitForLeaders: true }),
      STEP_TIMEOUT_MS, 'admin.createTopics')
    assert(created === true, `createTopics returned ${created}, expected true (a new topic)`)
    const topics = await withTimeout(admin.listTopics(), STEP_TIMEOUT_MS, 'admin.listTopics')
    assert(topics.includes(topic), `listTopics does not include ${topic}: ${JSON.stringify(topics)}`)
    const metadata = await withTimeout(admin.fetchTopicMetadata({ topics: [topic] }), STEP_TIMEOUT_MS,
      'admin.fetchTopicMetadata')
    const partitions = metadata.topics[0].partitions.map(p => p.partitionId).sort()
    sameJson(partitions, [0, 1, 2], 'partition ids')
  })

  await check('producer sends keyed records with headers to each partition', async () => {
    await withTimeout(producer.connect(), STEP_TIMEOUT_MS, 'producer.connect')
    for (let partition = 0; partition < PARTITIONS; partition++) {
      const messages = []
      for (let i = 0; i < PER_PARTITION; i++) {
        messages.push({ partition, ...expectedRecord(partition, i) })
      }
      const result = await withTimeout(producer.send({ topic, acks: -1, messages }), STEP_TIMEOUT_MS,
        'producer.send')
      assert(result.length === 1, `send answered for ${result.length} partitions, expected 1`)
      sameJson({ partition: result[0].partition, errorCode: result[0].errorCode, baseOffset: result[0].baseOffset },
        { partition, errorCode: 0, baseOffset: '0' }, 'send result')
    }
  })

  await check('admin.fetchTopicOffsets gives log-start 0 and the high watermark', async () => {
    const offsets = await withTimeout(admin.fetchTopicOffsets(topic), STEP_TIMEOUT_MS, 'admin.fetchTopicOffsets')
    const got = offsets.map(({ partition, low, high }) => ({ partition, low, high }))
      .sort((a, b) => a.partition - b.partition)
    const want = [0, 1, 2].map(partition => ({ partition, low: '0', high: String(PER_PARTITION) }))
    sameJson(got, want, 'offsets')
  })

  await check('admin.fetchTopicOffsetsByTimestamp finds the first record at or after a time', async () => {
    const atBoundary = await withTimeout(admin.fetchTopicOffsetsByTimestamp(topic, boundaryMs), STEP_TIMEOUT_MS,
      'admin.fetchTopicOffsetsByTimestamp')
    sameJson(atBoundary.map(({ partition, offset }) => ({ partition, offset })).sort((a, b) => a.partition - b.partition),
      [0, 1, 2].map(partition => ({ partition, offset: String(OLD_PER_PARTITION) })), 'offsets at the boundary')
    const beforeAll = await withTimeout(admin.fetchTopicOffsetsByTimestamp(topic, oldTimestampMs - 1000),
      STEP_TIMEOUT_MS, 'admin.fetchTopicOffsetsByTimestamp')
    sameJson(beforeAll.map(({ offset }) => offset), ['0', '0', '0'], 'offsets before every record')
    // No record is this late: Kafka answers -1, which kafkajs turns into the high watermark.
    const afterAll = await withTimeout(admin.fetchTopicOffsetsByTimestamp(topic, nowMs + 3600 * 1000),
      STEP_TIMEOUT_MS, 'admin.fetchTopicOffsetsByTimestamp')
    sameJson(afterAll.map(({ offset }) => offset), [PER_PARTITION, PER_PARTITION, PER_PARTITION].map(String),
      'offsets after every record')
  })

  await check('a consumer group reads every record from the beginning, with keys and headers', async () => {
    const received = []
    let resolveAll
    const all = new Promise(resolve => { resolveAll = resolve })
    await withTimeout(consumer.connect(), STEP_TIMEOUT_MS, 'consumer.connect')
    await withTimeout(consumer.subscribe({ topics: [topic], fromBeginning: true }), STEP_TIMEOUT_MS,
      'consumer.subscribe')
    await withTimeout(consumer.run({
      autoCommit: true,
      eachMessage: async ({ partition, message }) => {
        received.push({ partition, message })
        if (received.length >= PARTITIONS * PER_PARTITION) resolveAll()
      },
    }), STEP_TIMEOUT_MS, 'consumer.run')
    await withTimeout(all, GROUP_CONSUME_TIMEOUT_MS,
      `waiting for ${PARTITIONS * PER_PARTITION} records (got ${received.length} so far)`)
    for (let partition = 0; partition < PARTITIONS; partition++) {
      const got = received.filter(r => r.partition === partition).map(({ message }) => ({
        offset: message.offset,
        key: message.key && message.key.toString(),
        value: message.value && message.value.toString(),
        headers: { trace: headerValue(message.headers.trace), tag: headerValue(message.headers.tag) },
        timestamp: message.timestamp,
      }))
      const want = []
      for (let i = 0; i < PER_PARTITION; i++) want.push({ offset: String(i), ...expectedRecord(partition, i) })
      sameJson(got, want, `partition ${partition}`)
    }
  })

  await check('the group commits its offsets (admin.fetchOffsets)', async () => {
    // autoCommit commits after each batch; poll until the last commit shows.
    const deadline = Date.now() + STEP_TIMEOUT_MS
    let got
    for (;;) {
      const offsets = await withTimeout(admin.fetchOffsets({ groupId, topics: [topic] }), STEP_TIMEOUT_MS,
        'admin.fetchOffsets')
      got = offsets[0].partitions.map(({ partition, offset }) => ({ partition, offset }))
        .sort((a, b) => a.partition - b.partition)
      if (got.every(({ offset }) => offset === String(PER_PARTITION))) return
      assert(Date.now() < deadline, `committed offsets ${JSON.stringify(got)}, expected ${PER_PARTITION} on each partition`)
      await new Promise(resolve => setTimeout(resolve, 200))
    }
  })

  for (const [name, client] of [['consumer', consumer], ['producer', producer], ['admin', admin]]) {
    await withTimeout(client.disconnect(), STEP_TIMEOUT_MS, `${name}.disconnect`)
      .catch(err => console.log(`     ${name}.disconnect: ${err.message}`))
  }
}

const watchdog = setTimeout(() => {
  console.log(`FAIL the smoke test did not finish within ${SMOKE_TIMEOUT_MS} ms`)
  console.log(`kafkajs: ${passed} passed, ${failed + 1} failed`)
  process.exit(1)
}, SMOKE_TIMEOUT_MS)

main()
  .catch(err => {
    failed += 1
    console.log(`FAIL ${err && err.stack ? err.stack : err}`)
  })
  .finally(() => {
    clearTimeout(watchdog)
    console.log(`kafkajs: ${passed} passed, ${failed} failed`)
    process.exit(failed === 0 ? 0 : 1)
  })
