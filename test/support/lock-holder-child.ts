/** Test child: takes the lock on argv[2] (exclusive, or shared with argv[3] = "shared"), says "held", waits. */
import { lockFile } from '../../reconciler/common/file-lock.ts';

await lockFile(process.argv[2]!, { shared: process.argv[3] === 'shared', busyMessage: () => 'busy' });
process.stdout.write('held\n');
setInterval(() => {}, 60_000);
