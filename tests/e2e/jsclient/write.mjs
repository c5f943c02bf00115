// Drives the official @influxdata/influxdb-client against the gateway; prints one JSON result.
// usage: node write.mjs URL TOKEN BUCKET NOW_S
import { HttpError, InfluxDB, Point } from '@influxdata/influxdb-client'

const [url, token, bucket, nowArg] = process.argv.slice(2)
const now = Number(nowArg)
const influx = new InfluxDB({ url, token })

// 1. Points through the batching write API: batches of 50, gzip above the client's threshold
//    (1000 bytes), second precision, no retries (a failure must show here, not be retried away).
const batched = influx.getWriteApi('any-org', bucket, 's', { batchSize: 50, maxRetries: 0 })
batched.useDefaultTags({ client: 'js' })
for (let i = 0; i < 120; i++) {
  batched.writePoint(
    new Point('cpu')
      .tag('host', `h${i % 3}`)
      .floatField('usage', i * 0.5)
      .intField('n', i)
      .timestamp(now - 120 + i)
  )
}
await batched.close()

// 2. A batch whose second line is broken: the client reports the gateway's 400.
const partial = influx.getWriteApi('any-org', bucket + '_bad', 's', { maxRetries: 0 })
partial.writeRecords([`ok v=1 ${now}`, `broken v= ${now}`, `ok v=3 ${now}`])
let error = null
try {
  await partial.close()
} catch (e) {
  if (!(e instanceof HttpError)) throw e
  error = { status: e.statusCode, body: e.json ?? e.body, contentType: e.contentType ?? null }
}
console.log(JSON.stringify({ batched: 120, error }))
