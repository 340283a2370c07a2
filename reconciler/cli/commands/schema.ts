import { join, resolve } from 'node:path';
import { writeFileAtomic } from '../../common/atomic-file.ts';
import { combinedJsonSchema, kindJsonSchemas } from '../../policy/json-schema.ts';
import { type Command, type CommandIO, EXIT_OK, parseFlags, requireFlag } from '../command.ts';

const help = `Usage: riptides-cli schema --out DIR

Writes the JSON Schema of every kind (WorkloadIdentity.json, Service.json, …) and riptides.schema.json, which
takes any of them and checks each document against the schema of its kind, into DIR. They come from the same
schemas that validate uses, with the patterns and exactly-one-of rules a schema can state; references between
resources are checked by validate only. For completion and inline errors in editors with yaml-language-server,
put this first line into a policy file:

  # yaml-language-server: $schema=<DIR>/riptides.schema.json
`;

export const command: Command = {
  name: 'schema',
  summary: 'write JSON Schemas of every kind for editors',
  help,
  async run(argv: string[], io: CommandIO) {
    const { values } = parseFlags(argv, { out: { type: 'string' } });
    const out = resolve(io.cwd, requireFlag(values.out, 'out'));
    const schemas = kindJsonSchemas();
    for (const [kind, schema] of Object.entries(schemas)) {
      await writeFileAtomic(join(out, `${kind}.json`), `${JSON.stringify(schema, null, 2)}\n`, {
        dirMode: 0o777,
      });
    }
    await writeFileAtomic(
      join(out, 'riptides.schema.json'),
      `${JSON.stringify(combinedJsonSchema(), null, 2)}
`,
      {
        dirMode: 0o777,
      },
    );
    io.stdout(`wrote ${Object.keys(schemas).length + 1} schemas to ${out}\n`);
    return EXIT_OK;
  },
};
