// Real-browser tests of a cluster: a MESH room whose pages negotiate through a node that
// does not own it (two of them bridged through the same node, which relays between them),
// and losing the owner of an SFU room (docs/cluster.md, "Takeover with participants"): a private redis-server, two nodes A and B with `CONVENE_CLUSTER=1` on
// it, and a TCP load balancer in front of them (harness startBalancer: round robin, a backend
// that refuses the connection skipped, as a deployment's Caddy would). Four pages connect
// through the balancer (two end on A, two on B, bridged to A); the room is created on A, so A
// owns it and its media runs on A's media plane. A is killed (SIGKILL); the pages that were on
// A resume through the balancer (on B), B re-attaches the bridged ones, B takes the room over,
// and every page negotiates with B's `sfu` again. The test waits until every page decodes
// fresh video and receives audio from the three others through B's media port, with the same
// addresses and no `participantLeft`, and prints how long that took after the kill.
//
// Without redis-server it is skipped with a message, unless CONVENE_REQUIRE_REDIS=1 or
// CONVENE_REQUIRE_BROWSER=1, when that is a failure.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  REDIS_SERVER, createRoom, launchBrowser, mediaCounts, openPage, startBalancer, startRedis, startServer,
  waitForMedia, waitForMoreMedia, waitUntil,
} from './harness.mjs';

const required = process.env.CONVENE_REQUIRE_REDIS === '1' || process.env.CONVENE_REQUIRE_BROWSER === '1';
const missing = REDIS_SERVER ? null : 'redis-server is missing: install it with `apt-get install -y redis-server`';
if (missing && required) throw new Error(`cluster browser test required but ${missing}`);
if (missing) console.log(`skipped: cluster browser test: ${missing}`);

const PAGES = 4;
/** The room lease: a killed owner's room is free this long after its last renewal. */
const LEASE_MS = 1500;

/** A cluster node on `redis` (every node gets the harness's token secret). */
function node(redis, id) {
  return startServer({
    CONVENE_REDIS_URL: redis.url,
    CONVENE_CLUSTER: '1',
    CONVENE_NODE_ID: id,
    CONVENE_ROOM_LEASE_MS: String(LEASE_MS),
  });
}

/** The remote port of the selected candidate pair of the page's connection to `sfu` (the
 * media port of the node whose media plane carries its media), or null. */
function sfuPort(page) {
  return page.evaluate(async () => {
    const pc = window.T.room._sfuConnection();
    if (!pc) return null;
    const stats = await pc.getStats();
    let port = null;
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) {
        const pair = stats.get(s.selectedCandidatePairId);
        port = stats.get(pair?.remoteCandidateId)?.port ?? null;
      }
    });
    return port;
  });
}

function events(page, name) {
  return page.evaluate((n) => window.T.events.filter((e) => e.event === n), name);
}

