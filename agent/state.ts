/**
 * The agent's state directory: what lets a restarted agent come back as itself without a new token.
 *
 *   agent.json    server, trust domain, daemon ID and group, SPIFFE IDs of both ends (no secret)
 *   agent.key     the agent SVID's private key (PKCS#8 PEM, 0600): generated here, never sent anywhere
 *   agent.crt     the agent SVID chain (PEM)
 *   bundle.crt    the trust bundle (PEM)
 *   program.json  the last program ACKed (no credential value is ever in it)
 *
 * Directory 0700; every write atomic (temp file, fsync, rename, fsync of the directory).
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { makeDirs } from '../kernel-module/control/make-dirs.ts';
import { writeFileAtomic } from './files.ts';
import { type Program, programFromJson, programToJson } from './protocol/program.ts';

export interface AgentIdentity {
  version: 1;
  server: string;
  trustDomain: string;
  daemonId: string;
  spiffeId: string;
  daemonGroup: string | null;
  reconcilerSpiffeId: string;
  joinedAt: string;
}

export interface AgentSvid {
  keyPem: string;
  chainPem: string;
  serial: string;
  notBefore: Date;
  notAfter: Date;
}

/** Facts of a PEM chain's leaf. */
export function svidFacts(chainPem: string): {
  serial: string;
  notBefore: Date;
  notAfter: Date;
  uris: string[];
} {
  const leaf = new X509Certificate(chainPem);
  return {
    serial: leaf.serialNumber.toLowerCase().replace(/^0+(?=.)/, ''),
    notBefore: new Date(leaf.validFrom),
    notAfter: new Date(leaf.validTo),
    uris: (leaf.subjectAltName ?? '')
      .split(/,\s*/)
      .filter((s) => s.startsWith('URI:'))
      .map((s) => s.slice(4)),
  };
}

export class AgentStateDir {
  constructor(readonly dir: string) {}

  private path(name: string): string {
    return join(this.dir, name);
  }

  async ensure(): Promise<void> {
    await makeDirs(this.dir, 0o700);
  }

  /** The saved identity and SVID, or null when this agent never joined. Throws when the files are damaged. */
  async load(): Promise<{ identity: AgentIdentity; svid: AgentSvid; bundlePem: string } | null> {
    let text: string;
    try {
      text = await readFile(this.path('agent.json'), 'utf8');
    } catch {
      return null;
    }
    const identity = JSON.parse(text) as AgentIdentity;
    const read = (n: string) => readFile(this.path(n), 'utf8').catch(() => null);
    const [key, crt, keyNext, crtNext, bundlePem] = (await Promise.all(
      ['agent.key', 'agent.crt', 'agent.key.next', 'agent.crt.next', 'bundle.crt'].map(read),
    )) as [string | null, string | null, string | null, string | null, string | null];
    if (bundlePem === null) throw new Error(`${this.path('bundle.crt')} is missing: join again`);
    // A renewal interrupted between its two renames leaves the new pair in *.next: take whichever pair matches.
    for (const [keyPem, chainPem] of [
      [key, crt],
      [keyNext, crtNext],
      [key, crtNext],
    ] as const) {
      if (keyPem === null || chainPem === null || !pairMatches(keyPem, chainPem)) continue;
      const facts = svidFacts(chainPem);
      if (facts.uris.length !== 1 || facts.uris[0] !== identity.spiffeId)
        throw new Error(`${this.path('agent.crt')} is not the SVID of ${identity.spiffeId}: join again`);
      return { identity, svid: { keyPem, chainPem, ...facts }, bundlePem };
    }
    throw new Error(
      `${this.path('agent.key')} and agent.crt do not belong together: join again with a new token`,
    );
  }

  async saveIdentity(identity: AgentIdentity): Promise<void> {
    await writeFileAtomic(this.path('agent.json'), `${JSON.stringify(identity, null, 2)}\n`, 0o600);
  }

  /** The new pair is written whole as *.next, then renamed into place (load() recovers from a crash between). */
  async saveSvid(keyPem: string, chainPem: string): Promise<void> {
    await writeFileAtomic(this.path('agent.key.next'), keyPem, 0o600);
    await writeFileAtomic(this.path('agent.crt.next'), chainPem, 0o644);
    await rename(this.path('agent.key.next'), this.path('agent.key'));
    await rename(this.path('agent.crt.next'), this.path('agent.crt'));
  }

  async saveBundle(pem: string): Promise<void> {
    await writeFileAtomic(this.path('bundle.crt'), pem, 0o644);
  }

  async loadProgram(): Promise<Program | null> {
    try {
      return programFromJson(await readFile(this.path('program.json'), 'utf8'));
    } catch {
      return null;
    }
  }

  async saveProgram(p: Program): Promise<void> {
    await writeFileAtomic(this.path('program.json'), programToJson(p), 0o600);
  }
}

function pairMatches(keyPem: string, chainPem: string): boolean {
  try {
    return new X509Certificate(chainPem).checkPrivateKey(createPrivateKey(keyPem));
  } catch {
    return false;
  }
}
