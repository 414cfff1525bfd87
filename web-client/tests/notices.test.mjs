//! Errors that clear when they no longer apply: a failed sign-up's error goes away once the
//! next sign-up works, instead of staying over the page that follows; a failed log-in's
//! goes when one moves on to "Create an account". Run through tests/run.sh (private netns).

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { nodeAndBrowsers, waitFor, registerOverHttp } from './helpers.mjs';

const byId = (page, id) => page.locator(`[data-testid="${id}"]`);

describe('notices', { timeout: 60_000 }, () => {
  const t = nodeAndBrowsers('notices', { browsers: [{}] });

  it('a failed sign-up says why; the error is gone once the next sign-up works', async () => {
    const page = t.browsers[0].page;
    await registerOverHttp(t.node.url, 'zoe', 'correct horse battery');
    await page.goto(new URL('/register', t.node.url).href);
    await byId(page, 'register-username').fill('zoe');
    await byId(page, 'register-password').fill('a much longer password');
    await byId(page, 'register-submit').click();
    const notice = byId(page, 'notice');
    await waitFor(async () => (await notice.isVisible()) && /taken|exists|use/i.test(await notice.textContent()), { message: 'an error: the name is taken' });
    await byId(page, 'register-username').fill('zoe2');
    await byId(page, 'register-submit').click();
    await byId(page, 'group-list').waitFor();
    assert.equal(await notice.isVisible(), false, `the old error stays: ${await notice.textContent()}`);
  });

  it("a failed log-in's error goes when one moves on to another screen", async () => {
    const page = t.browsers[0].page;
    await byId(page, 'logout').click();
    await byId(page, 'login-username').fill('zoe');
    await byId(page, 'login-password').fill('not her password');
    await byId(page, 'login-submit').click();
    const notice = byId(page, 'notice');
    await waitFor(async () => (await notice.isVisible()) && /wrong/i.test(await notice.textContent()), { message: 'an error: wrong password' });
    await byId(page, 'goto-register').click();
    await byId(page, 'register-username').waitFor();
    assert.equal(await notice.isVisible(), false, `the log-in error stays over sign-up: ${await notice.textContent()}`);
  });
});
