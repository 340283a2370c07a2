/**
 * Child process of api.test.ts: a reconciler API on loopback with a status store opened from its state dir and
 * the graceful shutdown installed, answering /api/v1/status slowly (400 ms) so that a SIGTERM arrives while a
 * request is in flight. Logs go to stdout as JSON lines.
 */
import { startApiServer } from '../../reconciler/http/server.ts';
import { onTermination } from '../../reconciler/shutdown.ts';
import { StateStore } from '../../reconciler/store/state-store.ts';
import { createLogger } from '../../reconciler/telemetry/logger.ts';
import { ReconcilerMetrics } from '../../reconciler/telemetry/metrics.ts';
import { seededBook } from '../support/status-fixture.ts';

const stateDir = process.argv[2]!;
const logger = createLogger({ level: 'info' });
const store = await StateStore.open({ stateDir });
const book = seededBook(new Date());
await store.status.set(book.snapshot());
const api = await startApiServer({
  host: '127.0.0.1',
  port: 0,
  stateDir,
  metrics: new ReconcilerMetrics({ defaultMetrics: false }),
  ready: () => ({ ready: true }),
  status: async () => {
    await new Promise((r) => setTimeout(r, 400));
    return book.snapshot();
  },
  logger,
});
onTermination(
  [
    { name: 'api', run: () => api.close(5000) },
    { name: 'store', run: () => store.close() },
  ],
  { logger },
);
logger.info({ url: api.url }, 'serving');
