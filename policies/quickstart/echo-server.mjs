#!/usr/bin/env node
// The quickstart's demo server (not part of the product): answers every request with what it received, as
// JSON. Plain HTTP by default; HTTPS with --cert and --key. With --expect-bearer-env VAR it also checks
// `Authorization: Bearer <token>` against the token in $VAR: 401 when it is absent or another one.
//
// The token itself is never echoed back (the point of the demo is that the client never holds it): the
// response and the log say whether it matched, and show the header as "Bearer (redacted, N characters)".
//
//   node echo-server.mjs --listen 127.0.0.1:18443 --cert echo.crt --key echo.key --expect-bearer-env ECHO_TOKEN
//   node echo-server.mjs --listen 127.0.0.1:18081
//
// Node built-ins only; one JSON line per request on stdout.
import { readFileSync } from 'node:fs';
import { createServer as createHttp } from 'node:http';
import { createServer as createHttps } from 'node:https';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    listen: { type: 'string', default: '127.0.0.1:18443' },
    cert: { type: 'string' },
    key: { type: 'string' },
    'expect-bearer-env': { type: 'string' },
    name: { type: 'string' },
  },
});
const at = /^(?:\[([0-9a-fA-F:.]+)\]|([^:]+)):(\d+)$/.exec(values.listen);
if (!at) {
  console.error(`--listen must be HOST:PORT (got ${values.listen})`);
  process.exit(2);
}
const host = at[1] ?? at[2];
const port = Number(at[3]);
const expected = values['expect-bearer-env'] ? process.env[values['expect-bearer-env']] : undefined;
if (values['expect-bearer-env'] && !expected) {
  console.error(
    `$${values['expect-bearer-env']} is empty: set it to the token the client's requests must carry`,
  );
  process.exit(2);
}
const name = values.name ?? (values.cert ? 'echo' : 'orders-api');

function bearerState(authorization) {
  if (expected === undefined) return 'not checked';
  if (!authorization) return 'absent';
  return authorization === `Bearer ${expected}` ? 'matches' : 'does not match';
}

function handle(req, res) {
  const chunks = [];
  let size = 0;
  req.on('data', (c) => {
    size += c.length;
    if (size <= 64 * 1024) chunks.push(c);
  });
  req.on('end', () => {
    const headers = { ...req.headers };
    if (headers.authorization)
      headers.authorization = `${headers.authorization.split(' ')[0]} (redacted, ${headers.authorization.length} characters)`;
    const bearer = bearerState(req.headers.authorization);
    const ok = expected === undefined || bearer === 'matches';
    const body = {
      server: name,
      method: req.method,
      path: req.url,
      from: `${req.socket.remoteAddress}:${req.socket.remotePort}`,
      bearer,
      headers,
      bodyBytes: size,
    };
    console.log(JSON.stringify({ time: new Date().toISOString(), ...body, headers: undefined }));
    res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json' });
    res.end(`${JSON.stringify(body, null, 2)}\n`);
  });
}

const server =
  values.cert && values.key
    ? createHttps({ cert: readFileSync(values.cert), key: readFileSync(values.key) }, handle)
    : createHttp(handle);
server.listen(port, host, () => {
  const a = server.address();
  console.log(
    JSON.stringify({ listening: `${a.address}:${a.port}`, tls: Boolean(values.cert), server: name }),
  );
});
for (const s of ['SIGINT', 'SIGTERM'])
  process.on(s, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
