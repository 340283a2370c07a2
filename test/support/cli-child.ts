/** The CLI as a child of runCliBounded: runs main() with the real streams, then reports its peak RSS. */
import { main } from '../../reconciler/cli/main.ts';

const code = await main(process.argv.slice(2), {
  stdout: (t) => process.stdout.write(t),
  stderr: (t) => process.stderr.write(t),
  env: process.env,
  cwd: process.cwd(),
});
process.stderr.write(`\n@@riptides-peak-rss-mib ${Math.round(process.resourceUsage().maxRSS / 1024)}\n`, () =>
  process.exit(code),
);
