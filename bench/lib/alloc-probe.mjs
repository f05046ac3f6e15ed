// Preloaded into a server under test (`node --import ./bench/lib/alloc-probe.mjs …`): V8's sampling
// heap profiler, counting objects that minor and major GCs already collected too — i.e. what the
// server allocates, which is what drives its scavenges. The first SIGUSR2 starts sampling, the
// second writes the profile to $ALLOC_PROBE_FILE (`.heapprofile` JSON, readable by
// bench/alloc-top.ts or Chrome DevTools).
import * as fs from "node:fs"
import { Session } from "node:inspector"

const file = process.env.ALLOC_PROBE_FILE
const session = new Session()
session.connect()
let sampling = false

process.on("SIGUSR2", () => {
  if (!sampling) {
    sampling = true
    session.post("HeapProfiler.startSampling", {
      samplingInterval: 1024,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: true
    })
    return
  }
  session.post("HeapProfiler.stopSampling", (error, result) => {
    if (error !== null) process.stderr.write(`alloc-probe: ${error.message}\n`)
    else if (file !== undefined) fs.writeFileSync(file, JSON.stringify(result.profile))
  })
})
