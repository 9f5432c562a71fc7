// Real-browser tests of the SDK in MESH rooms: Debian's Chromium driven by playwright-core,
// each participant a page (in a browser context of its own) using /sdk/convene.js as an
// application would: handlers are added once joinRoom has resolved.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  createRoom, launchBrowser, mediaCounts, openPage, participantsOf, startServer, waitForEvent, waitForMedia,
  waitForMoreMedia, waitUntil,
} from './harness.mjs';

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

/** Opens `n` pages and joins them to the room one after another; answers pages and addresses. */
async function joinAll(server, room, n, options = {}) {
  const pages = [];
  const addresses = [];
  for (let i = 0; i < n; i++) {
    const page = await openPage(browser, server.url);
    const joined = await page.evaluate(([token, name, o]) => window.T.join(token, name, o), [room.token, `P${i}`, options]);
    assert.ok(joined.address, JSON.stringify(joined));
    pages.push(page);
    addresses.push(joined.address);
  }
  return { pages, addresses };
}

async function closeAll(pages) {
  await Promise.all(pages.map((p) => p.context().close()));
}

function events(page, name) {
  return page.evaluate((n) => window.T.events.filter((e) => e.event === n), name);
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
          // participantJoined only for those who joined later; everyone's stream arrived.
          const joined = (await events(pages[i], 'participantJoined')).map((e) => e.address).sort();
          assert.deepEqual(joined, addresses.slice(i + 1).sort());
          const streams = (await events(pages[i], 'remoteStream')).map((e) => e.address).sort();
          assert.deepEqual(streams, [...others].sort());
          assert.deepEqual(await events(pages[i], 'participantJoinFailed'), []);
        }
      } finally {
        await closeAll(pages);
      }
    });
  }

  test('messages, mute, camera and leave reach the others', async () => {
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
      await pages[1].evaluate(() => window.T.room.sendMessageToParticipant('to everyone else', ''));
      for (const page of [pages[0], pages[2]]) {
        await page.waitForFunction(() => window.T.events.some((e) => e.detail === 'to everyone else'));
      }
      // Addressed to one: P2 gets it; P0 gets a later broadcast but never the private one.
      await pages[1].evaluate((to) => window.T.room.sendMessageToParticipant('just you', to), addresses[2]);
      await pages[2].waitForFunction(() => window.T.events.some((e) => e.detail === 'just you'));
      await pages[1].evaluate(() => window.T.room.sendMessageToParticipant('after the private one'));
      await pages[0].waitForFunction(() => window.T.events.some((e) => e.detail === 'after the private one'));
      assert.ok(!(await pages[0].evaluate(() => window.T.events.some((e) => e.detail === 'just you'))));

      const muted = await pages[0].evaluate(() => window.T.room.toggleMute());
      assert.equal(muted, true);
      assert.equal(await pages[0].evaluate(() => window.T.room.isMuted()), true);
      for (const page of pages.slice(1)) {
        await waitForEvent(page, { event: 'participantUpdated', address: addresses[0], audio: false });
        assert.equal(await page.evaluate((a) => window.T.room.remoteParticipants.find((p) => p.address === a).audio, addresses[0]), false);
      }
      assert.equal(await pages[0].evaluate(() => window.T.room.toggleMute()), false);
      for (const page of pages.slice(1)) {
        await page.waitForFunction(
          (a) => window.T.room.remoteParticipants.find((p) => p.address === a).audio === true,
          addresses[0],
        );
      }
      assert.equal(await pages[0].evaluate(() => window.T.room.toggleVideo()), false);
      assert.equal(await pages[0].evaluate(() => window.T.room.hasVideo()), false);
      for (const page of pages.slice(1)) {
        await page.waitForFunction(
          (a) => window.T.room.remoteParticipants.find((p) => p.address === a).video === false,
          addresses[0],
        );
      }

      // An attached video plays the participant, and goes when it leaves.
      await pages[1].evaluate((a) => {
        const p = window.T.room.remoteParticipants.find((x) => x.address === a);
        p.attach(document.body);
        p.attach(document.body);
      }, addresses[0]);
      assert.equal(await pages[1].evaluate(() => document.querySelectorAll('video[data-convene]').length), 1);
      await pages[1].waitForFunction(() => document.querySelector('video[data-convene]').videoWidth > 0);
      await pages[0].evaluate(() => window.T.room.leave());
      await waitForEvent(pages[0], { event: 'roomLeft', value: 'left' });
      for (const page of pages.slice(1)) {
        await waitForEvent(page, { event: 'participantLeft', address: addresses[0], detail: 'left' });
        assert.equal(await page.evaluate((a) => window.T.room._peerConnections().has(a), addresses[0]), false);
      }
      assert.equal(await pages[1].evaluate(() => document.querySelectorAll('video[data-convene]').length), 0);
    } finally {
      await closeAll(pages);
    }
  });

  test('the third join upgrades the room, every page hears of it, and the calls go on', async () => {
    const room = await createRoom(server.url, { autoUpgradeParticipantCount: 3 });
    const { pages, addresses } = await joinAll(server, room, 3);
    try {
      for (const page of pages) {
        // Exactly once each, the third page's too (its event may come while joinRoom settles).
        await waitForEvent(page, { event: 'conferenceTypeChanged', value: 'SFU' });
        assert.equal(await page.evaluate(() => window.T.room.conferenceType), 'SFU');
        assert.equal((await events(page, 'conferenceTypeChanged')).length, 1);
      }
      // The SDK moves to the media server: everyone's media comes through `sfu`, and the
      // mesh connections are closed.
      for (let i = 0; i < 3; i++) {
        await waitForMedia(pages[i], addresses.filter((_, j) => j !== i), { via: 'sfu' });
        await pages[i].waitForFunction(() => window.T.room._peerConnections().size === 0);
        assert.deepEqual(await events(pages[i], 'participantLeft'), []);
      }
    } finally {
      await closeAll(pages);
    }
  });

  test('delayLocalStream asks for the camera only when someone else is there', async () => {
    const room = await createRoom(server.url, {});
    const first = await openPage(browser, server.url);
    const second = await openPage(browser, server.url);
    try {
      const a = await first.evaluate((t) => window.T.join(t, 'early', { delayLocalStream: true, hdVideo: false }), room.token);
      assert.ok(a.address, JSON.stringify(a));
      assert.equal(await first.evaluate(() => window.T.room.localParticipant.mediaStream), null);
      assert.deepEqual(await events(first, 'localStream'), []);
      const b = await second.evaluate((t) => window.T.join(t, 'late'), room.token);
      assert.ok(b.address, JSON.stringify(b));
      // The late joiner's own localStream came during joinRoom and was still delivered.
      await waitForEvent(second, { event: 'localStream', address: b.address });
      await waitForEvent(first, { event: 'localStream', address: a.address });
      await waitForMedia(first, [b.address]);
      await waitForMedia(second, [a.address]);
    } finally {
      await closeAll([first, second]);
    }
  });
});

