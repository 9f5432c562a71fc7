// The admin page in Chromium: sign in, create a room, watch two participants join live,
// remove one, delete the room. Leaves a screenshot in tests/artifacts/admin.png.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { API_KEY, launchBrowser, openPage, startServer } from './harness.mjs';

let browser;
let server;
before(async () => {
  browser = await launchBrowser();
  server = await startServer();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

test('an operator follows a room from creation to deletion', async () => {
  const page = await (await browser.newContext()).newPage();
  page.on('dialog', (dialog) => dialog.accept());
  await page.goto(`${server.url}/admin`);
  await page.fill('#signin input[name=key]', API_KEY);
  await page.click('#signin button');
  await page.waitForFunction(() => document.querySelector('#live').textContent === 'live');

  await page.fill('#create input[name=name]', 'Ops room');
  await page.fill('#create input[name=autoUpgradeParticipantCount]', '3');
  await page.click('#create button');
  await page.waitForSelector('#created:not([hidden])');
  const link = await page.getAttribute('#link', 'href');
  const token = new URL(link).searchParams.get('token');
  assert.ok(token, link);
  const row = page.locator('#rooms tr', { hasText: 'Ops room' });
  await row.waitFor();
  assert.match(await row.textContent(), /MESH0 \/ 7/);

  // Two participants join (SDK pages); both appear within a second of joining.
  const joiners = [];
  for (const name of ['Ann', 'Bob']) {
    const p = await openPage(browser, server.url);
    const joined = await p.evaluate(([t, n]) => window.T.join(t, n), [token, name]);
    assert.ok(joined.address, JSON.stringify(joined));
    joiners.push(p);
  }
  await page.waitForFunction(() => /2 \/ 7/.test(document.querySelector('#rooms').textContent), null, { timeout: 1000 });
  await row.click();
  await page.waitForFunction(() => document.querySelectorAll('#participants tr').length === 2);
  mkdirSync('tests/artifacts', { recursive: true });
  await page.screenshot({ path: 'tests/artifacts/admin.png', fullPage: true });

  // Remove Bob through the page: Ann's page hears of it, the server agrees.
  await page.locator('#participants tr', { hasText: 'Bob' }).locator('button').click();
  await joiners[0].waitForFunction(() => window.T.events.some((e) => e.event === 'participantLeft'));
  await joiners[1].waitForFunction(() => window.T.events.some((e) => e.event === 'roomLeft' && e.value === 'kicked'));
  await page.waitForFunction(() => document.querySelectorAll('#participants tr').length === 1);
  const roomId = await row.getAttribute('data-id');
  const res = await fetch(`${server.url}/api/realtime/room/${roomId}/participants`, { headers: { 'x-vcs-token': API_KEY } });
  const body = await res.json();
  assert.deepEqual(body.data.map((p) => p.name), ['Ann']);

  // Delete the room through the page.
  await row.locator('button').click();
  await joiners[0].waitForFunction(() => window.T.events.some((e) => e.event === 'roomLeft' && e.value === 'deleted'));
  await page.waitForFunction(() => !document.querySelector('#rooms').textContent.includes('Ops room'));
  assert.match(await page.textContent('#log'), /Room Ops room deleted/);
  for (const p of joiners) await p.context().close();
  await page.context().close();
});

test('a wrong key is refused and the page says so', async () => {
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${server.url}/admin`);
  await page.fill('#signin input[name=key]', 'wrong');
  await page.click('#signin button');
  await page.waitForFunction(() => document.querySelector('#signin .muted').textContent === 'That API key was refused.');
  await page.context().close();
});
