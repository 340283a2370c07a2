/**
 * The protocol contract: riptides_agent.proto compiles with a second, independent toolchain (protoc from
 * Debian), bytes protoc encodes decode with our loader and the reverse, and every message type named in
 * messages.ts survives a round trip through the .proto unchanged (so the TypeScript shapes are the .proto's).
 */
import { spawnSync } from 'node:child_process';
import { dirname } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { AgentMessage, ServerMessage } from '../../agent/protocol/messages.ts';
import {
  decodeAgentMessage,
  decodeServerMessage,
  encodeAgentMessage,
  encodeServerMessage,
  PROTO_FILE,
} from '../../agent/protocol/wire.ts';

const protoDir = dirname(PROTO_FILE);

function protoc(args: string[], input?: Buffer | string) {
  const r = spawnSync('protoc', [`--proto_path=${protoDir}`, ...args, 'riptides_agent.proto'], {
    input,
    timeout: 20_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr.toString() };
}

const destination = {
  service: 'Service/riptides-system/api',
  external: true,
  address: 'api.example.com',
  port: 443,
  aliases: ['api2.example.com'],
  networkPrefixes: ['10.0.0.0/8'],
};

/** One value of every ServerMessage member, every field set. */
const serverMessages: ServerMessage[] = [
  {
    kind: 'program',
    program: {
      nonce: 'n-1',
      versionInfo: '0123456789abcdef',
      baseVersion: 'fedcba9876543210',
      full: true,
      trustDomain: 'example.org',
      identities: [
        {
          spiffeId: 'spiffe://example.org/app/api',
          workloadId: 'app/api',
          resource: 'WorkloadIdentity/riptides-system/api',
          hash: 'aaaaaaaaaaaaaaaa',
          selectors: [
            { match: { 'process:name': { values: ['api', 'api2'] }, 'process:uid': { values: ['1000'] } } },
          ],
          inboundMode: 'TLS_MODE_MUTUAL',
          intercept: true,
          allowedInbound: ['spiffe://example.org/app/web'],
          allowedOutbound: ['spiffe://example.org/app/db'],
          x509TtlSeconds: 600,
          dnsNames: ['api.internal'],
          egressRuleHashes: ['bbbbbbbbbbbbbbbb'],
          credentialRefHashes: ['cccccccccccccccc'],
          scope: 'daemonGroup:g1',
        },
      ],
      removedIdentities: ['spiffe://example.org/app/old'],
      rules: [
        {
          hash: 'bbbbbbbbbbbbbbbb',
          index: 2,
          selectors: [{ labels: { app: 'api', tier: 'front' } }],
          destinations: [destination],
          mode: 'TLS_MODE_SIMPLE',
          intercept: true,
          allowedSpiffeIds: ['spiffe://example.org/app/db'],
          workloadId: 'app/api',
          credentialName: 'legacy',
        },
      ],
      credentialRefs: [
        {
          hash: 'cccccccccccccccc',
          via: 'CredentialBinding',
          resource: 'CredentialBinding/riptides-system/b',
          source: {
            resource: 'CredentialSource/riptides-system/s',
            type: 'vault',
            supported: true,
            specHash: 'dd',
          },
          injection: { destinations: [destination] },
          sysfs: { dir: '0123456789abcdef/b' },
        },
      ],
      scopes: ['daemonGroup:g1', 'daemon:riptides/daemon/n1'],
    },
  },
  {
    kind: 'svid',
    svid: {
      requestId: 'r1',
      spiffeId: 'spiffe://example.org/app/api',
      certChainDer: [Buffer.from([0x30, 0x01, 0x02]), Buffer.from([0x30, 0x03])],
      serial: '0abc',
      notAfterUnix: 1_900_000_000,
    },
  },
  {
    kind: 'credentials',
    credentials: {
      values: [
        {
          refHash: 'cccccccccccccccc',
          version: 3,
          fingerprint: '1234abcd',
          expiresAtUnix: 1_800_000_000,
          aws: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'not-a-secret', sessionToken: 'session' },
          value: 'aws',
        },
      ],
      withdrawn: ['eeeeeeeeeeeeeeee'],
    },
  },
  {
    kind: 'bundle',
    bundle: {
      trustDomain: 'example.org',
      version: '0011223344556677',
      x509Authorities: [Buffer.from([1, 2, 3])],
    },
  },
  {
    kind: 'refusal',
    refusal: {
      requestId: 'r2',
      messageKind: 'svid_request',
      error: { code: 'OUT_OF_SCOPE', message: 'not in the program', hint: 'ask for your own' },
    },
  },
  { kind: 'repair', repair: { requestId: 'heal-1' } },
];

