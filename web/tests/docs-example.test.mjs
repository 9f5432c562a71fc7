// The complete page of docs/sdk.md ("A complete page"), as the guide gives it, runs in
// Chromium: served as an application's page on another origin whose /sdk/ paths lead to the
// service (the page imports /sdk/v1/convene.js), opened with a room token, it joins, shows both videos, lists the cameras, and shares the screen to the
// other participant (a page of the harness) on a click.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  createRoom, launchBrowser, openPage, servePage, startServer, waitForEvent, waitUntil,
} from './harness.mjs';

const guide = readFileSync('docs/sdk.md', 'utf8');
const example = guide.match(/## A complete page[\s\S]*?```html\n([\s\S]*?)```/)?.[1];

let browser;
let server;
before(async () => {
  browser = await launchBrowser({
    fakeDevice: 'device-count=3',
    extraArgs: ['--auto-select-desktop-capture-source=Entire screen', '--autoplay-policy=no-user-gesture-required'],
  });
  server = await startServer();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

test('the guide\'s complete page joins, shows the call and shares the screen', async () => {
  assert.ok(example, 'docs/sdk.md has no ```html block under "A complete page"');
  const room = await createRoom(server.url, { name: 'guide' });
  const other = await openPage(browser, server.url);
  const context = await browser.newContext();
  const app = await servePage(example ?? '', server.url);
  try {
    const joined = await other.evaluate((token) => window.T.join(token, 'other'), room.token);
    assert.ok(joined.address, JSON.stringify(joined));
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${app.url}?token=${encodeURIComponent(room.token)}`);
    await page.waitForFunction(() => /^SDK \d+\.\d+\.\d+: in a MESH room$/.test(document.getElementById('status').textContent));
    // Both videos play, the other's with pictures.
    await waitUntil(() => page.evaluate(() => {
      const videos = [...document.querySelectorAll('#videos video')];
      return { done: videos.length === 2 && videos.every((v) => v.videoWidth > 0 && !v.paused), n: videos.length };
    }), 'two playing videos on the guide page');
    const cameras = await page.locator('#cameras option').count();
    assert.ok(cameras >= 2, `cameras listed: ${cameras}`);
    await page.click('#share');
    await waitForEvent(other, { event: 'screenShareStarted' });
    await page.waitForFunction(() => document.querySelector('#share').textContent === 'Stop sharing');
    assert.equal(await page.locator('#screens video').count(), 1);
    await page.click('#leave');
    await page.waitForFunction(() => document.getElementById('status').textContent === 'left: left');
    await waitForEvent(other, { event: 'participantLeft' });
    assert.deepEqual(errors, []);
  } finally {
    await Promise.all([context.close(), other.context().close(), app.close()]);
  }
});
