/**
 * boto3 (Debian's python3-boto3) with placeholder keys → data plane (proxy, intercept, SigV4 re-signing) → an
 * STS stand-in that verifies the signature with botocore's own signer and the temporary credentials.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataPlane } from '../../kernel-module/dataplane/dataplane.ts';
import {
  authority,
  awsBinding,
  baseInputs,
  destination,
  egress,
  id,
  identity,
  loopbackLookup,
  run,
  scratch,
  table,
  upstreamTls,
} from './support.ts';

const PYTHON = '/usr/bin/python3';
const HOST = 'sts.us-east-1.amazonaws.com';
const CLIENT = id('billing/reporter');
const TEMP = {
  accessKeyId: 'ASIATEMPORARYKEY0001',
  secretAccessKey: 'temporary/secret+key',
  sessionToken: 'FwoGZXIvYXdzEXAMPLEsessiontoken==',
};

const BOTO = `
import sys, boto3
from botocore.config import Config
client = boto3.client("sts", region_name="us-east-1", endpoint_url=sys.argv[1],
    aws_access_key_id="AKIAPLACEHOLDER00000", aws_secret_access_key="placeholder-secret",
    config=Config(retries={"max_attempts": 1}))
try:
    print(client.get_caller_identity()["Arn"])
except Exception as e:
    print("ERROR", e)
`;

describe('SigV4: boto3 → data plane → upstream verifying with botocore', () => {
  const tmp = scratch();
  let upstream: ChildProcess;
  let port = 0;
  const verdicts: Array<{ code: string | null; message: string }> = [];
  let dp: DataPlane;
  let proxy = '';
  let upstreamCaFile = '';
  let interceptCaFile = '';

  beforeAll(async () => {
    const tls = upstreamTls([HOST, 'localhost']);
    writeFileSync(join(tmp.dir, 'up.pem'), tls.cert);
    writeFileSync(join(tmp.dir, 'up.key'), tls.key);
    upstreamCaFile = join(tmp.dir, 'up-ca.pem');
    writeFileSync(upstreamCaFile, tls.ca);
    const script = fileURLToPath(new URL('./sigv4_upstream.py', import.meta.url));
    upstream = spawn(
      PYTHON,
      [
        script,
        join(tmp.dir, 'up.pem'),
        join(tmp.dir, 'up.key'),
        TEMP.accessKeyId,
        TEMP.secretAccessKey,
        TEMP.sessionToken,
      ],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    const lines = createInterface({ input: upstream.stdout! });
    port = await new Promise<number>((resolve) => lines.once('line', (l) => resolve(Number(l))));
    lines.on('line', (l) => verdicts.push(JSON.parse(l)));

    const ca = await authority(join(tmp.dir, 'ca'));
    const inputs = await baseInputs(new Map([['python3', CLIENT]]), ca, [CLIENT]);
    const sts = destination(HOST, null, 'Service/riptides-system/aws-sts');
    const aws = awsBinding('cred-aws', 'reporter-aws', [sts]);
    inputs.setRules(
      table([
        identity(CLIENT, {
          egress: [egress([sts], { mode: 'SIMPLE', intercept: true })],
          credentials: [aws],
        }),
      ]),
    );
    inputs.loadCredential('cred-aws', { kind: 'aws', ...TEMP, expiresAt: new Date(Date.now() + 3_600_000) });
    interceptCaFile = join(tmp.dir, 'ca-certificates.crt');
    writeFileSync(interceptCaFile, inputs.interceptCa()!.cert);
    dp = new DataPlane({
      inputs,
      proxyListen: { host: '127.0.0.1', port: 0 },
      upstreamCa: tls.ca,
      lookup: loopbackLookup,
    });
    proxy = `http://127.0.0.1:${(await dp.start()).proxy!.port}`;
  }, 60_000);

  afterAll(async () => {
    await dp?.stop();
    upstream?.kill();
    tmp.cleanup();
  });

  const boto = (endpoint: string, env: Record<string, string>) =>
    run(PYTHON, ['-c', BOTO, endpoint], {
      timeout: 30_000,
      env: {
        PATH: '/usr/bin:/bin',
        HOME: tmp.dir,
        AWS_CONFIG_FILE: '/dev/null',
        AWS_SHARED_CREDENTIALS_FILE: '/dev/null',
        ...env,
      },
    }).then((r) => r.stdout.trim());

  it('the request verifies with the temporary credentials', async () => {
    verdicts.length = 0;
    const out = await boto(`https://${HOST}:${port}`, { HTTPS_PROXY: proxy, AWS_CA_BUNDLE: interceptCaFile });
    expect(out).toBe('arn:aws:sts::123456789012:assumed-role/demo/riptides');
    expect(verdicts).toEqual([expect.objectContaining({ code: null, message: 'verified' })]);
    const scrape = await dp.metrics.registry.getSingleMetricAsString(
      'riptides_dataplane_credentials_injected_total',
    );
    expect(scrape).toMatch(/kind="aws"/);
  });

  it('without the data plane, the placeholder keys are refused by the same verifier', async () => {
    verdicts.length = 0;
    const out = await boto(`https://localhost:${port}`, { AWS_CA_BUNDLE: upstreamCaFile });
    expect(out).toMatch(/^ERROR .*InvalidClientTokenId/);
    expect(verdicts).toEqual([expect.objectContaining({ code: 'InvalidClientTokenId' })]);
  });
});
