/**
 * Our issuer's OIDC discovery document and JWKS on a real loopback HTTPS server, so the Vault and STS test
 * servers fetch keys over the network as the real ones do. The URL exists before the authority (its issuer
 * names it), so the handler is attached afterwards.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { type Routed, TestHttpsServer } from './base.ts';

export class OidcIssuerServer extends TestHttpsServer {
  handler: ((req: IncomingMessage, res: ServerResponse) => Promise<boolean>) | undefined;

  /** The issuer URL to give the authority: this server plus a path, as a hosted issuer often has. */
  get issuer(): string {
    return `${this.url}/oidc`;
  }

  protected unavailable(res: ServerResponse): void {
    res.writeHead(503);
    res.end();
  }

  protected route(req: IncomingMessage, res: ServerResponse): Routed {
    return {
      key: (req.url ?? '').endsWith('/keys') ? 'jwks' : 'discovery',
      handle: async () => {
        if (this.handler && (await this.handler(req, res))) return;
        res.writeHead(404, { 'content-type': 'text/plain' });
        res.end('not found\n');
      },
    };
  }
}
