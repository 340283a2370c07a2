/**
 * Child process of crash.test.ts: writes to a state store as fast as it can, the three shapes at once (journal
 * puts and deletes, the applied revision, a status snapshot), and prints `ack <n>` once every write of step n
 * has resolved. The parent kills it with SIGKILL at a random moment. Record contents are a pure function of n
 * (see expected* in crash.test.ts).
 */
import { writeSync } from 'node:fs';
import { StateStore } from '../../reconciler/store/state-store.ts';
import { expectedApplied, expectedSerial, expectedStatus, serialKey } from './crash-shapes.ts';

const [stateDir, startText] = process.argv.slice(2);
const store = await StateStore.open({ stateDir: stateDir!, compactSlack: 40 });
writeSync(1, 'ready\n');
for (let n = Number(startText); ; n++) {
  const writes: Promise<void>[] = [store.serials.put(serialKey(n), expectedSerial(n))];
  if (n % 3 === 0) writes.push(store.applied.set(expectedApplied(n)));
  if (n % 5 === 0) writes.push(store.status.set(expectedStatus(n)));
  if (n % 7 === 0 && n >= 7) writes.push(store.serials.delete(serialKey(n - 7)));
  await Promise.all(writes);
  writeSync(1, `ack ${n}\n`);
}
