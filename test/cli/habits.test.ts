/** What people type from habit: --version, and a near miss of a command, subcommand or flag. */
import { describe, expect, it } from 'vitest';
import { buildId } from '../../reconciler/build-id.ts';
import { subcommand } from '../../reconciler/cli/command.ts';
import { main } from '../../reconciler/cli/main.ts';
import { packageVersion } from '../../reconciler/version.ts';
import { capture } from '../support/cli.ts';
import { tempDir } from '../support/scratch.ts';

async function cli(...argv: string[]) {
  const out = capture();
  const code = await main(argv, out.io);
  return { code, stdout: out.stdout, stderr: out.stderr };
}

describe('riptides-cli habits', () => {
  it('--version prints the version and the build, and so does <command> --version', async () => {
    const expected = `riptides-cli ${packageVersion()} (build ${buildId().slice(0, 12)}, node ${process.version})\n`;
    for (const argv of [['--version'], ['version'], ['plan', '--version']]) {
      const r = await cli(...argv);
      expect(r, argv.join(' ')).toEqual({ code: 0, stdout: expected, stderr: '' });
    }
  });

  it('suggests the command meant, and exits 2', async () => {
    expect(await cli('valdate', '--repo', '.')).toEqual({
      code: 2,
      stdout: '',
      stderr:
        'riptides-cli: unknown command "valdate"; did you mean "validate"?\nRun `riptides-cli --help` for the commands.\n',
    });
    expect((await cli('credential', 'check')).stderr).toContain('did you mean "credentials"?');
    const none = await cli('frobnicate');
    expect(none.code).toBe(2);
    expect(none.stderr).toBe(
      'riptides-cli: unknown command "frobnicate"\nRun `riptides-cli --help` for the commands.\n',
    );
  });

  it('calls a word named like a property every object has an unknown command', async () => {
    for (const name of ['constructor', 'toString', '__proto__', 'hasOwnProperty', 'valueOf']) {
      const r = await cli(name);
      expect(r.code, name).toBe(2);
      expect(r.stderr).toMatch(
        new RegExp(`^riptides-cli: unknown command "${name}"(; did you mean "\\w+"\\?)?\n`),
      );
      expect(r.stdout).toBe('');
    }
  });

  it('suggests --version or --help for a near miss before any command', async () => {
    expect(await cli('--verison')).toEqual({
      code: 2,
      stdout: '',
      stderr:
        'riptides-cli: unknown flag --verison; did you mean "--version"?\nRun `riptides-cli --help` for the commands.\n',
    });
    expect((await cli('--hlep')).stderr).toContain('unknown flag --hlep; did you mean "--help"?');
    expect((await cli('--repo', '.')).stderr).toContain('unknown flag --repo (flags go after the command)');
  });

  it('says SSH remotes are not supported, in whichever form git takes them', async () => {
    const env = { XDG_CACHE_HOME: tempDir('ssh-remotes') };
    for (const repo of [
      'git@github.com:acme/policy.git',
      'ssh://git@github.com/acme/policy.git',
      'git+ssh://git@github.com/acme/policy.git',
    ]) {
      const out = capture(process.cwd(), env);
      const code = await main(['plan', '--repo', repo, '--head', 'main'], out.io);
      expect(code, repo).toBe(2);
      expect(out.stderr, repo).toMatch(
        /^riptides-cli plan: github\.com[:/]acme\/policy\.git: SSH remotes are not supported\n {2}hint: use the https:\/\/ URL of the repository with a token in RIPTIDES_GIT_TOKEN, or a local clone\n$/,
      );
    }
  });

  it('suggests the flag meant, in every command, and exits 2', async () => {
    const r = await cli('validate', '--rep', '.');
    expect(r).toEqual({
      code: 2,
      stdout: '',
      stderr:
        'riptides-cli validate: unknown flag --rep; did you mean "--repo"?\nRun `riptides-cli validate --help` for usage.\n',
    });
    expect((await cli('plan', '--repo', '.', '--haed', 'main')).stderr).toContain(
      'unknown flag --haed; did you mean "--head"?',
    );
    expect((await cli('svid', 'mint', '--spife-id', 'x')).stderr).toContain(
      'unknown flag --spife-id; did you mean "--spiffe-id"?',
    );
    expect((await cli('validate', '--repo=.', '--formt=json')).stderr).toContain(
      'unknown flag --formt; did you mean "--format"?',
    );
  });

  it('suggests the subcommand meant', async () => {
    expect((await cli('ca', 'rotat', '--dir', 'x')).stderr).toBe(
      'riptides-cli ca: unknown subcommand "rotat"; did you mean "rotate"? (the subcommands are init, rotate or show)\nRun `riptides-cli ca --help` for usage.\n',
    );
  });

  it('takes flags before the subcommand as after it', async () => {
    const dir = '/nonexistent/riptides-state';
    const before = await cli('ctl', '--state-dir', dir, 'get', 'wid');
    const after = await cli('ctl', 'get', 'wid', '--state-dir', dir);
    expect(before.stderr).not.toContain('unknown subcommand');
    expect(before).toEqual(after);
    expect((await cli('ca', '--dir', 'x', 'rotat')).stderr).toContain('unknown subcommand "--dir"');
    // A flag's value is never taken for the subcommand: here the namespace is "delete".
    const flags = { namespace: { type: 'string', short: 'n' }, 'state-dir': { type: 'string' } } as const;
    const subs = ['get', 'describe', 'apply', 'delete'] as const;
    expect(subcommand(['-n', 'delete', 'describe', 'wid', 'x'], subs, flags)).toEqual([
      'describe',
      ['-n', 'delete', 'wid', 'x'],
    ]);
    expect(subcommand(['--state-dir=get', 'delete', 'wid', 'x'], subs, flags)[0]).toBe('delete');
    expect(() => subcommand(['--other', 'delete', 'get'], subs, flags)).toThrow(
      /unknown subcommand "--other"/,
    );
  });

  it('lists every command and the flags every command takes', async () => {
    const r = await cli('--help');
    expect(r.code).toBe(0);
    for (const name of ['validate', 'plan', 'credentials', 'ca', 'svid', 'jwt', 'bundle', 'oidc'])
      expect(r.stdout).toMatch(new RegExp(`^  ${name} +\\S`, 'm'));
    expect(r.stdout).toContain('--debug');
    expect(r.stdout).toContain('--version');
  });
});
