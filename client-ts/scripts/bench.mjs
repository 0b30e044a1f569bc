// Runs bench/codec.bench.ts as one esbuild ESM bundle, as a browser or a bundler would ship
// the codec: running it through tsx instead measures tsx's module shims (getters for every
// imported binding), not the codec.
import { build } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const dir = mkdtempSync(join(tmpdir(), 'peerd-bench-'));
const out = join(dir, 'codec.bench.mjs');
try {
  await build({
    entryPoints: [new URL('../bench/codec.bench.ts', import.meta.url).pathname],
    bundle: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    outfile: out,
    define: { 'import.meta.url': JSON.stringify(new URL('../bench/codec.bench.ts', import.meta.url).href) },
    logLevel: 'warning',
  });
  const r = spawnSync(process.execPath, [out], { stdio: 'inherit' });
  process.exitCode = r.status ?? 1;
} finally {
  rmSync(dir, { recursive: true, force: true });
}
