//! The client's JSDoc types hold: `tsc -p web-client` (tsconfig.json: checkJs, strict but
//! without null checks) finds no error, so every socket handler reads the node's messages as
//! protocol.js describes them. No browser; nothing is emitted.

import { it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { REPO } from './helpers.mjs';

const web = path.join(REPO, 'web-client');

it('tsc --checkJs finds no type error in the client', { timeout: 120_000 }, async () => {
  const tsc = path.join(web, 'node_modules', 'typescript', 'bin', 'tsc');
  const { code, out } = await new Promise((resolve) => {
    execFile(process.execPath, [tsc, '-p', web, '--pretty', 'false'], { cwd: web, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, out: `${stdout}${stderr}` });
    });
  });
  assert.equal(code, 0, `tsc found errors:\n${out}`);
});
