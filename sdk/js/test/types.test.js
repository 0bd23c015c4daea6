// The hand-written .d.ts compiles, and describes the API the way test/types-check.ts uses it.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

const here = fileURLToPath(new URL('.', import.meta.url));
const tsc = fileURLToPath(new URL('../node_modules/typescript/bin/tsc', import.meta.url));

test('index.d.ts type-checks against its usage (tsc --strict)', { skip: !existsSync(tsc) && 'typescript not installed (npm ci)' }, () => {
  const result = spawnSync(process.execPath, [tsc, '-p', `${here}tsconfig.json`], { encoding: 'utf8' });
  assert.equal(result.status, 0, `${result.stdout}\n${result.stderr}`);
});
