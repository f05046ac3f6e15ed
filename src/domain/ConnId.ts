import { randomBytes } from "node:crypto"

/**
 * Relay-assigned connection ids (SPEC §0): `client-<server-id>-<8 hex>` for phones and
 * `server-<server-id>-<8 hex>` for binaries, 4 bytes from a CSPRNG.
 *
 * A phone conn_id is never reused while the process lives: every issued suffix is remembered per
 * server-id (a number in a Set, ~20 bytes per phone connection ever registered). A binary could
 * otherwise mistake a new phone for one it served before. Phone ids are only issued to phones
 * whose server-id has a binary, so a stranger cannot grow this set on their own.
 * Binary ids appear only in logs and are not tracked.
 */
const issuedPhoneSuffixes = new Map<string, Set<number>>()

const suffixHex = (n: number): string => n.toString(16).padStart(8, "0")

export const phoneConnId = (serverId: string): string => {
  let issued = issuedPhoneSuffixes.get(serverId)
  if (issued === undefined) {
    issued = new Set()
    issuedPhoneSuffixes.set(serverId, issued)
  }
  for (;;) {
    const n = randomBytes(4).readUInt32BE(0)
    if (!issued.has(n)) {
      issued.add(n)
      return `client-${serverId}-${suffixHex(n)}`
    }
  }
}

export const binaryConnId = (serverId: string): string => `server-${serverId}-${randomBytes(4).toString("hex")}`
