//! The client's JSDoc types hold: `tsc` finds no error in the page's modules (tsconfig.json:
//! checkJs, strict but without null checks; every socket handler and sender against the
//! messages protocol.js describes) nor in the workers (tsconfig.worker.json: the service
//! worker and the e2ee frame worker, with the worker's globals). No browser; nothing emitted.

import { it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { REPO } from './helpers.mjs';

const web = path.join(REPO, 'web-client');
const tsc = path.join(web, 'node_modules', 'typescript', 'bin', 'tsc');

function check(project) {
  return new Promise((resolve) => {
    execFile(process.execPath, [tsc, '-p', path.join(web, project), '--pretty', 'false'], { cwd: web, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, out: `${stdout}${stderr}` });
    });
  });
}

for (const project of ['tsconfig.json', 'tsconfig.worker.json']) {
  it(`tsc -p ${project} finds no type error`, { timeout: 120_000 }, async () => {
    const { code, out } = await check(project);
    assert.equal(code, 0, `tsc -p ${project} found errors:\n${out}`);
  });
}
