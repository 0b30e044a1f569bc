// Bundle size of the client as a browser app would ship it (npm run size): esbuild, ESM,
// minified, browser platform; gzip at level 9.
import { build } from 'esbuild';
import { existsSync } from 'node:fs';
import { gzipSync } from 'node:zlib';

const root = new URL('..', import.meta.url).pathname;
// src/index.ts is the client's entry; until it exists, the codec's is the best measure.
const entry = existsSync(root + 'src/index.ts') ? 'src/index.ts' : 'src/codec/index.ts';
const r = await build({
  entryPoints: [root + entry],
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  minify: true,
  write: false,
  logLevel: 'warning',
});
const code = r.outputFiles[0].contents;
const gz = gzipSync(code, { level: 9 }).length;
console.log(`${entry}: ${code.length} B minified, ${gz} B gzipped (level 9); target for the whole client: < 12288 B gzipped`);
if (entry !== 'src/index.ts') console.log('(src/index.ts does not exist yet: this is the codec alone)');
