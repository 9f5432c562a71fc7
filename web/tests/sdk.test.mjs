// Real-browser tests of the SDK in MESH rooms: Debian's Chromium driven by playwright-core,
// each participant a page of its own using /sdk/convene.js as an application would.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createRoom, launchBrowser, openPage, startServer, waitForEvent, waitForMedia } from './harness.mjs';

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

/** Opens `n` pages and joins them to the room one after another; answers pages and addresses. */
async function joinAll(server, room, n) {
  const pages = [];
  const addresses = [];
  for (let i = 0; i < n; i++) {
    const page = await openPage(browser, server.url);
    const joined = await page.evaluate(([token, name]) => window.T.join(token, name), [room.token, `P${i}`]);
    assert.ok(joined.address, JSON.stringify(joined));
    pages.push(page);
    addresses.push(joined.address);
  }
  return { pages, addresses };
}

async function closeAll(pages) {
  await Promise.all(pages.map((p) => p.context().close()));
}

describe('MESH calls', () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server?.stop();
  });

  for (const n of [2, 4]) {
    test(`${n} participants receive every other's video and audio`, async () => {
      const room = await createRoom(server.url, { name: `mesh ${n}` });
      const { pages, addresses } = await joinAll(server, room, n);
      try {
        for (let i = 0; i < n; i++) {
          const others = addresses.filter((_, j) => j !== i);
          await waitForMedia(pages[i], others);
          const names = await pages[i].evaluate(() => window.T.room.remoteParticipants.map((p) => p.name).sort());
          assert.deepEqual(names, [...Array(n).keys()].filter((j) => j !== i).map((j) => `P${j}`));
        }
      } finally {
        await closeAll(pages);
      }
    });
  }

  test('messages, mute and leave reach the others', async () => {
    const room = await createRoom(server.url, { name: 'chat' });
    const { pages, addresses } = await joinAll(server, room, 3);
    try {
      await pages[0].evaluate(() => window.T.room.sendMessageToParticipant({ text: 'hello all' }));
      for (const page of pages.slice(1)) {
        await page.waitForFunction(
          (from) => window.T.events.some((e) => e.event === 'messageReceived' && e.address === from && e.detail?.text === 'hello all'),
          addresses[0],
        );
      }
      await pages[1].evaluate((to) => window.T.room.sendMessageToParticipant('just you', to), addresses[2]);
      await pages[2].waitForFunction(() => window.T.events.some((e) => e.detail === 'just you'));

      const muted = await pages[0].evaluate(() => window.T.room.toggleMute());
      assert.equal(muted, true);
      assert.equal(await pages[0].evaluate(() => window.T.room.isMuted()), true);
      for (const page of pages.slice(1)) {
        await waitForEvent(page, { event: 'participantUpdated', address: addresses[0], audio: false });
      }
      const video = await pages[0].evaluate(() => window.T.room.toggleVideo());
      assert.equal(video, false);

      await pages[0].evaluate(() => window.T.room.leave());
      await waitForEvent(pages[0], { event: 'roomLeft', value: 'left' });
      for (const page of pages.slice(1)) {
        await waitForEvent(page, { event: 'participantLeft', address: addresses[0] });
      }
    } finally {
      await closeAll(pages);
    }
  });

  test('the third join upgrades the room and every page hears of it', async () => {
    const room = await createRoom(server.url, { autoUpgradeParticipantCount: 3 });
    const { pages } = await joinAll(server, room, 3);
    try {
      for (const page of pages) {
        await waitForEvent(page, { event: 'conferenceTypeChanged', value: 'SFU' });
        assert.equal(await page.evaluate(() => window.T.room.conferenceType), 'SFU');
      }
    } finally {
      await closeAll(pages);
    }
  });

  test('a dropped socket resumes with the same address and nobody sees a leave', async () => {
    const room = await createRoom(server.url, {});
    const { pages, addresses } = await joinAll(server, room, 2);
    try {
      await waitForMedia(pages[0], [addresses[1]]);
      const seenBefore = await pages[0].evaluate(() => window.T.events.length);
      // The server sees B's socket go away; the SDK reconnects and resumes.
      await pages[1].evaluate(() => {
        const ws = window.T.room._ws;
        window.T.room._dropConnection();
        window.T.oldSocket = ws;
      });
      await pages[1].waitForFunction(
        () => window.T.room._ws !== window.T.oldSocket && window.T.room._ws.readyState === WebSocket.OPEN,
      );
      assert.equal(await pages[1].evaluate(() => window.T.room.localParticipant.address), addresses[1]);
      // Signaling works again: a message after the resume arrives, and A saw no leave.
      await pages[1].evaluate(() => window.T.room.sendMessageToParticipant('back again'));
      await pages[0].waitForFunction(() => window.T.events.some((e) => e.detail === 'back again'));
      const events = await pages[0].evaluate((n) => window.T.events.slice(n).map((e) => e.event), seenBefore);
      assert.ok(!events.includes('participantLeft'), events.join(','));
      assert.ok(!events.includes('participantJoined'), events.join(','));
      await waitForMedia(pages[0], [addresses[1]]);
    } finally {
      await closeAll(pages);
    }
  });
});

describe('refused joins', () => {
  let server;
  before(async () => {
    server = await startServer({ CONVENE_MESH_MAX_PARTICIPANTS: '2' });
  });
  after(async () => {
    await server?.stop();
  });

  test('a full room rejects joinRoom with the room-full reason', async () => {
    const room = await createRoom(server.url, {});
    const { pages } = await joinAll(server, room, 2);
    const late = await openPage(browser, server.url);
    try {
      const result = await late.evaluate((token) => window.T.join(token, 'late'), room.token);
      assert.deepEqual(result, { error: 'roomFull', code: 'REALTIME-00010' });
    } finally {
      await closeAll([...pages, late]);
    }
  });

  test('a bad token rejects joinRoom with the invalid-token reason', async () => {
    const page = await openPage(browser, server.url);
    try {
      const result = await page.evaluate(() => window.T.join('not-a-token', 'x'));
      assert.deepEqual(result, { error: 'invalidToken', code: 'REALTIME-00009' });
    } finally {
      await closeAll([page]);
    }
  });
});
