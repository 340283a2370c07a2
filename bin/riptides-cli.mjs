#!/usr/bin/env node
// Runs the TypeScript CLI through tsx's loader, so the shipped command and the tests run the same source.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../reconciler/cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
