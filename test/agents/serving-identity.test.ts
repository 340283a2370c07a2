/**
 * The reconciler's serving SVID (reconciler/agents/serving-identity.ts) follows the root SVIDs are issued
 * under: join tokens pin that root, and a joining agent trusts nothing else, so once a root rotation takes
 * effect the reconciler must present a chain under the new root at once, not at its next half-life.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { ServingIdentity } from '../../reconciler/agents/serving-identity.ts';
import { initAuthority } from '../../reconciler/identity/authority.ts';
import { isIssuedBy, parseCertificatesPem } from '../../reconciler/identity/x509.ts';
import { DAY, fakeClock, HOUR, tempDir } from '../support/identity-helpers.ts';

const tmp = tempDir();
afterAll(tmp.cleanup);
const T0 = new Date('2030-06-01T00:00:00Z').getTime();
const MINUTE = 60_000;

describe('the serving SVID across a root rotation', () => {
  it('is renewed under the new root as soon as SVIDs are issued under it, and not before', async () => {
    const clock = fakeClock(T0);
    const authority = await initAuthority({
      trustDomain: 'example.org',
      dir: tmp.dir,
      now: clock.now,
      rootTtlSeconds: 60 * 86_400,
    });
    const serving = await ServingIdentity.start(authority);
    const chains: string[] = [];
    serving.addIdentityCertificateListener((id) => {
      if (id) chains.push(id.certificate.toString());
    });
    await new Promise((r) => setImmediate(r));
    const underAnchor = () => {
      const ca = parseCertificatesPem(chains.at(-1)!)[1]!;
      return isIssuedBy(ca, authority.signingAnchor());
    };
    try {
      expect(chains).toHaveLength(1);
      const oldAnchor = authority.signingAnchor().serial;
      // The next root is prepared, then active, while the signing CA made under the old one still signs.
      for (const at of [T0 + 53 * DAY - 30 * MINUTE, T0 + 53 * DAY + MINUTE]) {
        clock.set(at);
        await authority.rotate();
        serving.checkBundle();
        await new Promise((r) => setTimeout(r, 50));
        expect(authority.signingAnchor().serial).toBe(oldAnchor);
        expect(chains).toHaveLength(1);
      }
      // A signing CA under the new root takes over: the serving SVID follows on the next check.
      clock.set(T0 + 53 * DAY + 19 * HOUR + 45 * MINUTE);
      await authority.rotate();
      expect(authority.signingAnchor().serial).not.toBe(oldAnchor);
      expect(underAnchor()).toBe(false);
      serving.checkBundle();
      for (let i = 0; i < 500 && chains.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
      expect(chains).toHaveLength(2);
      expect(underAnchor()).toBe(true);
    } finally {
      serving.stop();
    }
  });
});
