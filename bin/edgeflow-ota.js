#!/usr/bin/env node
// Runs the TypeScript sources through tsx's loader: nothing to build before `npm start`.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