const agentMessages: AgentMessage[] = [
  {
    kind: 'hello',
    hello: {
      protocolVersion: 1,
      agentVersion: '0.1.0',
      programVersion: '0123456789abcdef',
      identityVersions: { 'spiffe://example.org/app/api': 'aaaaaaaaaaaaaaaa' },
      ruleHashes: ['bbbbbbbbbbbbbbbb'],
      credentialRefHashes: ['cccccccccccccccc'],
      credentials: [{ refHash: 'cccccccccccccccc', version: 2, fingerprint: '1234abcd', expiresAtUnix: 5 }],
      bundleVersion: '0011223344556677',
    },
  },
  {
    kind: 'ack',
    ack: {
      responseNonce: 'n-1',
      versionInfo: 'fedcba9876543210',
      errorDetail: { code: 'LIMIT', message: 'too many identities', hint: 'raise --max-identities' },
    },
  },
  {
    kind: 'report',
    report: {
      programVersion: '0123456789abcdef',
      identities: [
        {
          spiffeId: 'spiffe://example.org/app/api',
          svidSerial: '0a',
          svidNotAfterUnix: 1_900_000_000,
          processCount: 2,
          hash: 'aaaaaaaaaaaaaaaa',
        },
      ],
      credentials: [{ refHash: 'cccccccccccccccc', version: 2, fingerprint: '1234abcd', expiresAtUnix: 0 }],
      processes: [
        { pid: 4242, spiffeId: '', conflicts: ['spiffe://example.org/a', 'spiffe://example.org/b'] },
      ],
      control: {
        health: 'OK',
        enforcedVersion: '0123456789abcdef',
        enforcedGeneration: 7,
        error: '',
        drift: ['changed rules'],
      },
      atUnixMs: 1_800_000_000_123,
      bundleVersion: '0011223344556677',
      rejectedVersion: 'fedcba9876543210',
      rejectedError: { code: 'CONTROL_REFUSED', message: 'bad', hint: '' },
      dataPlane: {
        health: 'OK',
        listeners: [
          { kind: 'proxy', address: '127.0.0.1:15001', target: '' },
          {
            kind: 'inbound',
            address: '127.0.0.1:18080',
            target: 'spiffe://example.org/app/api -> 127.0.0.1:18081',
          },
        ],
        activeOutbound: 3,
        activeInbound: 1,
        connections: { 'outbound/mtls': 12, 'inbound/mtls': 9 },
        handshakesFailed: { 'inbound/not-allowed': 2 },
        credentialsInjected: { 'api-token': 40 },
        requestsRefused: { 'credential-unavailable': 1 },
        connectionsRevoked: 1,
      },
      repairedId: 'heal-1',
    },
  },
  {
    kind: 'svidRequest',
    svidRequest: {
      requestId: 'r1',
      spiffeId: 'spiffe://example.org/app/api',
      csrDer: Buffer.from([0x30, 0x00]),
    },
  },
];

describe('agent protocol (.proto)', () => {
  it('compiles with protoc, a second independent toolchain', () => {
    const r = protoc(['--descriptor_set_out=/dev/null']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it('decodes what protoc encodes, field by field', () => {
    const text = [
      'program {',
      '  nonce: "abc"',
      '  version_info: "0123456789abcdef"',
      '  trust_domain: "example.org"',
      '  identities { spiffe_id: "spiffe://example.org/x" hash: "h1" inbound_mode: TLS_MODE_PERMISSIVE',
      '    selectors { match { key: "process:name" value { values: "x" } } } egress_rule_hashes: "r1" }',
      '  removed_identities: "spiffe://example.org/gone"',
      '}',
    ].join('\n');
    const r = protoc(['--encode=riptides.agent.v1.ServerMessage'], text);
    expect(r.stderr).toBe('');
    const m = decodeServerMessage(r.stdout);
    expect(m.kind).toBe('program');
    expect(m.program?.nonce).toBe('abc');
    expect(m.program?.versionInfo).toBe('0123456789abcdef');
    expect(m.program?.identities[0]?.inboundMode).toBe('TLS_MODE_PERMISSIVE');
    expect(m.program?.identities[0]?.selectors[0]?.match['process:name']?.values).toEqual(['x']);
    expect(m.program?.identities[0]?.egressRuleHashes).toEqual(['r1']);
    expect(m.program?.removedIdentities).toEqual(['spiffe://example.org/gone']);
  });

  it('a report with the data plane state decodes from protoc, and one without it (an older agent) still does', () => {
    const text = [
      'report {',
      '  program_version: "0123456789abcdef"',
      '  data_plane {',
      '    health: "OK"',
      '    listeners { kind: "proxy" address: "127.0.0.1:15001" }',
      '    active_outbound: 2',
      '    connections { key: "outbound/mtls" value: 5 }',
      '    credentials_injected { key: "api-token" value: 7 }',
      '    connections_revoked: 1',
      '  }',
      '}',
    ].join('\n');
    const withPlane = protoc(['--encode=riptides.agent.v1.AgentMessage'], text);
    expect(withPlane.stderr).toBe('');
    const plane = decodeAgentMessage(withPlane.stdout).report?.dataPlane;
    expect(plane).toMatchObject({
      health: 'OK',
      listeners: [{ kind: 'proxy', address: '127.0.0.1:15001', target: '' }],
      activeOutbound: 2,
      connections: { 'outbound/mtls': 5 },
      credentialsInjected: { 'api-token': 7 },
      connectionsRevoked: 1,
    });
    const older = protoc(['--encode=riptides.agent.v1.AgentMessage'], 'report { program_version: "v" }');
    expect(decodeAgentMessage(older.stdout).report).toMatchObject({ programVersion: 'v', dataPlane: null });
  });

  it('encodes what protoc decodes', () => {
    const bytes = encodeAgentMessage({
      ack: { responseNonce: 'n9', versionInfo: 'v0', errorDetail: { code: 'LIMIT', message: 'm', hint: '' } },
    });
    const r = protoc(['--decode=riptides.agent.v1.AgentMessage'], bytes);
    expect(r.stderr).toBe('');
    const text = r.stdout.toString();
    expect(text).toContain('response_nonce: "n9"');
    expect(text).toContain('version_info: "v0"');
    expect(text).toMatch(/error_detail \{\s+code: "LIMIT"/);
  });

  it.each(serverMessages.map((m) => [m.kind, m] as const))(
    'round-trips every field of ServerMessage.%s',
    (_k, m) => {
      expect(decodeServerMessage(encodeServerMessage(m))).toEqual(m);
    },
  );

  it.each(agentMessages.map((m) => [m.kind, m] as const))(
    'round-trips every field of AgentMessage.%s',
    (_k, m) => {
      expect(decodeAgentMessage(encodeAgentMessage(m))).toEqual(m);
    },
  );
});
