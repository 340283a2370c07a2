/**
 * Join tokens: single-use, expiring, as the real JoinToken (used once, then gone) and kubeadm's bootstrap
 * tokens (`<id>.<secret>`, with the CA pinned by the hash of its public key); the text format is the
 * protocol's (agent/protocol/join-token.ts). Only the SHA-256 of the secret part is stored.
 *
 * Stored one file per token under `<state-dir>/tokens/` (0600, atomic), so `riptides-cli token create` and a
 * running reconciler share them without a lock. Using a token renames its file into `tokens/used/`: rename
 * is atomic, so of two agents presenting the same token at once exactly one wins.
 */
import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { formatJoinToken, parseJoinToken } from '../../agent/protocol/join-token.ts';
import { writeFileAtomic } from '../common/atomic-file.ts';

export interface JoinTokenRecord {
  id: string;
  /** SHA-256 (hex) of the secret part. */
  secretSha256: string;
  /** The daemon group the joining agent is put in, or null. */
  daemonGroup: string | null;
  /** The daemon ID it is given (the tail of `riptides/daemon/<id>`). */
  daemonId: string;
  createdAt: string;
  expiresAt: string;
  usedAt?: string;
}

/** Why a token was refused: a stable code and a sentence a person can act on. */
export class JoinTokenError extends Error {
  constructor(
    readonly code: 'MALFORMED' | 'UNKNOWN' | 'FORGED' | 'EXPIRED' | 'USED' | 'GROUP_MISMATCH',
    message: string,
  ) {
    super(message);
    this.name = 'JoinTokenError';
  }
}

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

export class JoinTokenStore {
  constructor(
    readonly dir: string,
    private readonly now: () => number = Date.now,
    /** The public id of a new token: 8 hex (4 random bytes). */
    private readonly newId: () => string = () => randomBytes(4).toString('hex'),
  ) {}

  private pending(id: string) {
    return join(this.dir, `${id}.json`);
  }

  private used(id: string) {
    return join(this.dir, 'used', `${id}.json`);
  }

  /** Makes a token; returns its text (the only time the secret exists outside the agent that uses it). */
  async create(opts: {
    pin: string;
    ttlSeconds: number;
    daemonGroup?: string | null;
    daemonId?: string | null;
  }): Promise<{ token: string; record: JoinTokenRecord }> {
    // A public id no token has had (pending or used): a collision would silently replace a pending token.
    let id = this.newId();
    while (existsSync(this.pending(id)) || existsSync(this.used(id))) id = this.newId();
    const secret = randomBytes(24).toString('base64url');
    const now = this.now();
    const record: JoinTokenRecord = {
      id,
      secretSha256: sha256(secret),
      daemonGroup: opts.daemonGroup ?? null,
      daemonId: opts.daemonId ?? randomUUID(),
      createdAt: new Date(now).toISOString(),
      expiresAt: new Date(now + opts.ttlSeconds * 1000).toISOString(),
    };
    await writeFileAtomic(this.pending(id), `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
    return { token: formatJoinToken({ id, secret, pin: opts.pin }), record };
  }

  /** Checks a token without using it. Throws JoinTokenError with the reason it cannot be used. */
  async check(text: string): Promise<JoinTokenRecord> {
    const parsed = parseJoinToken(text);
    if (!parsed)
      throw new JoinTokenError(
        'MALFORMED',
        'the join token is malformed: expected rjt1.<8 hex>.<32 characters>.<64 hex> as `riptides-cli token create` prints it',
      );
    const record = await readRecord(this.pending(parsed.id));
    if (!record) {
      const used = await readRecord(this.used(parsed.id));
      if (used && secretMatches(used, parsed.secret))
        throw new JoinTokenError(
          'USED',
          `join token ${parsed.id} was already used${used.usedAt ? ` at ${used.usedAt}` : ''}: tokens are single-use; create a new one with \`riptides-cli token create\``,
        );
      throw new JoinTokenError(
        'UNKNOWN',
        `join token ${parsed.id} is not known to this reconciler (forged, or created for another reconciler's state directory)`,
      );
    }
    if (!secretMatches(record, parsed.secret))
      throw new JoinTokenError(
        'FORGED',
        `join token ${parsed.id} does not verify: its secret part is wrong (forged or mistyped)`,
      );
    if (Date.parse(record.expiresAt) <= this.now())
      throw new JoinTokenError(
        'EXPIRED',
        `join token ${parsed.id} expired at ${record.expiresAt}: create a new one with \`riptides-cli token create\``,
      );
    return record;
  }

  /** Uses the token: exactly one caller succeeds; the others get USED. */
  async claim(record: JoinTokenRecord): Promise<void> {
    try {
      await rename(this.pending(record.id), this.used(record.id));
    } catch {
      throw new JoinTokenError(
        'USED',
        `join token ${record.id} was used by another agent at the same moment: tokens are single-use`,
      );
    }
    const used = { ...record, usedAt: new Date(this.now()).toISOString() };
    await writeFile(this.used(record.id), `${JSON.stringify(used, null, 2)}\n`, { mode: 0o600 });
  }

  /** Prepares the directories (0700). */
  async init(): Promise<void> {
    await writeFileAtomic(join(this.dir, 'used', '.keep'), '', { mode: 0o600 });
  }
}

function secretMatches(record: JoinTokenRecord, secret: string): boolean {
  const a = Buffer.from(record.secretSha256, 'hex');
  const b = Buffer.from(sha256(secret), 'hex');
  return a.length === b.length && timingSafeEqual(a, b);
}

async function readRecord(path: string): Promise<JoinTokenRecord | null> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as JoinTokenRecord;
  } catch {
    return null;
  }
}
