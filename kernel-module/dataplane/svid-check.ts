/**
 * Peer X.509-SVID checks after OpenSSL has verified the chain against the trust bundle (node's TLS does path
 * validation, expiry and signatures): the SPIFFE X509-SVID rules on the leaf (exactly one URI SAN, a valid
 * `spiffe://` ID; CA=false, no keyCertSign/cRLSign), the trust domain, and the allow lists.
 * Results are cached by certificate fingerprint; the allow lists are checked on every call.
 */
import 'reflect-metadata';
import { type X509Certificate as NodeX509, webcrypto } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import * as x509 from '@peculiar/x509';
import { parseSpiffeId } from '../spiffe-id.ts';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

export type HandshakeFailure =
  | 'timeout'
  | 'protocol'
  | 'no-certificate'
  | 'untrusted'
  | 'expired'
  | 'not-svid'
  | 'foreign-trust-domain'
  | 'not-allowed'
  | 'not-managed'
  | 'no-svid'
  | 'connect'
  | 'stream-refused';

export type PeerResult =
  | { ok: true; spiffeId: string }
  | { ok: false; reason: HandshakeFailure; detail: string };

/** The trust domain of a valid SPIFFE ID (the SPIFFE ID standard, through the one parser), or null. */
export function spiffeTrustDomain(id: string): string | null {
  const parsed = parseSpiffeId(id);
  return parsed.ok ? parsed.id.trustDomain : null;
}

const leafCache = new Map<string, { spiffeId: string } | { error: string }>();

/** SPIFFE rules on the leaf alone: its SPIFFE ID, or why it is not an X509-SVID. */
export function svidLeafId(cert: NodeX509): { spiffeId: string } | { error: string } {
  const key = cert.fingerprint256;
  const hit = leafCache.get(key);
  if (hit) return hit;
  let result: { spiffeId: string } | { error: string };
  try {
    const parsed = new x509.X509Certificate(cert.raw);
    const san = parsed.getExtension(x509.SubjectAlternativeNameExtension);
    const uris = (san?.names.items ?? []).filter((n) => n.type === 'url');
    const basic = parsed.getExtension(x509.BasicConstraintsExtension);
    const usage = parsed.getExtension(x509.KeyUsagesExtension);
    if (uris.length !== 1)
      result = { error: `leaf has ${uris.length} URI SANs, an X509-SVID has exactly one` };
    else if (basic?.ca) result = { error: 'leaf is a CA certificate' };
    else if (usage && usage.usages & (x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign))
      result = { error: 'leaf may sign certificates (keyCertSign/cRLSign)' };
    else if (!spiffeTrustDomain(uris[0]!.value)) result = { error: 'URI SAN is not a valid SPIFFE ID' };
    else result = { spiffeId: uris[0]!.value };
  } catch (e) {
    result = { error: `unparseable certificate: ${(e as Error).message}` };
  }
  if (leafCache.size > 4096) leafCache.clear();
  leafCache.set(key, result);
  return result;
}

/** OpenSSL's verification error → our reason. */
function chainReason(code: string): HandshakeFailure {
  return code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID' ? 'expired' : 'untrusted';
}

/**
 * Checks the peer of a TLS socket whose handshake completed with `rejectUnauthorized: false`: chain verified
 * by OpenSSL, SPIFFE leaf rules, trust domain, and every non-empty allow list (an empty list admits any SVID
 * of the trust domain, the implicit mTLS of riptides.md §2.7).
 */
export function checkPeer(
  socket: TLSSocket,
  trustDomain: string,
  allowLists: ReadonlyArray<readonly string[]>,
  /** The peer certificate when the caller already read it (each read on a client takes the next one). */
  presented?: NodeX509 | null,
): PeerResult {
  const cert = presented === undefined ? socket.getPeerX509Certificate() : presented;
  if (!cert) return { ok: false, reason: 'no-certificate', detail: 'the peer presented no certificate' };
  // A TLSSocket made with `isServer` outside a tls.Server never fills `authorized`: ask OpenSSL's verify result
  // (SSL_get_verify_result) as tls.Server does.
  const handle = (
    socket as unknown as { _handle?: { verifyError?: () => (Error & { code?: string }) | null } }
  )._handle;
  const error = socket.authorized ? null : (handle?.verifyError?.() ?? null);
  if (!socket.authorized && (error || !handle?.verifyError)) {
    const code = String(error?.code ?? socket.authorizationError ?? 'UNKNOWN');
    return { ok: false, reason: chainReason(code), detail: `certificate not verified: ${code}` };
  }
  return checkResumedPeer(cert, trustDomain, allowLists);
}

/**
 * The checks for a certificate OpenSSL verified, on this connection or in the full handshake of the session it
 * resumes: validity now (a session can outlive its certificate), SPIFFE rules, trust domain, allow lists.
 */
export function checkResumedPeer(
  cert: NodeX509,
  trustDomain: string,
  allowLists: ReadonlyArray<readonly string[]>,
): PeerResult {
  const now = Date.now();
  if (Date.parse(cert.validTo) <= now || Date.parse(cert.validFrom) > now)
    return { ok: false, reason: 'expired', detail: `certificate valid ${cert.validFrom} to ${cert.validTo}` };
  return checkPeerId(svidLeafId(cert), trustDomain, allowLists);
}

export function checkPeerId(
  leaf: { spiffeId: string } | { error: string },
  trustDomain: string,
  allowLists: ReadonlyArray<readonly string[]>,
): PeerResult {
  if ('error' in leaf) return { ok: false, reason: 'not-svid', detail: leaf.error };
  const id = leaf.spiffeId;
  if (spiffeTrustDomain(id) !== trustDomain)
    return {
      ok: false,
      reason: 'foreign-trust-domain',
      detail: `${id} is not in trust domain ${trustDomain}`,
    };
  for (const list of allowLists)
    if (list.length > 0 && !list.includes(id))
      return { ok: false, reason: 'not-allowed', detail: `${id} is not in the allowed list` };
  return { ok: true, spiffeId: id };
}
