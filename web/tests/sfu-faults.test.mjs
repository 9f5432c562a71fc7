// Real-browser tests of the SDK when the media path to the server breaks: the server's media
// port is reached through a UDP relay (harness startUdpRelay) that the test can black-hole.
// A short outage is healed by an ICE restart on the same peer connection; a long one makes
// the server drop the connection and tell the client, which then starts a new one. Both are
// seen by the application as `reconnecting('sfu')` then `reconnected('sfu')` (docs/sfu.md,
// "Failures").

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  createRoom, launchBrowser, mediaCounts, openPage, startServer, startUdpRelay, waitForEvent, waitForMedia,
  waitForMoreMedia,
} from './harness.mjs';

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

/** A server whose media port is behind a relay; `env` adds settings. */
async function serverBehindRelay(env = {}) {
  const relay = await startUdpRelay();
  const server = await startServer({ CONVENE_RTC_ADVERTISE_PORT: String(relay.port), ...env });
  assert.ok(server.mediaPort, 'the media port is logged');
  relay.connect(server.mediaPort);
  return { relay, server };
}

/** Two pages in an SFU room, each receiving the other's media through the relay. */
async function twoPages(server) {
  const room = await createRoom(server.url, { name: 'faults', conferenceType: 'SFU' });
  const pages = [];
  const addresses = [];
  for (let i = 0; i < 2; i++) {
    const page = await openPage(browser, server.url);
    const joined = await page.evaluate(([token, n]) => window.T.join(token, n), [room.token, `F${i}`]);
    assert.ok(joined.address, JSON.stringify(joined));
    pages.push(page);
    addresses.push(joined.address);
  }
  await waitForMedia(pages[0], [addresses[1]], { via: 'sfu' });
  await waitForMedia(pages[1], [addresses[0]], { via: 'sfu' });
  // Mark each page's connection to sfu, to tell a restarted one from a new one.
  for (const page of pages) await page.evaluate(() => { window.T.room._sfuConnection().marked = true; });
  return { pages, addresses };
}

function reconnectEvents(page) {
  return page.evaluate(() => window.T.events
    .filter((e) => e.event === 'reconnecting' || e.event === 'reconnected')
    .map((e) => `${e.event}:${e.value}`));
}

describe('the media path to sfu breaks', () => {
  test('a short outage: the SDK restarts ICE on the same connection and media comes back', async () => {
    const { relay, server } = await serverBehindRelay();
    const { pages, addresses } = await twoPages(server);
    try {
      relay.block();
      // Each page notices (its connection goes `disconnected`) and restarts ICE.
      for (const page of pages) await waitForEvent(page, { event: 'reconnecting', value: 'sfu' }, 30000);
      relay.unblock();
      for (const page of pages) await waitForEvent(page, { event: 'reconnected', value: 'sfu' }, 30000);
      for (let i = 0; i < 2; i++) {
        // The same peer connection, restarted, not a new one.
        assert.equal(await pages[i].evaluate(() => window.T.room._sfuConnection().marked), true);
        assert.deepEqual(await reconnectEvents(pages[i]), ['reconnecting:sfu', 'reconnected:sfu']);
        await waitForMoreMedia(pages[i], { [addresses[1 - i]]: (await mediaCounts(pages[i]))[addresses[1 - i]] });
      }
    } finally {
      await Promise.all(pages.map((p) => p.context().close()));
      await server.stop();
      relay.close();
    }
  });

  test('a long outage: the server drops the connection, says so, and the SDK makes a new one', async () => {
    // Lost ICE (the page's ICE restart puts the server's agent back to checking) is kept this
    // long; the connection must also come up this fast at first.
    const { relay, server } = await serverBehindRelay({ CONVENE_RTC_ICE_TIMEOUT_MS: '3000' });
    const { pages, addresses } = await twoPages(server);
    try {
      relay.block();
      // The server's `closed` makes each page replace its connection to sfu.
      for (const page of pages) {
        await page.waitForFunction(() => window.T.room._sfuConnection() && !window.T.room._sfuConnection().marked,
          null, { timeout: 45000 });
      }
      assert.ok(server.logs.join('').includes('ICE lost'), `the server dropped the connections for lost ICE:\n${server.logs.join('').split('\n').filter((l) => l.includes('media')).join('\n')}`);
      relay.unblock();
      for (let i = 0; i < 2; i++) {
        await waitForEvent(pages[i], { event: 'reconnected', value: 'sfu' }, 30000);
        // The new connection carries the other page's media again.
        await waitForMedia(pages[i], [addresses[1 - i]], { via: 'sfu' });
        await waitForMoreMedia(pages[i], { [addresses[1 - i]]: (await mediaCounts(pages[i]))[addresses[1 - i]] });
        assert.deepEqual(await pages[i].evaluate(() => window.T.events.filter((e) => e.event === 'participantLeft')), []);
      }
    } finally {
      await Promise.all(pages.map((p) => p.context().close()));
      await server.stop();
      relay.close();
    }
  });
});
