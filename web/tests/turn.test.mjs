// TURN end to end, without compose: Debian's coturn (`turnserver`, with the deployment's
// deploy/coturn/turnserver.conf) on loopback, Convene handing out TURN REST credentials from
// the same secret (`CONVENE_ICE_SERVERS`, `CONVENE_TURN_SECRET`), and pages that join with
// `iceTransportPolicy: 'relay'`, so that their media can only flow through the relay: the
// selected candidate pair of every connection is a relay candidate on our side, and video is
// decoded. With a secret coturn does not share, nothing connects.
//
// Without turnserver the tests are skipped with a message, unless CONVENE_REQUIRE_TURN=1 or
// CONVENE_REQUIRE_BROWSER=1 (CI sets both), when that is a failure.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  TURNSERVER, createRoom, launchBrowser, openPage, selectedCandidates, selfSignedCertificate, startServer,
  startTurnServer, waitForEvent, waitForMedia,
} from './harness.mjs';

const SECRET = 'turn-test-secret-shared-with-coturn';
const required = process.env.CONVENE_REQUIRE_TURN === '1' || process.env.CONVENE_REQUIRE_BROWSER === '1';
const missing = TURNSERVER ? null : 'turnserver is missing: install it with `apt-get install -y coturn`';
if (missing && required) throw new Error(`TURN tests required but ${missing}`);
if (missing) console.log(`skipped: TURN tests: ${missing}`);

describe('TURN relay (coturn)', { skip: missing ?? false }, () => {
  let browser;
  let turn;
  let server;
  before(async () => {
    turn = await startTurnServer(SECRET);
    server = await startServer({ CONVENE_ICE_SERVERS: turn.url, CONVENE_TURN_SECRET: SECRET });
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
    await turn?.stop();
  });

  async function joinRelayed(url, room, name, options = {}) {
    const page = await openPage(browser, url);
    const joined = await page.evaluate(
      ([token, n, o]) => window.T.join(token, n, o),
      [room.token, name, { iceTransportPolicy: 'relay', ...options }],
    );
    assert.ok(joined.address, JSON.stringify(joined));
    return { page, address: joined.address };
  }

  test('joined.iceServers carries TURN REST credentials for the participant', async () => {
    const room = await createRoom(server.url, { name: 'turn creds' });
    const { page, address } = await joinRelayed(server.url, room, 'C');
    try {
      const servers = await page.evaluate(() => window.T.room._iceServers);
      assert.equal(servers.length, 1, JSON.stringify(servers));
      assert.deepEqual(servers[0].urls, [turn.url]);
      const [expiry, who] = servers[0].username.split(':');
      assert.equal(who, address);
      assert.ok(Number(expiry) > Date.now() / 1000, servers[0].username);
      assert.match(servers[0].credential, /^[A-Za-z0-9+/]{27}=$/);
    } finally {
      await page.context().close();
    }
  });

  test('MESH: two pages relay-only get each other\'s media through coturn', async () => {
    const room = await createRoom(server.url, { name: 'turn mesh' });
    const a = await joinRelayed(server.url, room, 'A');
    const b = await joinRelayed(server.url, room, 'B');
    try {
      await waitForMedia(a.page, [b.address], { via: 'mesh' });
      await waitForMedia(b.page, [a.address], { via: 'mesh' });
      for (const [page, other] of [[a.page, b.address], [b.page, a.address]]) {
        const pairs = await selectedCandidates(page);
        // Both sides gathered relay candidates only, so the pair is relay to relay.
        assert.deepEqual(pairs[other], { local: 'relay', remote: 'relay', localTypes: ['relay'] }, JSON.stringify(pairs));
      }
      // coturn allocated for both participants, with the usernames Convene made.
      const log = turn.logs.join('');
      for (const address of [a.address, b.address]) {
        assert.match(log, new RegExp(`user <\\d+:${address}>`), `no allocation by ${address} in coturn's log`);
      }
    } finally {
      await Promise.all([a.page.context().close(), b.page.context().close()]);
    }
  });

  test('SFU: relay-only pages reach the media server through coturn', async () => {
    const room = await createRoom(server.url, { name: 'turn sfu', conferenceType: 'SFU' });
    const a = await joinRelayed(server.url, room, 'A');
    const b = await joinRelayed(server.url, room, 'B');
    try {
      await waitForMedia(a.page, [b.address], { via: 'sfu' });
      await waitForMedia(b.page, [a.address], { via: 'sfu' });
      for (const page of [a.page, b.page]) {
        const pairs = await selectedCandidates(page);
        // Our side relays; the server's side is its (ICE-lite) host candidate.
        assert.deepEqual(pairs.sfu, { local: 'relay', remote: 'host', localTypes: ['relay'] }, JSON.stringify(pairs));
      }
    } finally {
      await Promise.all([a.page.context().close(), b.page.context().close()]);
    }
  });

  test('credentials from another secret are refused: relay-only pages never connect', async () => {
    const other = await startServer({ CONVENE_ICE_SERVERS: turn.url, CONVENE_TURN_SECRET: 'not-the-secret-coturn-has' });
    try {
      const room = await createRoom(other.url, { name: 'turn refused' });
      const a = await joinRelayed(other.url, room, 'A', { connectionTimeout: 5000 });
      const b = await joinRelayed(other.url, room, 'B', { connectionTimeout: 5000 });
      try {
        await waitForEvent(b.page, { event: 'participantJoinFailed', address: a.address });
        const pairs = await selectedCandidates(b.page);
        assert.equal(pairs[a.address]?.local ?? null, null, JSON.stringify(pairs));
        assert.deepEqual(pairs[a.address]?.localTypes ?? [], [], JSON.stringify(pairs));
      } finally {
        await Promise.all([a.page.context().close(), b.page.context().close()]);
      }
    } finally {
      await other.stop();
    }
  });
});

