/**
 * Runs a server entry inside this process with a memory probe attached, so a bench script can read
 * the server's own heap from outside:
 *
 *   HEAP_PROBE_FILE=/tmp/x.json node --expose-gc bench/lib/heap-probe.ts src/main.ts <args…>
 *
 * On SIGUSR2 it runs a full GC (twice, so weak/finalised objects are gone too; needs
 * --expose-gc, reported as `gc: false` otherwise) and writes `process.memoryUsage()` as JSON to
 * $HEAP_PROBE_FILE (written to a temp file and renamed, so a reader never sees half a file).
 * With $HEAP_PROBE_SNAPSHOT_DIR set it also writes a heap snapshot there (slow; for finding
 * per-connection hot spots with bench/heap-top.ts).
 *
 * The entry sees the argv it would see when started directly (`argv[1]` = the entry).
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { pathToFileURL } from "node:url"
import * as v8 from "node:v8"

const entry = process.argv[2]
const out = process.env["HEAP_PROBE_FILE"]
if (entry === undefined || out === undefined || out === "") {
  process.stderr.write("usage: HEAP_PROBE_FILE=<file> node --expose-gc bench/lib/heap-probe.ts <entry.ts> [args…]\n")
  process.exit(2)
}
const snapshotDir = process.env["HEAP_PROBE_SNAPSHOT_DIR"]
process.argv.splice(1, 1)

let seq = 0
process.on("SIGUSR2", () => {
  const gc = (globalThis as { gc?: () => void }).gc
  gc?.()
  gc?.()
  seq++
  let snapshot: string | undefined
  if (snapshotDir !== undefined && snapshotDir !== "") {
    snapshot = v8.writeHeapSnapshot(path.join(snapshotDir, `probe-${process.pid}-${seq}.heapsnapshot`))
  }
  const tmp = `${out}.tmp`
  fs.writeFileSync(tmp, JSON.stringify({ seq, gc: gc !== undefined, ...process.memoryUsage(), snapshot }))
  fs.renameSync(tmp, out)
})

await import(pathToFileURL(path.resolve(entry)).href)
