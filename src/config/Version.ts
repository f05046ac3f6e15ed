import { readFileSync } from "node:fs"

/** The package version, read next to this module so it does not depend on the working directory. */
export const version: string = (
  JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }
).version