describe('TURN over TLS (coturn, turns:)', { skip: missing ?? false }, () => {
  let turn;
  let server;
  let certificate;
  before(async () => {
    certificate = selfSignedCertificate();
    assert.ok(certificate, 'openssl makes the test certificate');
    turn = await startTurnServer(SECRET, { tls: certificate });
    // Only the turns: URL: the pages can relay over TLS or not at all.
    server = await startServer({ CONVENE_ICE_SERVERS: turn.tlsUrl, CONVENE_TURN_SECRET: SECRET });
  });
  after(async () => {
    await server?.stop();
    await turn?.stop();
  });

  async function joinRelayed(browser, room, name, options = {}) {
    const page = await openPage(browser, server.url);
    const joined = await page.evaluate(
      ([token, n, o]) => window.T.join(token, n, o),
      [room.token, name, { iceTransportPolicy: 'relay', ...options }],
    );
    assert.ok(joined.address, JSON.stringify(joined));
    return { page, address: joined.address };
  }

  /** The relay protocol of the local candidate of each connection's selected pair. */
  function relayProtocols(page) {
    return page.evaluate(async () => {
      const out = {};
      for (const [address, pc] of window.T.room._peerConnections()) {
        const stats = await pc.getStats();
        stats.forEach((s) => {
          if (s.type === 'transport' && s.selectedCandidatePairId) {
            const pair = stats.get(s.selectedCandidatePairId);
            out[address] = stats.get(pair.localCandidateId)?.relayProtocol ?? null;
          }
        });
      }
      return out;
    });
  }

  test('Chromium refuses a TURN server whose certificate it does not trust', async () => {
    const browser = await launchBrowser();
    try {
      const room = await createRoom(server.url, { name: 'turns untrusted' });
      const a = await joinRelayed(browser, room, 'A', { connectionTimeout: 5000 });
      const b = await joinRelayed(browser, room, 'B', { connectionTimeout: 5000 });
      const servers = await a.page.evaluate(() => window.T.room._iceServers);
      assert.deepEqual(servers[0].urls, [turn.tlsUrl]);
      await waitForEvent(b.page, { event: 'participantJoinFailed', address: a.address });
      const pairs = await selectedCandidates(b.page);
      assert.deepEqual(pairs[a.address]?.localTypes ?? [], [], JSON.stringify(pairs));
    } finally {
      await browser.close();
    }
  });

  test('MESH: relay-only pages get each other\'s media through coturn over TLS', async () => {
    const browser = await launchBrowser({ extraArgs: [`--ignore-certificate-errors-spki-list=${certificate.spki}`] });
    try {
      const room = await createRoom(server.url, { name: 'turns mesh' });
      const a = await joinRelayed(browser, room, 'A');
      const b = await joinRelayed(browser, room, 'B');
      await waitForMedia(a.page, [b.address], { via: 'mesh' });
      await waitForMedia(b.page, [a.address], { via: 'mesh' });
      for (const [page, other] of [[a.page, b.address], [b.page, a.address]]) {
        const pairs = await selectedCandidates(page);
        assert.deepEqual(pairs[other], { local: 'relay', remote: 'relay', localTypes: ['relay'] }, JSON.stringify(pairs));
        assert.deepEqual(await relayProtocols(page), { [other]: 'tls' });
      }
      // coturn's sessions of both participants ran over TLS.
      const log = turn.logs.join('');
      for (const address of [a.address, b.address]) {
        assert.match(log, new RegExp(`username=<\\d+:${address}>.*method=TLSv1\\.[23]`), `no TLS session of ${address} in coturn's log`);
      }
    } finally {
      await browser.close();
    }
  });
});
