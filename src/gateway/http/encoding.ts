import { type InputType, brotliDecompress, gunzip, inflate, inflateRaw } from 'node:zlib'
import { IotError } from '../../errors.js'
import type { QuarantineReason } from '../../readings/index.js'

type Decoder = (
  buf: InputType,
  opts: { maxOutputLength: number },
  cb: (err: Error | null, out: Buffer) => void,
) => void

/**
 * The content codings HTTP ingest decodes (RFC 9110 §8.4.1; `x-gzip` is gzip's alias, §8.4.1.3). What the
 * answer to an unsupported one lists in Accept-Encoding (RFC 9110 §12.5.3: a 415 for a content coding says
 * which are accepted).
 */
export const ACCEPTED_ENCODINGS = 'gzip, deflate, br'

const DECODERS: ReadonlyMap<string, Decoder> = new Map<string, Decoder>([
  ['gzip', gunzip],
  ['x-gzip', gunzip],
  ['deflate', inflateAny],
  ['br', brotliDecompress],
])

/** The quarantine reason of each refusal decodeBody throws, for the refused request's record. */
export const REFUSAL_REASONS: ReadonlyMap<string, QuarantineReason> = new Map<string, QuarantineReason>([
  ['IOT_ERR_UNSUPPORTED_ENCODING', 'unsupported_encoding'],
  ['IOT_ERR_MALFORMED_ENCODING', 'malformed_encoding'],
  ['IOT_ERR_PAYLOAD_TOO_LARGE', 'payload_too_large'],
])

/**
 * The body as its Content-Encoding header says to decode it, bounded by `limit` once decoded: a zip bomb is
 * stopped as soon as its output passes the limit, never inflated in memory. Throws IOT_ERR_UNSUPPORTED_ENCODING
 * (415), IOT_ERR_MALFORMED_ENCODING (400, zlib's reason) or IOT_ERR_PAYLOAD_TOO_LARGE (413). Decoding runs on
 * libuv's thread pool, off the event loop.
 */
export async function decodeBody(raw: Buffer, header: string, limit: number): Promise<Buffer> {
  // RFC 9110 §8.4: the codings in the order they were applied, so they are undone from the last; `identity`
  // (§12.5.3) is no coding. Every one is checked before any work is done.
  const codings = header
    .split(',')
    .map((c) => c.trim().toLowerCase())
    .filter((c) => c !== '' && c !== 'identity')
  for (const c of codings)
    if (!DECODERS.has(c))
      throw new IotError('IOT_ERR_UNSUPPORTED_ENCODING', c.length > 40 ? `${c.slice(0, 40)}...` : c)
  let body = raw
  for (let i = codings.length - 1; i >= 0; i--) body = await decode(codings[i], body, limit)
  return body
}

function decode(coding: string, buf: Buffer, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    DECODERS.get(coding)!(buf, { maxOutputLength: limit }, (err, out) => {
      if (!err) return resolve(out)
      if ((err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') {
        return reject(
          new IotError('IOT_ERR_PAYLOAD_TOO_LARGE', [
            `a ${coding} body of ${buf.length} bytes that decodes to more`,
            limit,
          ]),
        )
      }
      // zlib's messages are short ASCII ("incorrect header check", "unexpected end of file"): no input in them.
      reject(new IotError('IOT_ERR_MALFORMED_ENCODING', [coding, `${err.message} (${buf.length} bytes)`]))
    })
  })
}

/**
 * `deflate` is the zlib format (RFC 9110 §8.4.1.2, RFC 1950), but the same section notes that some senders
 * send a raw deflate stream without the zlib header: a body whose first two bytes are not a zlib header (RFC
 * 1950 §2.2: CM 8, CINFO up to 7, FCHECK making the pair a multiple of 31) is inflated raw.
 */
function inflateAny(
  buf: InputType,
  opts: { maxOutputLength: number },
  cb: (err: Error | null, out: Buffer) => void,
) {
  const b = buf as Buffer
  const zlibHeader = b.length >= 2 && (b[0] & 0x0f) === 8 && b[0] >> 4 <= 7 && ((b[0] << 8) | b[1]) % 31 === 0
  return (zlibHeader ? inflate : inflateRaw)(b, opts, cb)
}
