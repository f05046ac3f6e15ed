/**
 * A certificate as the relay keeps it: the private key and the chain in one PEM file, so one
 * atomic rename replaces both (a crash can never pair a new key with an old certificate). Parsing
 * checks what serving needs: a leaf certificate, a key that matches it, the validity window, the
 * DNS names. Pure apart from `node:crypto` parsing.
 */
import { createPrivateKey, X509Certificate } from "node:crypto"
import * as Tls from "node:tls"
import * as Result from "effect/Result"
import type { Validity } from "./RenewalSchedule.ts"

export interface Certificate extends Validity {
  readonly keyPem: string
  /** Leaf first, then the intermediates, as the CA sent them. */
  readonly chainPem: string
  /** Upper-case hex, as `openssl x509 -serial` prints it. */
  readonly serial: string
  /** The DNS names of the leaf's subjectAltName, lower case. */
  readonly names: ReadonlyArray<string>
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n[\s\S]*?-----END \1-----/g

const blocks = (pem: string): Array<{ label: string; text: string }> =>
  [...pem.matchAll(PEM_BLOCK)].map((m) => ({ label: m[1]!, text: m[0] }))

/** `DNS:a.example.com, DNS:b.example.com, IP Address:…` → the DNS names. */
const dnsNames = (subjectAltName: string | undefined): Array<string> =>
  (subjectAltName ?? "")
    .split(",")
    .map((entry) => entry.trim())
    .filter((entry) => entry.startsWith("DNS:"))
    .map((entry) => entry.slice(4).toLowerCase())

/** A key and a chain (as received from the CA, or read back from the cache), checked. */
export const makeCertificate = (keyPem: string, chainPem: string): Result.Result<Certificate, string> => {
  const certificates = blocks(chainPem).filter((b) => b.label === "CERTIFICATE")
  const leafPem = certificates[0]?.text
  if (leafPem === undefined) return Result.fail("no certificate")
  try {
    const leaf = new X509Certificate(leafPem)
    if (!leaf.checkPrivateKey(createPrivateKey(keyPem))) return Result.fail("the key does not match the certificate")
    return Result.succeed({
      keyPem,
      chainPem: certificates.map((b) => b.text).join("\n") + "\n",
      notBefore: leaf.validFromDate.getTime(),
      notAfter: leaf.validToDate.getTime(),
      serial: leaf.serialNumber.toUpperCase(),
      names: dnsNames(leaf.subjectAltName)
    })
  } catch (error) {
    return Result.fail((error as Error).message)
  }
}

/** The cache file's text: the key, then the chain. */
export const toBundle = (certificate: Certificate): string => `${certificate.keyPem.trim()}\n${certificate.chainPem}`

/** A cache file back into a certificate. */
export const fromBundle = (bundle: string): Result.Result<Certificate, string> => {
  const all = blocks(bundle)
  const key = all.find((b) => b.label.endsWith("PRIVATE KEY"))
  if (key === undefined) return Result.fail("no private key")
  return makeCertificate(`${key.text}\n`, all.filter((b) => b.label === "CERTIFICATE").map((b) => b.text).join("\n"))
}

/** Whether the certificate names every one of `domains`. */
export const covers = (certificate: Certificate, domains: ReadonlyArray<string>): boolean =>
  domains.every((domain) => certificate.names.includes(domain))

/** What a TLS handshake needs to present it. */
export const secureContext = (certificate: Certificate): Tls.SecureContext =>
  Tls.createSecureContext({ key: certificate.keyPem, cert: certificate.chainPem, minVersion: "TLSv1.2" })
