/**
 * Frames that must wait in an outbox are copied out of the binary's reads they are views into
 * (SPEC §4.3, §7.4): a waiting frame must not keep a whole read alive — other phones' frames, or
 * one large message — so what the budget counts is what is held.
 */

/** Frames this large get a buffer of their own (written in place later, not copied again). */
export const OWN_APART = 16 * 1024

/**
 * Replaces `frames[from…]` by copies: the small ones share one new buffer, each large one gets an
 * exact buffer of its own, so the connection can write it in place instead of copying it again.
 */
export const ownFrames = (frames: Array<Buffer>, from: number): void => {
  let bytes = 0
  for (let i = from; i < frames.length; i++) if (frames[i]!.length < OWN_APART) bytes += frames[i]!.length
  const shared = bytes > 0 ? Buffer.allocUnsafeSlow(bytes) : undefined
  let at = 0
  for (let i = from; i < frames.length; i++) {
    const frame = frames[i]!
    if (shared === undefined || frame.length >= OWN_APART) {
      frames[i] = Buffer.from(frame)
      continue
    }
    shared.set(frame, at)
    frames[i] = shared.subarray(at, at + frame.length)
    at += frame.length
  }
}
