// Real-browser tests of the SDK in SFU rooms (media through the server's media plane,
// docs/sfu.md): rooms created SFU, and a MESH room that upgrades with pages in it. Media is
// checked with the SDK's participant.getStats(), as an application would.
//
// CONVENE_SFU_PAGES sets how many pages the upgrade test uses (default 10, as many as a
// small room; with the media hot path optimised in the dev profile, see Cargo.toml, they fit
// on two cores).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  createRoom, launchBrowser, mediaCounts, openPage, startServer, waitForEvent, waitForMedia, waitForMoreMedia,
  waitUntil,
} from './harness.mjs';

const UPGRADE_PAGES = Number(process.env.CONVENE_SFU_PAGES ?? 10);

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

async function join(room, name) {
  const page = await openPage(browser, server.url);
  const joined = await page.evaluate(([token, n]) => window.T.join(token, n), [room.token, name]);
  assert.ok(joined.address, JSON.stringify(joined));
  return { page, address: joined.address, conferenceType: joined.conferenceType };
}

function others(addresses, i) {
  return addresses.filter((_, j) => j !== i);
}

function events(page, name) {
  return page.evaluate((n) => window.T.events.filter((e) => e.event === n), name);
}

describe('an SFU room', () => {
  let room;
  const pages = [];
  const addresses = [];
  after(async () => {
    await Promise.all(pages.map((p) => p.context().close()));
  });

  test('3 pages: each decodes video and receives audio from every other, through sfu', async () => {
    room = await createRoom(server.url, { name: 'sfu 3', conferenceType: 'SFU' });
    for (let i = 0; i < 3; i++) {
      const j = await join(room, `S${i}`);
      assert.equal(j.conferenceType, 'SFU');
      pages.push(j.page);
      addresses.push(j.address);
    }
    for (let i = 0; i < 3; i++) {
      await waitForMedia(pages[i], others(addresses, i), { via: 'sfu' });
      // ... and it keeps coming (counters rising).
      await waitForMoreMedia(pages[i], await mediaCounts(pages[i]));
      // One connection, to sfu; none to the other pages.
      assert.equal(await pages[i].evaluate(() => window.T.room._peerConnections().size), 0);
      const streams = [...new Set((await events(pages[i], 'remoteStream')).map((e) => e.address))].sort();
      assert.deepEqual(streams, others(addresses, i).sort());
      assert.deepEqual(await events(pages[i], 'participantJoinFailed'), []);
    }
    // attach() shows a remote participant's video, as in MESH.
    await pages[0].evaluate((a) => window.T.room.remoteParticipants.find((p) => p.address === a).attach(document.body), addresses[1]);
    await pages[0].waitForFunction(() => document.querySelector('video[data-convene]')?.videoWidth > 0);
  });

  test('a page that joins late gets everyone\'s video within a few seconds, and they get its', async () => {
    assert.equal(pages.length, 3, 'needs the previous test');
    const page = await openPage(browser, server.url);
    pages.push(page);
    const started = Date.now();
    const joined = await page.evaluate((token) => window.T.join(token, 'late'), room.token);
    assert.ok(joined.address, JSON.stringify(joined));
    const joinedAt = Date.now();
    await waitForMedia(page, addresses, { via: 'sfu', timeout: 15000 });
    const videoAfter = Date.now() - joinedAt;
    console.log(`# late joiner: joinRoom took ${joinedAt - started} ms; video and audio from all 3 others ${videoAfter} ms after it resolved`);
    addresses.push(joined.address);
    for (let i = 0; i < 3; i++) await waitForMedia(pages[i], [joined.address], { via: 'sfu', timeout: 15000 });
  });

  test('a page that leaves disappears from the others, and its tracks stop', async () => {
    assert.equal(pages.length, 4, 'needs the previous tests');
    const leaving = addresses[3];
    // Track ids of the leaver's media at each other page, to see them stopped by the server.
    const trackIds = [];
    for (let i = 0; i < 3; i++) {
      trackIds.push(await pages[i].evaluate((a) => {
        const p = window.T.room.remoteParticipants.find((x) => x.address === a);
        p.attach(document.body);
        return p.mediaStream.getTracks().map((t) => t.id);
      }, leaving));
      assert.equal(trackIds[i].length, 2);
    }
    await pages[3].evaluate(() => window.T.room.leave());
    await waitForEvent(pages[3], { event: 'roomLeft', value: 'left' });
    for (let i = 0; i < 3; i++) {
      await waitForEvent(pages[i], { event: 'participantLeft', address: leaving, detail: 'left' });
      assert.ok(!(await pages[i].evaluate((a) => window.T.room.remoteParticipants.some((p) => p.address === a), leaving)));
      assert.equal(await pages[i].evaluate((a) => document.querySelectorAll(`video[data-convene="${a}"]`).length, leaving), 0);
      // The server renegotiated: the transceivers that carried the leaver's tracks are inactive.
      await pages[i].waitForFunction((ids) => window.T.room._sfuConnection().getTransceivers()
        .filter((t) => ids.includes(t.receiver.track.id))
        .every((t) => t.currentDirection === 'inactive' || t.currentDirection === 'stopped'), trackIds[i], { timeout: 10000 });
    }
    // The others' calls go on.
    for (let i = 0; i < 3; i++) await waitForMoreMedia(pages[i], await mediaCounts(pages[i]));
  });

  test('mute stops the muted page\'s audio at the others; unmute brings it back', async () => {
    // Muted, the SDK stops sending audio packets (the sender's encoding is deactivated, not
    // just the track disabled, which would still send packets of silence): so "stopped" is
    // "no new audio packets for a second and a half" while video packets go on.
    const muter = addresses[0];
    assert.equal(await pages[0].evaluate(() => window.T.room.toggleMute()), true);
    for (const page of pages.slice(1, 3)) {
      await waitForEvent(page, { event: 'participantUpdated', address: muter, audio: false });
      let since = null;
      await waitUntil(async () => {
        const m = (await mediaCounts(page))[muter];
        if (!since || m.packets !== since.packets) since = { ...m, at: Date.now() };
        return { done: Date.now() - since.at >= 1500 && m.frames > since.frames, m };
      }, 'audio packets from the muted page to stop while its video goes on', { timeout: 15000, interval: 250 });
    }
    assert.equal(await pages[0].evaluate(() => window.T.room.toggleMute()), false);
    for (const page of pages.slice(1, 3)) await waitForMoreMedia(page, { [muter]: (await mediaCounts(page))[muter] });
  });
});