describe('the SDK imported from another origin', () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server?.stop();
  });

  test('an application on another origin imports /sdk/convene.js and joins through it', async () => {
    // The service at http://127.0.0.1:port; the application's page at http://localhost:port
    // (another origin: a page on it imports the SDK with CORS).
    const sdkUrl = `${server.url}/sdk/convene.js`;
    const appOrigin = server.url.replace('127.0.0.1', 'localhost');
    const room = await createRoom(server.url, { name: 'cross-origin' });
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      // Any page of that origin will do (the service answers 404 for it: still an origin).
      await page.goto(`${appOrigin}/an-application`);
      const result = await page.evaluate(async ([url, token]) => {
        const sdk = await import(url);
        // No `host`: the SDK signals to the service it was loaded from, not to the page's origin.
        const room = await sdk.joinRoom(token, {
          name: 'elsewhere',
          mediaStream: await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 160, height: 120 } }),
        });
        const joined = { origin: location.origin, address: room.localParticipant.address };
        await room.leave();
        return joined;
      }, [sdkUrl, room.token]);
      assert.equal(result.origin, appOrigin);
      assert.match(result.address, /^PA-/);
    } finally {
      await context.close();
    }
  });
});

describe('resume', () => {
  const GRACE_MS = 1500;
  let server;
  before(async () => {
    server = await startServer({ CONVENE_SIGNALING_RESUME_GRACE_MS: String(GRACE_MS) });
  });
  after(async () => {
    await server?.stop();
  });

  test('a dropped socket resumes with the same address, media goes on, nobody sees a leave', async () => {
    const room = await createRoom(server.url, {});
    const { pages, addresses } = await joinAll(server, room, 3);
    const [a, b, c] = pages;
    try {
      for (let i = 0; i < 3; i++) await waitForMedia(pages[i], addresses.filter((_, j) => j !== i));
      const seenBefore = await Promise.all(pages.map((p) => p.evaluate(() => window.T.events.length)));
      // B's socket goes away (closed with 4999, which the server treats as a dropped
      // connection); the SDK reconnects and resumes by itself.
      const droppedAt = Date.now();
      await b.evaluate(() => {
        window.T.oldSocket = window.T.room._ws;
        window.T.room._dropConnection();
      });
      await b.waitForFunction(
        () => window.T.room._ws && window.T.room._ws !== window.T.oldSocket && window.T.room._ws.readyState === WebSocket.OPEN,
        null,
        { timeout: 10000 },
      );
      assert.equal(await b.evaluate(() => window.T.room.localParticipant.address), addresses[1]);
      // Signaling works again both ways.
      await b.evaluate(() => window.T.room.sendMessageToParticipant('back again'));
      await a.waitForFunction(() => window.T.events.some((e) => e.detail === 'back again'));
      await c.waitForFunction(() => window.T.events.some((e) => e.detail === 'back again'));
      await a.evaluate((to) => window.T.room.sendMessageToParticipant('welcome back', to), addresses[1]);
      await b.waitForFunction(() => window.T.events.some((e) => e.detail === 'welcome back'));
      // The peer connections survived: media keeps arriving on every edge.
      for (const page of pages) await waitForMoreMedia(page, await mediaCounts(page));
      // The application heard of the drop and of the resume.
      await waitForEvent(b, { event: 'reconnecting', value: 'signaling' });
      await waitForEvent(b, { event: 'reconnected', value: 'signaling' });
      // Proving that nobody saw a leave takes time: wait until the grace period after the drop
      // has passed (a participant not resumed would have been removed by then).
      const wait = droppedAt + GRACE_MS + 1000 - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      const listed = await participantsOf(server.url, room.id);
      assert.deepEqual(listed.map((p) => [p.address, p.connected]), addresses.map((x) => [x, true]));
      for (let i = 0; i < 3; i++) {
        const seen = await pages[i].evaluate((n) => window.T.events.slice(n).map((e) => e.event), seenBefore[i]);
        for (const kind of ['participantLeft', 'participantJoined', 'roomLeft', 'participantJoinFailed']) {
          assert.ok(!seen.includes(kind), `page ${i}: ${seen.join(',')}`);
        }
      }
    } finally {
      await closeAll(pages);
    }
  });

  test('back after the grace period: a new address, and the call starts again', async () => {
    const room = await createRoom(server.url, {});
    const { pages, addresses } = await joinAll(server, room, 2);
    const [a, b] = pages;
    try {
      await waitForMedia(a, [addresses[1]]);
      // B's network is gone for longer than the grace period: its reconnects go nowhere
      // until the server has given its seat up.
      await b.evaluate(() => {
        window.T.realHost = window.T.room._options.host;
        window.T.room._options.host = 'http://127.0.0.1:9';
        window.T.room._dropConnection();
      });
      await waitForEvent(a, { event: 'participantLeft', address: addresses[1], detail: 'disconnected' });
      await b.evaluate(() => {
        window.T.room._options.host = window.T.realHost;
      });
      const fresh = await waitUntil(async () => {
        const address = await b.evaluate(() => window.T.room.localParticipant.address);
        return address !== addresses[1] && address;
      }, 'a new address for B');
      await waitForEvent(a, { event: 'participantJoined', address: fresh });
      await waitForEvent(b, { event: 'participantLeft', address: addresses[0], detail: 'disconnected' });
      await waitForEvent(b, { event: 'participantJoined', address: addresses[0] });
      await waitForMedia(a, [fresh]);
      await waitForMedia(b, [addresses[0]]);
      assert.deepEqual((await participantsOf(server.url, room.id)).map((p) => p.address), [addresses[0], fresh]);
    } finally {
      await closeAll(pages);
    }
  });

  test('a socket dropped while the connections are negotiated still ends in a full call', async () => {
    const room = await createRoom(server.url, {});
    const { pages, addresses } = await joinAll(server, room, 2);
    // P0 loses its socket as soon as it hears of the newcomer, so the newcomer's offer and
    // candidates for P0 are lost. After the resume P0 asks for them again.
    await pages[0].evaluate(() => {
      const drop = () => {
        window.T.room.off('participantJoined', drop);
        window.T.dropped = true;
        window.T.room._dropConnection();
      };
      window.T.room.on('participantJoined', drop);
    });
    const late = await openPage(browser, server.url);
    try {
      const joined = await late.evaluate((token) => window.T.join(token, 'late'), room.token);
      assert.ok(joined.address, JSON.stringify(joined));
      const all = [...pages, late];
      const everyone = [...addresses, joined.address];
      assert.equal(await pages[0].evaluate(() => window.T.dropped), true);
      for (let i = 0; i < 3; i++) await waitForMedia(all[i], everyone.filter((_, j) => j !== i));
      assert.equal(await pages[0].evaluate(() => window.T.room.localParticipant.address), addresses[0]);
      for (const page of all) assert.deepEqual(await events(page, 'participantLeft'), []);
    } finally {
      await closeAll([...pages, late]);
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

  test('a participant token joins as its identity; once banned it rejects with the banned reason', async () => {
    const room = await createRoom(server.url, {});
    const headers = { 'x-vcs-token': 'browser-test-key', 'content-type': 'application/json' };
    const res = await fetch(`${server.url}/api/realtime/room/${room.id}/token`, {
      method: 'POST', headers, body: JSON.stringify({ identity: 'alice', name: 'Alice' }),
    });
    const text = await res.text();
    assert.equal(res.status, 200, text);
    const { token } = JSON.parse(text);
    const page = await openPage(browser, server.url);
    const again = await openPage(browser, server.url);
    try {
      const joined = await page.evaluate((t) => window.T.join(t, 'Alice'), token);
      assert.ok(joined.address, JSON.stringify(joined));
      const local = await page.evaluate(() => {
        const p = window.T.room.localParticipant;
        return { identity: p.identity, permissions: p.permissions };
      });
      assert.deepEqual(local, {
        identity: 'alice', permissions: { canPublish: true, canSubscribe: true, canSendMessages: true },
      });
      const kicked = await fetch(
        `${server.url}/api/realtime/room/${room.id}/participants/${joined.address}?ban=true`,
        { method: 'DELETE', headers },
      );
      assert.equal(kicked.status, 200, await kicked.text());
      await waitForEvent(page, { event: 'roomLeft' });
      const result = await again.evaluate((t) => window.T.join(t, 'Alice'), token);
      assert.deepEqual(result, { error: 'banned', code: 'REALTIME-00031' });
    } finally {
      await closeAll([page, again]);
    }
  });

  test('a deleted room rejects joinRoom with the room-not-found reason', async () => {
    const room = await createRoom(server.url, {});
    const res = await fetch(`${server.url}/api/realtime/room/${room.id}`, {
      method: 'DELETE',
      headers: { 'x-vcs-token': 'browser-test-key' },
    });
    assert.equal(res.status, 200, await res.text());
    const page = await openPage(browser, server.url);
    try {
      const result = await page.evaluate((token) => window.T.join(token, 'x'), room.token);
      assert.deepEqual(result, { error: 'roomNotFound', code: 'REALTIME-00004' });
    } finally {
      await closeAll([page]);
    }
  });
});

describe('unreachable peers', () => {
  let server;
  let isolated;
  before(async () => {
    server = await startServer();
    // A second browser that gathers no ICE candidates: no peer connection to it can be made.
    isolated = await launchBrowser({ loopbackPeers: false });
  });
  after(async () => {
    await isolated?.close();
    await server?.stop();
  });

  test('a peer connection not made in time gives participantJoinFailed on both sides', async () => {
    const room = await createRoom(server.url, {});
    const a = await openPage(browser, server.url);
    const b = await openPage(isolated, server.url);
    try {
      const options = { connectionTimeout: 3000 };
      const ja = await a.evaluate(([t, o]) => window.T.join(t, 'reachable', o), [room.token, options]);
      const jb = await b.evaluate(([t, o]) => window.T.join(t, 'isolated', o), [room.token, options]);
      await waitForEvent(a, { event: 'participantJoinFailed', address: jb.address });
      await waitForEvent(b, { event: 'participantJoinFailed', address: ja.address });
      const [failed] = await events(a, 'participantJoinFailed');
      assert.ok(['timeout', 'connectionFailed'].includes(failed.detail), failed.detail);
      // The participant stays in the room: only the media connection failed.
      assert.equal(await a.evaluate(() => window.T.room.remoteParticipants.length), 1);
    } finally {
      await closeAll([a, b]);
    }
  });
});
