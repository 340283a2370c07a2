/**
 * A session's JWT-SVID (credentials/session.ts SessionJwt): retries of a failing session present the same token
 * until half of its lifetime has passed, never one past that, and the minter's cap on `exp` (its key's expiry)
 * shortens the reuse with it.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { SessionJwt } from '../../reconciler/credentials/session.ts';
import type { JwtMinter, MintJwtOptions } from '../../reconciler/identity/jwt-svid.ts';

const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');

/** A minter whose tokens expire `ttl` seconds after the clock, capped at `capMs` (epoch ms) when set. */
function fakeMinter(clock: { ms: number }, capMs?: number) {
  const minted: string[] = [];
  const minter: JwtMinter = {
    issuer: 'https://issuer.example',
    async mint(req: MintJwtOptions) {
      const iat = Math.floor(clock.ms / 1000);
      let exp = iat + (req.ttlSeconds ?? 300);
      if (capMs !== undefined) exp = Math.min(exp, Math.floor(capMs / 1000));
      const jwt = `${b64({ alg: 'ES256' })}.${b64({ sub: req.spiffeId, iat, exp, n: minted.length })}.sig`;
      minted.push(jwt);
      return jwt;
    },
    async jwks() {
      return { keys: [] };
    },
  };
  return { minter, minted };
}

const REQUEST = { spiffeId: 'spiffe://td.example/app', audience: ['sts.amazonaws.com'], ttlSeconds: 300 };

describe('a session JWT-SVID', () => {
  it('is presented again until half its lifetime has passed, then minted anew', async () => {
    const clock = { ms: 1_800_000_000_000 };
    const { minter, minted } = fakeMinter(clock);
    const jwt = new SessionJwt({ minter, now: () => clock.ms }, REQUEST);
    const first = await jwt.get();
    clock.ms += 149_000;
    expect(await jwt.get()).toBe(first);
    expect(minted).toHaveLength(1);
    clock.ms += 1_000;
    const second = await jwt.get();
    expect(second).not.toBe(first);
    expect(minted).toHaveLength(2);
  });

  it("is reused for half of what its key's expiry left it, not half the TTL asked for", async () => {
    const clock = { ms: 1_800_000_000_000 };
    // The signing key expires 60 s from now: tokens expire then, whatever TTL is asked for.
    const { minter, minted } = fakeMinter(clock, clock.ms + 60_000);
    const jwt = new SessionJwt({ minter, now: () => clock.ms }, REQUEST);
    const first = await jwt.get();
    clock.ms += 29_000;
    expect(await jwt.get()).toBe(first);
    clock.ms += 2_000;
    await jwt.get();
    expect(minted).toHaveLength(2);
  });

  describe('on the monotonic clock too', () => {
    afterEach(() => {
      vi.useRealTimers();
    });

    it('is not reused past half its lifetime when the wall clock is stepped back', async () => {
      vi.useFakeTimers({ toFake: ['performance'] });
      const clock = { ms: 1_800_000_000_000 };
      const { minter, minted } = fakeMinter(clock);
      const jwt = new SessionJwt({ minter, now: () => clock.ms }, REQUEST);
      await jwt.get();
      // 160 s pass, then NTP steps the wall clock back 200 s: it reads 40 s before the minting.
      vi.advanceTimersByTime(160_000);
      clock.ms -= 40_000;
      await jwt.get();
      expect(minted).toHaveLength(2);
    });
  });

  it('presents a new token after the server refused the last one', async () => {
    const clock = { ms: 1_800_000_000_000 };
    const { minter, minted } = fakeMinter(clock);
    const jwt = new SessionJwt({ minter, now: () => clock.ms }, REQUEST);
    const first = await jwt.get();
    jwt.invalidate(first);
    const second = await jwt.get();
    expect(second).not.toBe(first);
    // A late refusal of the first token leaves the second in use.
    jwt.invalidate(first);
    expect(await jwt.get()).toBe(second);
    expect(minted).toHaveLength(2);
  });
});
