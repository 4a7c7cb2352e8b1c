/**
 * `npm run bench`: runs every benchmark (bench/p*.ts) in its own process, one after another,
 * so each gets the machine to itself. `npm run bench -- p5` runs the ones whose name starts so.
 * Each benchmark prints its figures with a same-run baseline ratio and writes
 * `.bench/<name>.json`; docs/benchmarks.md records the latest.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const wanted = process.argv.slice(2);
const benchmarks = readdirSync(here)
  .filter((file) => /^p\d+-[\w-]+\.ts$/.test(file))
  .filter((file) => wanted.length === 0 || wanted.some((prefix) => file.startsWith(prefix)))
  .sort((a, b) => Number(a.slice(1, a.indexOf('-'))) - Number(b.slice(1, b.indexOf('-'))));

let failed = 0;
for (const file of benchmarks) {
  console.log(`\n=== ${file}`);
  const result = spawnSync(process.execPath, ['--import', 'tsx', '--expose-gc', path.join(here, file)], {
    stdio: 'inherit',
  });
  if (result.status !== 0) {
    failed++;
    console.log(`!!! ${file} exited with ${result.status ?? result.signal}`);
  }
}
process.exit(failed ? 1 : 0);