describe('a cluster of two nodes behind a balancer loses the owner of an SFU room', { skip: missing ?? false }, () => {
  let redis;
  let a;
  let b;
  let balancer;
  let browser;
  before(async () => {
    redis = await startRedis();
    a = await node(redis, 'a');
    b = await node(redis, 'b');
    assert.ok(a.mediaPort && b.mediaPort && a.mediaPort !== b.mediaPort, 'each node logs its own media port');
    balancer = await startBalancer([a.url.slice('http://'.length), b.url.slice('http://'.length)]);
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    await balancer?.close();
    await Promise.all([a?.kill(), b?.kill()]);
    await redis?.stop();
  });

  test(`${PAGES} pages on two nodes: media comes back on every page after the owner is killed`, async () => {
    const room = await createRoom(a.url, { name: 'cluster', conferenceType: 'SFU' });
    const pages = [];
    const addresses = [];
    try {
      for (let i = 0; i < PAGES; i++) {
        // The application's page comes from B (it outlives A); the SDK connects through the
        // balancer (`host`), and so does every resume.
        const page = await openPage(browser, b.url);
        pages.push(page);
        const joined = await page.evaluate(([token, n, host]) => window.T.join(token, n, { host }),
          [room.token, `C${i}`, balancer.host]);
        assert.ok(joined.address, JSON.stringify(joined));
        assert.equal(joined.conferenceType, 'SFU');
        addresses.push(joined.address);
      }
      // Round robin: the signaling sockets alternate, two on A (the owner), two on B (bridged).
      const hostA = a.url.slice('http://'.length);
      const hostB = b.url.slice('http://'.length);
      assert.deepEqual(balancer.routed, [hostA, hostB, hostA, hostB]);
      const others = (i) => addresses.filter((_, j) => j !== i);
      for (let i = 0; i < PAGES; i++) {
        await waitForMedia(pages[i], others(i), { via: 'sfu' });
        await waitForMoreMedia(pages[i], await mediaCounts(pages[i]));
        // Through A's media plane, which runs the room's media.
        assert.equal(await sfuPort(pages[i]), a.mediaPort);
      }

      const joinedBefore = await Promise.all(pages.map(async (page) => (await events(page, 'participantJoined')).length));
      const killedAt = Date.now();
      await a.kill();

      // Per page: when it first decoded fresh video and received fresh audio from all three
      // others through B's media port. Counters are taken as a base at the first look through
      // B (a new connection to `sfu` starts them again, so a drop re-bases them).
      const base = pages.map(() => null);
      const backAt = pages.map(() => null);
      await waitUntil(async () => {
        await Promise.all(pages.map(async (page, i) => {
          if (backAt[i] !== null) return;
          const [port, media] = await Promise.all([sfuPort(page), mediaCounts(page)]);
          if (port !== b.mediaPort) return;
          const now = Date.now();
          if (base[i] === null) {
            base[i] = media;
            return;
          }
          let fresh = true;
          for (const address of others(i)) {
            const m = media[address] ?? { frames: 0, packets: 0 };
            const was = base[i][address] ?? { frames: 0, packets: 0 };
            if (m.frames < was.frames || m.packets < was.packets) base[i][address] = m;
            if (!(m.frames > was.frames && m.packets > was.packets)) fresh = false;
          }
          if (fresh) backAt[i] = now;
        }));
        return { done: backAt.every((t) => t !== null), backAt, base };
      }, 'fresh media on every page through B', { timeout: 90000, interval: 100 });
      const took = Math.max(...backAt) - killedAt;

      for (let i = 0; i < PAGES; i++) {
        // The same seats: our own address, and the three others, none gone or new.
        const seen = await pages[i].evaluate(() => ({
          address: window.T.room.localParticipant.address,
          remotes: window.T.room.remoteParticipants.map((p) => p.address).sort(),
        }));
        assert.equal(seen.address, addresses[i]);
        assert.deepEqual(seen.remotes, others(i).sort());
        assert.deepEqual(await events(pages[i], 'participantLeft'), []);
        assert.equal((await events(pages[i], 'participantJoined')).length, joinedBefore[i]);
        assert.deepEqual(await events(pages[i], 'roomLeft'), []);
        // A page whose socket was on A resumed it (through the balancer, on B); a bridged
        // page kept its socket, which B re-attached: it saw no signaling drop.
        const drops = (await events(pages[i], 'reconnecting')).filter((e) => e.value === 'signaling');
        assert.equal(drops.length, i % 2 === 0 ? 1 : 0, JSON.stringify(drops));
        // And it keeps coming.
        await waitForMoreMedia(pages[i], await mediaCounts(pages[i]));
      }
      const lines = [];
      for (let i = 0; i < PAGES; i++) {
        const reconnects = (await pages[i].evaluate(() => window.T.events
          .filter((e) => e.event === 'reconnecting' || e.event === 'reconnected')
          .map((e) => `${e.event}:${e.value}`))).join(' ');
        lines.push(`C${i} (${i % 2 === 0 ? 'on A' : 'bridged through B'}): ${backAt[i] - killedAt} ms [${reconnects}]`);
      }
      const resumedOn = balancer.routed.slice(PAGES).map((h) => (h === hostA ? 'A' : h === hostB ? 'B' : 'none'));
      console.log(`# owner killed: media from all ${PAGES - 1} others again on all ${PAGES} pages ${took} ms after the kill`
        + ` (lease ${LEASE_MS} ms; sockets opened through the balancer after the kill went to: ${resumedOn.join(', ')})`);
      for (const line of lines) console.log(`#   ${line}`);
    } finally {
      await Promise.all(pages.map((p) => p.context().close()));
    }
  });
});

describe('a MESH room owned by node A, two of its pages bridged through node B', { skip: missing ?? false }, () => {
  let redis;
  let a;
  let b;
  let browser;
  before(async () => {
    redis = await startRedis();
    a = await node(redis, 'a');
    b = await node(redis, 'b');
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    await Promise.all([a?.kill(), b?.kill()]);
    await redis?.stop();
  });

  test('three pages, two of them bridged through B: every pair connects', async () => {
    // P0's socket is on A, the owner; P1's and P2's are on B, which relays the signals
    // between those two itself (docs/cluster.md, "Relays between sockets on one edge stay on
    // it") and passes the others through A. Every pair of pages must connect.
    const room = await createRoom(a.url, { name: 'mesh on two nodes' });
    const metric = async (server, series) => {
      const text = await (await fetch(`${server.url}/metrics`)).text();
      const line = text.split('\n').find((l) => l.startsWith(`${series} `));
      return Number(line?.split(' ')[1] ?? 0);
    };
    const relayedOnB = () => metric(b, 'convene_signaling_messages_relayed_total');
    const before = await relayedOnB();
    const pages = [];
    const addresses = [];
    try {
      for (const [i, server] of [a, b, b].entries()) {
        const page = await openPage(browser, server.url);
        pages.push(page);
        const joined = await page.evaluate(([token, n, host]) => window.T.join(token, n, { host }),
          [room.token, `M${i}`, server.url.slice('http://'.length)]);
        assert.ok(joined.address, JSON.stringify(joined));
        assert.equal(joined.conferenceType, 'MESH');
        addresses.push(joined.address);
      }
      // A owns the room: B bridged both its sockets there.
      assert.equal(await metric(b, 'convene_bridge_links_total{side="edge"}'), 2);
      assert.equal(await metric(a, 'convene_bridge_links_total{side="hosted"}'), 2);
      const others = (i) => addresses.filter((_, j) => j !== i);
      for (let i = 0; i < pages.length; i++) {
        await waitForMedia(pages[i], others(i), { via: 'mesh' });
        await waitForMoreMedia(pages[i], await mediaCounts(pages[i]));
      }
      // B relayed the offer, answer and candidates between P1 and P2 (A relays the rest).
      assert.ok(await relayedOnB() > before, 'B relayed no signal itself');
    } finally {
      await Promise.all(pages.map((p) => p.context().close()));
    }
  });
});
