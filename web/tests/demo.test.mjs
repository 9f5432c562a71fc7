// The demo page, used the way a person would: open the link with the token, type a name,
// click Join, see the other tab, chat, leave.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { API_KEY, createRoom, launchBrowser, startServer } from './harness.mjs';

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

async function open(token, name) {
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${server.url}/demo?token=${encodeURIComponent(token)}`);
  await page.fill('input[name=name]', name);
  await page.click('#join button');
  await page.waitForSelector('#side:not([hidden])');
  return page;
}

test('two tabs see and hear each other, chat and leave', async () => {
  const room = await createRoom(server.url, { name: 'Demo room', autoUpgradeParticipantCount: 3 });
  const ann = await open(room.token, 'Ann');
  const bob = await open(room.token, 'Bob');
  try {
    for (const page of [ann, bob]) {
      assert.equal(await page.textContent('#type'), 'MESH');
      assert.equal(await page.textContent('#room-name'), 'Demo room');
      // Two tiles, and the remote one plays video.
      await page.waitForFunction(() => {
        const videos = [...document.querySelectorAll('#videos .tile video')];
        return videos.length === 2 && videos.every((v) => v.videoWidth > 0);
      }, null, { timeout: 30000 });
    }
    await ann.fill('#say input', 'hi Bob');
    await ann.click('#say button');
    await bob.waitForFunction(() => document.querySelector('#chat').textContent.includes('Ann: hi Bob'));

    await bob.click('#mute');
    await ann.waitForFunction(() => document.querySelector('#videos').textContent.includes('Bob · muted'));

    // A third tab upgrades the room: every tab says so.
    const cy = await open(room.token, 'Cy');
    for (const page of [ann, bob, cy]) {
      await page.waitForFunction(() => document.querySelector('#type').textContent === 'SFU');
    }
    await ann.waitForFunction(() => document.querySelector('#chat').textContent.includes('The room is now SFU.'));

    await bob.click('#leave');
    await bob.waitForFunction(() => document.querySelector('#chat').textContent.includes('You left the room (left).'));
    await ann.waitForFunction(() => document.querySelector('#chat').textContent.includes('Bob left'));
    await cy.context().close();
  } finally {
    await ann.context().close();
    await bob.context().close();
  }
});

/** A participant token of the room for `identity` (POST …/token), as an application makes. */
async function participantToken(roomId, body) {
  const res = await fetch(`${server.url}/api/realtime/room/${roomId}/token`, {
    method: 'POST',
    headers: { 'x-vcs-token': API_KEY, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  assert.equal(res.status, 200, await res.clone().text());
  return (await res.json()).token;
}

/** Each tile's label and identity badge, by label. */
function tiles(page) {
  return page.$$eval('#videos .tile', (els) => Object.fromEntries(els.map((el) => [
    el.querySelector('.label').textContent, el.querySelector('.identity')?.textContent ?? null,
  ])));
}

test('participants with participant tokens are shown with their identity', async () => {
  const room = await createRoom(server.url, { name: 'Who is who' });
  // Dee's token names her; Eli's has an identity only; Fay joins with the room token.
  const dee = await open(await participantToken(room.id, { identity: 'dee@example.com', name: 'Dee' }), '');
  const eli = await open(await participantToken(room.id, { identity: 'user-42' }), '');
  const fay = await open(room.token, 'Fay');
  try {
    // Her own tile too shows the name her token gives (`joined.name`), not what was typed.
    const expected = {
      dee: { 'Dee (you)': 'dee@example.com', 'user-42': 'user-42', Fay: null },
      eli: { Dee: 'dee@example.com', 'user-42 (you)': 'user-42', Fay: null },
      fay: { Dee: 'dee@example.com', 'user-42': 'user-42', 'Fay (you)': null },
    };
    for (const [who, page] of Object.entries({ dee, eli, fay })) {
      await page.waitForFunction(() => document.querySelectorAll('#videos .tile').length === 3);
      assert.deepEqual(await tiles(page), expected[who], who);
    }
    await eli.fill('#say input', 'hello');
    await eli.click('#say button');
    await fay.waitForFunction(() => document.querySelector('#chat').textContent.includes('user-42: hello'));
  } finally {
    for (const page of [dee, eli, fay]) await page.context().close();
  }
});

test('a bad token says so', async () => {
  const page = await (await browser.newContext()).newPage();
  try {
    await page.goto(`${server.url}/demo?token=nope`);
    await page.click('#join button');
    await page.waitForFunction(() => document.querySelector('#status').textContent === 'That token is invalid or expired.');
  } finally {
    await page.context().close();
  }
});
