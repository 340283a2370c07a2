/**
 * riptides-cli as shipped (dist/, built by `npm run bench`) in a fresh process, for benchmarks: runs the
 * command, then prints {ms, maxRssMB, code} as its last line (the command's own output goes before it).
 */
import { maxRssMB } from './measure.ts';

const { main } = (await import(new URL('../../dist/reconciler/cli/main.js', import.meta.url).href)) as {
  main: (argv: string[], io: unknown) => Promise<number>;
};
const start = performance.now();
const code = await main(process.argv.slice(2), {
  stdout: () => {},
  stderr: () => {},
  env: process.env,
  cwd: process.cwd(),
});
console.log(JSON.stringify({ ms: performance.now() - start, maxRssMB: maxRssMB(), code }));
