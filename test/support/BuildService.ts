/**
 * Vitest global setup: builds the service bundle (`npm run build:service`, the same step
 * `npm start` runs) once before any test, so end-to-end tests run exactly what `npm start` runs,
 * from the sources as they are now.
 */
import { execFileSync } from "node:child_process"
import * as Path from "node:path"

export default function setup(): void {
  const root = Path.resolve(import.meta.dirname, "../..")
  execFileSync("npm", ["run", "--silent", "build:service"], { cwd: root, stdio: "inherit" })
}
