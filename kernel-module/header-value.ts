/**
 * Whether a credential value can go into an HTTP header field as it is: visible ASCII only (RFC 9110 §5.5's
 * field-vchar without obs-text; a Bearer token's b64token, RFC 6750 §2.1, and AWS keys and session tokens are all
 * within it). Line breaks and NUL would split the head; so would any character above U+00FF, and U+0100–U+FFFF
 * written as latin1 (as the data plane writes a head) become their low byte: U+010D U+010A are CR LF on the wire.
 */
export function headerSafe(s: string): boolean {
  return !/[^\x21-\x7e]/.test(s);
}