describe('a MESH room upgrading to SFU', () => {
  test(`${UPGRADE_PAGES} pages, upgrade at 4: media from every other across the switchover`, async () => {
    assert.ok(UPGRADE_PAGES >= 4);
    const room = await createRoom(server.url, { name: 'upgrade', autoUpgradeParticipantCount: 4 });
    const pages = [];
    const addresses = [];
    try {
      for (let i = 0; i < 3; i++) {
        const j = await join(room, `U${i}`);
        assert.equal(j.conferenceType, 'MESH');
        pages.push(j.page);
        addresses.push(j.address);
      }
      for (let i = 0; i < 3; i++) await waitForMedia(pages[i], others(addresses, i), { via: 'mesh' });
      // Watch decoded video on the three pages from before the upgrade.
      for (const page of pages) await page.evaluate(() => window.T.watch(100));
      const upgradeStart = Date.now();
      for (let i = 3; i < UPGRADE_PAGES; i++) {
        const j = await join(room, `U${i}`);
        // The 4th join upgrades the room (its page hears of it right after joining); later
        // pages join an SFU room.
        assert.equal(j.conferenceType, i === 3 ? 'MESH' : 'SFU');
        pages.push(j.page);
        addresses.push(j.address);
      }
      for (let i = 0; i < 4; i++) await waitForEvent(pages[i], { event: 'conferenceTypeChanged', value: 'SFU' });
      for (let i = 0; i < UPGRADE_PAGES; i++) {
        await waitForMedia(pages[i], others(addresses, i), { via: 'sfu', timeout: 60000 });
        await pages[i].waitForFunction(() => window.T.room._peerConnections().size === 0, null, { timeout: 20000 });
        assert.deepEqual(await events(pages[i], 'participantLeft'), []);
        assert.deepEqual(await events(pages[i], 'participantJoinFailed'), []);
      }
      const settled = Date.now() - upgradeStart;
      // Every page's media still rising from every other.
      for (let i = 0; i < UPGRADE_PAGES; i++) await waitForMoreMedia(pages[i], await mediaCounts(pages[i]), 30000);
      // The switchover as the three pages from before saw it, per remote from before.
      const lines = [];
      for (let i = 0; i < 3; i++) {
        const { watched, changedAt } = await pages[i].evaluate(() => ({
          watched: window.T.stopWatch(),
          changedAt: window.T.events.find((e) => e.event === 'conferenceTypeChanged').at,
        }));
        for (const a of others(addresses, i).slice(0, 2)) {
          const w = watched[a];
          assert.ok(w && w.firstSfuAt !== null, JSON.stringify(w));
          lines.push(`U${i} <- U${addresses.indexOf(a)}: longest gap without a decoded frame ${Math.round(w.maxGap)} ms, `
            + `first frame via sfu ${Math.round(w.firstSfuAt - changedAt)} ms after conferenceTypeChanged `
            + `(its connection to sfu up after ${Math.round(watched.sfuConnectedAt - changedAt)} ms)`);
        }
      }
      console.log(`# switchover with ${UPGRADE_PAGES} pages (everyone's media via sfu ${settled} ms after the 4th join started):`);
      for (const line of lines) console.log(`#   ${line}`);
    } finally {
      await Promise.all(pages.map((p) => p.context().close()));
    }
  });
});
