/**
 * `npm run bench -- source`: the git source against a ~2,000-file policy repository served over loopback by
 * git's own http-backend, next to `git clone` by the git CLI on the same repository in the same run.
 * Prints figures only; nothing here is asserted.
 */
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { openSource, type PolicySource } from '../reconciler/source/index.ts';
import { scratch } from '../test/source/helpers.ts';
import { createBareRepo, git, WorkClone } from '../test/support/git-fixtures.ts';
import { startGitServer } from '../test/support/git-server.ts';

const TEAMS = 40;
const FILES_PER_TEAM = 50;

function resource(team: number, i: number, rev: number): string {
  const name = `svc-${team}-${i}`;
  return `apiVersion: core.riptides.io/v1alpha1
kind: WorkloadIdentity
metadata:
  name: ${name}
  namespace: team-${team}
spec:
  workloadID: team-${team}/${name}
  scope:
    daemonGroup:
      id: dg-${team % 5}
  selectors:
    - process:name: ${name}
      k8s:pod:namespace: team-${team}
  connection:
    tls:
      mode: MUTUAL
  allowedSPIFFEIDs:
    inbound: [spiffe://acme.test/team-${team}/gateway]
  annotations:
    revision: "${rev}"
`;
}

const ms = (t0: number) => performance.now() - t0;
const rssMiB = () => (process.resourceUsage().maxRSS / 1024).toFixed(0);
const fmt = (n: number) => `${n.toFixed(0).padStart(6)} ms`;

async function changeAndRead(
  source: PolicySource,
  work: WorkClone,
  base: string,
  count: number,
  rev: number,
): Promise<{ head: string; total: number; fetchMs: number; diffMs: number; blobs: number; trees: number }> {
  // Spread the change over different teams, so that several subtrees change, not one.
  const files: Record<string, string> = {};
  for (let k = 0; k < count; k++) {
    const team = (k * 7) % TEAMS;
    files[`policies/team-${team}/svc-${k}.yaml`] = resource(team, k, rev);
  }
  work.write(files);
  await work.commit(`${count}-file change`);
  await work.push('main');

  const before = source.stats();
  const t0 = performance.now();
  await source.fetch();
  const fetchMs = ms(t0);
  const t1 = performance.now();
  const head = await source.resolveRef('main');
  const changes = await source.changedFiles(base, head, 'policies');
  for (const f of [...changes.added, ...changes.modified]) await source.readBlob(f.oid);
  const diffMs = ms(t1);
  const after = source.stats();
  return {
    head,
    total: ms(t0),
    fetchMs,
    diffMs,
    blobs: after.blobsRead - before.blobsRead,
    trees: after.treesRead - before.treesRead,
  };
}

async function main(): Promise<void> {
  const tmp = scratch('bench-source');
  const server = await startGitServer({ root: join(tmp.dir, 'srv') });
  try {
    const bare = await createBareRepo(join(tmp.dir, 'srv'), 'policy');
    const work = await WorkClone.create(bare, join(tmp.dir, 'work'));
    const files: Record<string, string> = {};
    for (let team = 0; team < TEAMS; team++) {
      for (let i = 0; i < FILES_PER_TEAM; i++)
        files[`policies/team-${team}/svc-${i}.yaml`] = resource(team, i, 1);
    }
    work.write(files);
    await work.commit('2,000 resources');
    await work.push('main');
    const url = `${server.url}/policy.git`;
    console.log(`repository: ${TEAMS * FILES_PER_TEAM} YAML files under policies/, served at ${url}`);

    // Baselines: the git CLI against the same server (async: the server shares this process's event loop).
    let t = performance.now();
    await git(tmp.dir, 'clone', '--quiet', '--bare', url, join(tmp.dir, 'cli-bare'));
    const cliBare = ms(t);
    t = performance.now();
    await git(tmp.dir, 'clone', '--quiet', url, join(tmp.dir, 'cli-checkout'));
    const cliCheckout = ms(t);

    t = performance.now();
    const source = await openSource({ repo: url, cacheDir: join(tmp.dir, 'cache') });
    await source.fetch();
    const fetchMs = ms(t);
    const head = await source.resolveRef('main');
    const listed = await source.listFiles(head, 'policies');
    const listMs = ms(t) - fetchMs;
    let bytes = 0;
    for (const f of listed) bytes += (await source.readBlob(f.oid)).byteLength;
    const cold = ms(t);
    const coldStats = source.stats();
    const coldRss = rssMiB();

    const ten = await changeAndRead(source, work, head, 10, 2);
    const one = await changeAndRead(source, work, ten.head, 1, 3);
    t = performance.now();
    const treesBefore = source.stats().treesRead;
    await source.listFiles(one.head, 'policies');
    const relist = ms(t);
    const relistTrees = source.stats().treesRead - treesBefore;

    console.log(`
git CLI  clone --bare               ${fmt(cliBare)}
git CLI  clone (with checkout)      ${fmt(cliCheckout)}
cold     open + fetch               ${fmt(fetchMs)}
         listFiles (${listed.length} files)       ${fmt(listMs)}   trees read ${coldStats.treesRead}
         read all blobs (${(bytes / 1024).toFixed(0)} KiB)    ${fmt(cold - fetchMs - listMs)}   blobs read ${coldStats.blobsRead}
         total                      ${fmt(cold)}   peak RSS ${coldRss} MiB
warm     10-file change             ${fmt(ten.total)}   (fetch ${ten.fetchMs.toFixed(0)} ms, diff + read ${ten.diffMs.toFixed(0)} ms)   blobs read ${ten.blobs}, trees read ${ten.trees}
warm      1-file change             ${fmt(one.total)}   (fetch ${one.fetchMs.toFixed(0)} ms, diff + read ${one.diffMs.toFixed(0)} ms)   blobs read ${one.blobs}, trees read ${one.trees}
         listFiles after the change ${fmt(relist)}   trees read ${relistTrees} (changedFiles already read the changed trees; the rest are cached)
peak RSS at the end                 ${rssMiB()} MiB

ratios   cold fetch / git clone --bare        ${(fetchMs / cliBare).toFixed(1)}x
         cold total / git clone (checkout)    ${(cold / cliCheckout).toFixed(1)}x
         warm 1-file / git clone --bare       ${(one.total / cliBare).toFixed(2)}x`);
  } finally {
    await server.close();
    tmp.cleanup();
  }
}

await main();
