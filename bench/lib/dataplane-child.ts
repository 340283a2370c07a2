/**
 * One data plane in a process of its own, driven over IPC by bench/dataplane.bench.ts, so that its CPU is its
 * own (like one HAProxy process) and its RSS can be read alone. Messages: start {inputs, options} → started
 * {addresses}; rss → rss {rss} (after a full GC); stop.
 */
import { DataPlane, type DataPlaneOptions } from '../../kernel-module/dataplane/dataplane.ts';
import type { CredentialValue, KeyPair, RuleTable } from '../../kernel-module/dataplane/inputs.ts';
import { inputsByProcessName, loopbackLookup } from '../../test/dataplane/support.ts';

interface Start {
  type: 'start';
  inputs: {
    rules: RuleTable;
    svids: Record<string, KeyPair>;
    bundle: string;
    interceptCa: KeyPair;
    credentials: Record<string, CredentialValue>;
    byName: Record<string, string>;
  };
  options: Omit<DataPlaneOptions, 'inputs' | 'lookup'>;
  /** Resolve *.amazonaws.com and *.test to loopback (the upstream stands in for AWS). */
  loopback?: boolean;
}

let dp: DataPlane | null = null;
const send = (m: unknown) => process.send!(m);

process.on('message', async (msg: Start | { type: 'rss' | 'stop' }) => {
  if (msg.type === 'start') {
    const inputs = inputsByProcessName(new Map(Object.entries(msg.inputs.byName)));
    inputs.setTrustBundle(msg.inputs.bundle);
    inputs.setInterceptCa(msg.inputs.interceptCa);
    for (const [id, pair] of Object.entries(msg.inputs.svids)) inputs.setSvid(id, pair);
    for (const [hash, value] of Object.entries(msg.inputs.credentials)) inputs.loadCredential(hash, value);
    inputs.setRules(msg.inputs.rules);
    dp = new DataPlane({ ...msg.options, inputs, ...(msg.loopback ? { lookup: loopbackLookup } : {}) });
    send({ type: 'started', addresses: await dp.start() });
  } else if (msg.type === 'rss') {
    for (let i = 0; i < 3; i++) (globalThis as { gc?: () => void }).gc?.();
    send({ type: 'rss', rss: process.memoryUsage().rss });
  } else if (msg.type === 'stop') {
    await dp?.stop();
    process.exit(0);
  }
});
