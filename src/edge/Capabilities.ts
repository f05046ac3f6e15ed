/**
 * Production hardening on Linux (EDGE.md §4): with `PYRYCODE_RELAY_PRODUCTION=1` the relay refuses
 * to start while its effective capability set holds anything but `CAP_NET_BIND_SERVICE` (the one
 * it may need, to bind :443 and :80). The set is the `CapEff` line of `/proc/self/status`, a
 * 64-bit hexadecimal mask; bit n is capability n of `include/uapi/linux/capability.h`.
 *
 * Parsing and judging are pure (tested on fixed strings); only `readProcStatus` touches the file.
 */
import { readFileSync } from "node:fs"
import * as Result from "effect/Result"

/** Capability numbers 0..40 in kernel order. */
const NAMES: ReadonlyArray<string> = [
  "CAP_CHOWN",
  "CAP_DAC_OVERRIDE",
  "CAP_DAC_READ_SEARCH",
  "CAP_FOWNER",
  "CAP_FSETID",
  "CAP_KILL",
  "CAP_SETGID",
  "CAP_SETUID",
  "CAP_SETPCAP",
  "CAP_LINUX_IMMUTABLE",
  "CAP_NET_BIND_SERVICE",
  "CAP_NET_BROADCAST",
  "CAP_NET_ADMIN",
  "CAP_NET_RAW",
  "CAP_IPC_LOCK",
  "CAP_IPC_OWNER",
  "CAP_SYS_MODULE",
  "CAP_SYS_RAWIO",
  "CAP_SYS_CHROOT",
  "CAP_SYS_PTRACE",
  "CAP_SYS_PACCT",
  "CAP_SYS_ADMIN",
  "CAP_SYS_BOOT",
  "CAP_SYS_NICE",
  "CAP_SYS_RESOURCE",
  "CAP_SYS_TIME",
  "CAP_SYS_TTY_CONFIG",
  "CAP_MKNOD",
  "CAP_LEASE",
  "CAP_AUDIT_WRITE",
  "CAP_AUDIT_CONTROL",
  "CAP_SETFCAP",
  "CAP_MAC_OVERRIDE",
  "CAP_MAC_ADMIN",
  "CAP_SYSLOG",
  "CAP_WAKE_ALARM",
  "CAP_BLOCK_SUSPEND",
  "CAP_AUDIT_READ",
  "CAP_PERFMON",
  "CAP_BPF",
  "CAP_CHECKPOINT_RESTORE"
]

export const CAP_NET_BIND_SERVICE = 10

/** A capability's name; numbers newer than this table are shown as `cap_<n>`. */
export const capabilityName = (bit: number): string => NAMES[bit] ?? `cap_${bit}`

/** The `CapEff` mask from the text of `/proc/<pid>/status`, or why it is not there. */
export const parseCapEff = (status: string): Result.Result<bigint, string> => {
  const line = /^CapEff:[ \t]*([0-9a-fA-F]{1,16})[ \t]*$/m.exec(status)
  if (line === null || line[1] === undefined) return Result.fail("no CapEff line")
  return Result.succeed(BigInt(`0x${line[1]}`))
}

/** The names of every capability in `mask` other than `CAP_NET_BIND_SERVICE`, lowest first. */
export const strayCapabilities = (mask: bigint): ReadonlyArray<string> => {
  const names: Array<string> = []
  for (let bit = 0; bit < 64; bit++) {
    if (bit !== CAP_NET_BIND_SERVICE && ((mask >> BigInt(bit)) & 1n) === 1n) names.push(capabilityName(bit))
  }
  return names
}

/**
 * Why the process may not run in production, or `undefined` when its effective set is empty or
 * exactly `CAP_NET_BIND_SERVICE`. `status` is the file's text, or the reason it could not be read
 * (an unreadable file is a refusal: the check cannot be skipped by hiding `/proc`).
 */
export const capabilityRefusal = (status: Result.Result<string, string>): string | undefined => {
  if (Result.isFailure(status)) return `cannot read the effective capability set from /proc/self/status (${status.failure})`
  const mask = parseCapEff(status.success)
  if (Result.isFailure(mask)) return `cannot read the effective capability set from /proc/self/status (${mask.failure})`
  const stray = strayCapabilities(mask.success)
  if (stray.length === 0) return undefined
  return `the effective capability set holds ${stray.join(", ")} (only CAP_NET_BIND_SERVICE is allowed)`
}

/** The text of `/proc/self/status`, or the error code that stopped the read. */
export const readProcStatus = (): Result.Result<string, string> => {
  try {
    return Result.succeed(readFileSync("/proc/self/status", "utf8"))
  } catch (error) {
    const e = error as NodeJS.ErrnoException
    return Result.fail(e.code ?? e.message)
  }
}
