/**
 * Child of verifier-budget.test.ts: a leaf followed by N self-issued CA certificates that share one subject
 * and one key (so each "issues" every other one), none of them reaching the bundle. Without a budget the
 * path search tries every ordering (hours for ten). Run directly, prints {code, message} of the verification;
 * bench/hostile.bench.ts imports the shape.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import {
  encodeName,
  encodeTbs,
  extension,
  KU,
  keyUsageValue,
  OID,
  parseCertificate,
  signerFor,
  signTbs,
  spkiOf,
  subjectAltNameValue,
} from '../../../reconciler/identity/x509.ts';
import { verifyX509Svid, X509SvidError } from '../../../reconciler/identity/x509-svid.ts';

const key = () => generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
/** The shape: a leaf, n self-issued CAs sharing one subject and key, and an unrelated root as the bundle. */
export function selfIssuedLoop(n: number) {
  const validity = {
    notBefore: new Date('2030-01-01T00:00:00Z'),
    notAfter: new Date('2032-01-01T00:00:00Z'),
  };
  const caKey = key();
  const caName = encodeName([['CN', 'loop']]);
  const caSigner = signerFor(caKey);
  const caExts = [
    extension(OID.basicConstraints, true, Buffer.from([0x30, 0x03, 0x01, 0x01, 0xff])),
    extension(OID.keyUsage, true, keyUsageValue([KU.keyCertSign])),
  ];
  const cas = Array.from({ length: n }, () =>
    parseCertificate(
      signTbs(
        encodeTbs(
          {
            serial: randomBytes(16),
            issuer: caName,
            subject: caName,
            spki: spkiOf(caKey),
            extensions: caExts,
            ...validity,
          },
          caSigner,
        ),
        caSigner,
      ),
    ),
  );
  const leafKey = key();
  const leaf = parseCertificate(
    signTbs(
      encodeTbs(
        {
          serial: randomBytes(16),
          issuer: caName,
          subject: encodeName([['CN', 'leaf']]),
          spki: spkiOf(leafKey),
          extensions: [
            extension(OID.keyUsage, true, keyUsageValue([KU.digitalSignature])),
            extension(OID.subjectAltName, false, subjectAltNameValue(['spiffe://example.org/w'], [])),
          ],
          ...validity,
        },
        caSigner,
      ),
      caSigner,
    ),
  );
  const rootKey = key();
  const rootName = encodeName([['CN', 'real root']]);
  const rootSigner = signerFor(rootKey);
  const root = parseCertificate(
    signTbs(
      encodeTbs(
        {
          serial: randomBytes(16),
          issuer: rootName,
          subject: rootName,
          spki: spkiOf(rootKey),
          extensions: caExts,
          ...validity,
        },
        rootSigner,
      ),
      rootSigner,
    ),
  );
  return { chain: [leaf, ...cas], bundles: new Map([['example.org', [root]]]) };
}

export const NOW = new Date('2031-01-01T00:00:00Z');

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { chain, bundles } = selfIssuedLoop(Number(process.argv[2] ?? 10));
  try {
    verifyX509Svid(chain, bundles, { now: NOW });
    console.log(JSON.stringify({ code: 'ok' }));
  } catch (err) {
    if (!(err instanceof X509SvidError)) throw err;
    console.log(JSON.stringify({ code: err.code, message: err.message }));
  }
}
