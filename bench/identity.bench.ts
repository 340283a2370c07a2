/**
 * Identity benchmark (`npm run bench -- identity`): X509-SVID issuance from CSRs (parse, verify the CSR
 * signature, build, sign, PEM-encode) on every core through worker_threads, against bare crypto.sign of the
 * same number of TBS blobs on the same workers in the same run; then JWT-SVID minting. Prints figures only.
 */
import { createPrivateKey, sign } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { generateKeyAndCsr, initAuthority, openAuthority } from '../reconciler/identity/authority.ts';
import { parseCertificatesPem, parseCsr, pemBlocks } from '../reconciler/identity/x509.ts';

const SVIDS = 20_000;
const JWTS = 20_000;
const DISTINCT_CSRS = 500;

type Job =
  | { kind: 'svid'; csrs: string[]; count: number }
  | { kind: 'bare-sign'; tbs: Buffer[]; count: number }
  | { kind: 'jwt'; count: number };

interface WorkerInit {
  dir: string;
}

async function workerMain(): Promise<void> {
  const { dir } = workerData as WorkerInit;
  const authority = await openAuthority(dir);
  // The active signing CA's own key, for the bare-sign baseline.
  const state = JSON.parse(readFileSync(join(dir, 'authority.json'), 'utf8')) as {
    signingCas: { state: string; keyFile: string }[];
  };
  const active = state.signingCas.find((c) => c.state === 'active')!;
  const caKey = createPrivateKey(readFileSync(join(dir, active.keyFile), 'utf8'));
  parentPort!.on('message', async (job: Job) => {
    const start = performance.now();
    if (job.kind === 'svid') {
      for (let i = 0; i < job.count; i++)
        await authority.signX509Svid({ csrPem: job.csrs[i % job.csrs.length]! });
    } else if (job.kind === 'bare-sign') {
      for (let i = 0; i < job.count; i++) sign('sha256', job.tbs[i % job.tbs.length]!, caKey);
    } else {
      for (let i = 0; i < job.count; i++)
        await authority.jwt.mint({
          spiffeId: `spiffe://bench.example/w${i % 100}`,
          audience: ['sts.amazonaws.com'],
        });
    }
    parentPort!.postMessage(performance.now() - start);
  });
  parentPort!.postMessage('ready');
}

function runOn(workers: Worker[], make: (index: number) => Job): Promise<number> {
  const start = performance.now();
  return Promise.all(
    workers.map(
      (w, i) =>
        new Promise<void>((resolve, reject) => {
          w.once('error', reject);
          w.once('message', () => {
            w.off('error', reject);
            resolve();
          });
          w.postMessage(make(i));
        }),
    ),
  ).then(() => performance.now() - start);
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'riptides-bench-identity-'));
  try {
    const authority = await initAuthority({ trustDomain: 'bench.example', dir });
    const csrs: string[] = [];
    for (let i = 0; i < DISTINCT_CSRS; i++)
      csrs.push((await generateKeyAndCsr(`spiffe://bench.example/w${i}`)).csrPem);
    // Real TBS blobs, as signed by the CA, for the baseline.
    const tbs: Buffer[] = [];
    for (let i = 0; i < 100; i++)
      tbs.push(parseCertificatesPem((await authority.signX509Svid({ csrPem: csrs[i]! })).certPem)[0]!.tbs);

    const cores = availableParallelism();
    // Workers do not inherit tsx's --import hook on Node 20: register it inside each worker first.
    const bootstrap = `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((m) => { m.register(); return import(${JSON.stringify(import.meta.url)}); })`;
    const workers = await Promise.all(
      Array.from({ length: cores }, async () => {
        const w = new Worker(bootstrap, { eval: true, workerData: { dir } satisfies WorkerInit });
        // A worker that fails to start rejects here, so `finally` still removes the temp CA.
        await new Promise((resolve, reject) => {
          w.once('error', reject);
          w.once('message', resolve);
        });
        w.removeAllListeners('error');
        return w;
      }),
    );
    const share = (total: number) => Math.ceil(total / cores);

    // Warm-up so that both measurements run on JIT-compiled code.
    await runOn(workers, () => ({ kind: 'svid', csrs, count: 500 }));
    await runOn(workers, () => ({ kind: 'bare-sign', tbs, count: 500 }));

    const svidMs = await runOn(workers, () => ({ kind: 'svid', csrs, count: share(SVIDS) }));
    const bareMs = await runOn(workers, () => ({ kind: 'bare-sign', tbs, count: share(SVIDS) }));
    const svidRate = (share(SVIDS) * cores * 1000) / svidMs;
    const bareRate = (share(SVIDS) * cores * 1000) / bareMs;

    await runOn(workers, () => ({ kind: 'jwt', count: 500 }));
    const jwtMs = await runOn(workers, () => ({ kind: 'jwt', count: share(JWTS) }));
    const jwtRate = (share(JWTS) * cores * 1000) / jwtMs;

    // Single-thread JWT figure too: what one reconciler event loop can do without workers.
    const single = performance.now();
    for (let i = 0; i < 5_000; i++)
      await authority.jwt.mint({ spiffeId: 'spiffe://bench.example/w', audience: ['a'] });
    const jwtSingle = (5_000 * 1000) / (performance.now() - single);

    // Where an issuance goes, on one thread: the CSR's key import + signature check versus the whole.
    const ders = csrs.map((c) => pemBlocks(c)[0]!.der);
    const csrStart = performance.now();
    for (let i = 0; i < 5_000; i++) parseCsr(ders[i % ders.length]!);
    const csrUs = ((performance.now() - csrStart) * 1000) / 5_000;
    const oneStart = performance.now();
    for (let i = 0; i < 5_000; i++) await authority.signX509Svid({ csrPem: csrs[i % csrs.length]! });
    const oneUs = ((performance.now() - oneStart) * 1000) / 5_000;

    await Promise.all(workers.map((w) => w.terminate()));
    const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
    console.log(`cores: ${cores} (worker_threads), EC P-256 CA, EC P-256 CSRs (${DISTINCT_CSRS} distinct)`);
    console.log(
      `X509-SVID issuance from CSR: ${fmt(svidRate)} SVIDs/s (${share(SVIDS) * cores} in ${fmt(svidMs)} ms)  target ≥ 2,000`,
    );
    console.log(`bare crypto.sign of the same number of TBS blobs: ${fmt(bareRate)} signatures/s`);
    console.log(
      `ratio issuance / bare sign: ${(svidRate / bareRate).toFixed(3)} (1.00 = signing is all it costs; an issuance costs ${(bareRate / svidRate).toFixed(1)} bare signatures)`,
    );
    console.log(
      `one thread: ${oneUs.toFixed(0)} µs per issuance, of which ${csrUs.toFixed(0)} µs CSR public-key import + signature check`,
    );
    console.log(
      `JWT-SVID mint (jose ES256): ${fmt(jwtRate)} JWT/s on ${cores} workers, ${fmt(jwtSingle)} JWT/s on one thread  target ≥ 5,000`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (isMainThread) await main();
else await workerMain();
