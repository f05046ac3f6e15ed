/**
 * A throwaway certificate authority made with `openssl`, for servers the tests start (the relay
 * with `--tls-cert`, Pebble's own HTTPS listener). Node's crypto cannot issue X.509 certificates.
 */
import { execFileSync } from "node:child_process"
import { readFileSync, writeFileSync } from "node:fs"
import * as Path from "node:path"

export const hasOpenssl = (() => {
  try {
    execFileSync("openssl", ["version"], { stdio: "ignore" })
    return true
  } catch {
    return false
  }
})()

export interface Issued {
  readonly caPem: Buffer
  readonly caFile: string
  readonly certFile: string
  readonly keyFile: string
}

/** A CA in `dir` and a server certificate for `names` (DNS names and IP literals) signed by it. */
export const issueServerCertificate = (dir: string, names: ReadonlyArray<string>, stem = "server"): Issued => {
  const openssl = (...args: Array<string>) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" })
  openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
    "-subj", "/CN=pyrycode relay test CA")
  openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", `${stem}.key`, "-out", `${stem}.csr`, "-subj", `/CN=${names[0]}`)
  const san = names.map((n) => (/^[\d.]+$/.test(n) || n.includes(":") ? `IP:${n}` : `DNS:${n}`)).join(",")
  writeFileSync(
    Path.join(dir, `${stem}.ext`),
    [
      `subjectAltName=${san}`,
      "basicConstraints=CA:FALSE",
      "keyUsage=digitalSignature,keyEncipherment",
      "extendedKeyUsage=serverAuth"
    ].join("\n") + "\n"
  )
  openssl("x509", "-req", "-in", `${stem}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
    "-out", `${stem}.pem`, "-days", "2", "-extfile", `${stem}.ext`)
  return {
    caPem: readFileSync(Path.join(dir, "ca.pem")),
    caFile: Path.join(dir, "ca.pem"),
    certFile: Path.join(dir, `${stem}.pem`),
    keyFile: Path.join(dir, `${stem}.key`)
  }
}
