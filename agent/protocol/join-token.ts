/**
 * The join token's text, as `riptides-cli token create` prints it and an agent presents it:
 *
 *   rjt1.<id>.<secret>.<pin>
 *     id      8 hex digits, public (names the token in logs and files)
 *     secret  32 base64url characters (192 random bits); the reconciler stores only its SHA-256
 *     pin     64 hex digits: SHA-256 of the SubjectPublicKeyInfo of a root of the trust bundle (as kubeadm's
 *             --discovery-token-ca-cert-hash), so the token alone lets a new agent verify the reconciler
 */
const TOKEN_RE = /^rjt1\.([0-9a-f]{8})\.([A-Za-z0-9_-]{32})\.([0-9a-f]{64})$/;

export interface ParsedJoinToken {
  id: string;
  secret: string;
  pin: string;
}

/** Parses a token's text; null when it does not have the shape of one. */
export function parseJoinToken(text: string): ParsedJoinToken | null {
  const m = TOKEN_RE.exec(text.trim());
  return m ? { id: m[1]!, secret: m[2]!, pin: m[3]! } : null;
}

export function formatJoinToken(t: ParsedJoinToken): string {
  return `rjt1.${t.id}.${t.secret}.${t.pin}`;
}
