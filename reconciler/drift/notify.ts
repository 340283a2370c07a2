/**
 * POSTs a drift report to a webhook URL (a chat bridge, an alerting hook, a CI trigger), bounded: one overall
 * deadline (default 10 s), the answer's body read at most 64 KiB then dropped, no redirect followed (a redirect
 * is a failure: the URL may carry a token, as Slack's do, and must not be replayed elsewhere). https, or plain
 * http to a loopback address only. With a secret, the body is signed as GitHub signs its deliveries
 * (`X-Riptides-Signature-256: sha256=<HMAC-SHA256 hex>`), so the receiver can check it came from here.
 * Failures are values; messages show the URL's origin only (its path or query may be the credential).
 */

import { createHmac } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isLoopbackHost } from '../../kernel-module/loopback.ts';
import { renderJson } from './render.ts';
import type { DriftReport } from './report.ts';

export interface NotifyOptions {
  timeoutMs?: number;
  /** HMAC key for X-Riptides-Signature-256. */
  secret?: string | Buffer;
  /** PEM trust for a private https endpoint. */
  ca?: string;
}

export type NotifyResult = { ok: true; status: number } | { ok: false; reason: string };

/** Checks a webhook URL when it is configured, so a bad one is refused at start rather than at the first report. */
export function checkWebhookUrl(raw: string): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new Error('the drift webhook URL does not parse as a URL');
  }
  if (url.username || url.password)
    throw new Error(
      `the drift webhook URL for ${url.origin} may not carry user:password; use a token in the path, or a signing secret`,
    );
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && isLoopbackHost(url.hostname)))
    throw new Error(`the drift webhook ${url.origin} must be https (plain http only to a loopback address)`);
  return url;
}

export function postReport(
  rawUrl: string,
  report: DriftReport,
  opts: NotifyOptions = {},
): Promise<NotifyResult> {
  let url: URL;
  try {
    url = checkWebhookUrl(rawUrl);
  } catch (err) {
    return Promise.resolve({ ok: false, reason: (err as Error).message });
  }
  const body = renderJson(report);
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve) => {
    let settled = false;
    const finish = (r: NotifyResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(r);
    };
    const req = send(
      url,
      {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          'user-agent': 'riptides-drift',
          ...(opts.secret
            ? {
                'x-riptides-signature-256': `sha256=${createHmac('sha256', opts.secret).update(body).digest('hex')}`,
              }
            : {}),
        },
        ...(opts.ca ? { ca: opts.ca } : {}),
      },
      (res) => {
        let seen = 0;
        res.on('data', (c: Buffer) => {
          seen += c.length;
          if (seen > 64 * 1024) res.destroy();
        });
        res.on('close', () => {
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300) finish({ ok: true, status });
          else if (status >= 300 && status < 400)
            finish({
              ok: false,
              reason: `${url.origin} answered a redirect (${status}); redirects are not followed`,
            });
          else finish({ ok: false, reason: `${url.origin} answered HTTP ${status}` });
        });
      },
    );
    const timer = setTimeout(() => {
      req.destroy();
      finish({ ok: false, reason: `${url.origin} did not answer within ${timeoutMs} ms` });
    }, timeoutMs);
    req.on('error', (err) =>
      finish({ ok: false, reason: `${url.origin}: ${(err as NodeJS.ErrnoException).code ?? err.message}` }),
    );
    req.end(body);
  });
}
