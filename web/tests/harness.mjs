// Test support for the browser tests: the convene binary on a random port, REST helpers,
// and Chromium pages that use the SDK as an application would.

import { spawn, spawnSync } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { X509Certificate, createHash, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const API_KEY = 'browser-test-key';
const SECRET = 'browser-test-secret-of-at-least-32-bytes';

/** Chromium's flags; docs/browser-tests.md says why each is there. */
const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
];

/** Starts the service; resolves to `{ url, mediaPort, logs, stop(), kill() }` (`kill`: SIGKILL,
 * as a crashed node; both resolve once the process has exited). */
export function startServer(env = {}) {
  const bin = process.env.CONVENE_BIN ?? 'target/debug/convene';
  const child = spawn(bin, [], {
    env: {
      PATH: process.env.PATH,
      CONVENE_BIND: '127.0.0.1:0',
      CONVENE_API_KEYS: API_KEY,
      CONVENE_TOKEN_SECRET: SECRET,
      CONVENE_LOG_LEVEL: 'warn,convene=info',
      // The SFU's media port: a free one, on loopback like everything in these tests.
      CONVENE_RTC_UDP_PORT: '0',
      CONVENE_RTC_ADVERTISE_IP: '127.0.0.1',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs = [];
  let exited = false;
  child.once('exit', () => { exited = true; });
  const end = (signal) => new Promise((done) => {
    if (exited) return done();
    child.once('exit', () => done());
    child.kill(signal);
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`convene did not start:\n${logs.join('')}`));
    }, 30000);
    const onData = (chunk) => {
      const text = chunk.toString();
      logs.push(text);
      const match = text.match(/listening on (\d+\.\d+\.\d+\.\d+:\d+)/);
      if (match) {
        clearTimeout(timer);
        // The media plane's UDP port, as bound (it starts before the HTTP listener).
        const media = logs.join('').match(/media plane listening \(UDP\).*?bind=[\d.]+:(\d+)/);
        resolve({
          url: `http://${match[1]}`,
          mediaPort: media ? Number(media[1]) : null,
          logs,
          stop: () => end('SIGTERM'),
          kill: () => end('SIGKILL'),
        });
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code) => reject(new Error(`convene exited (${code}):\n${logs.join('')}`)));
  });
}

/**
 * A UDP relay on loopback in front of the server's media port, so that a test can cut the
 * media path: start the server with `CONVENE_RTC_ADVERTISE_PORT: relay.port`, then
 * `relay.connect(server.mediaPort)`. Each client address gets its own socket toward the
 * server; `block()` drops every datagram both ways until `unblock()`.
 */
export async function startUdpRelay() {
  const front = dgram.createSocket('udp4');
  await new Promise((resolve) => front.bind(0, '127.0.0.1', resolve));
  const upstreams = new Map();
  let target = null;
  let blocked = false;
  front.on('message', (datagram, client) => {
    if (blocked || target === null) return;
    const key = `${client.address}:${client.port}`;
    let upstream = upstreams.get(key);
    if (!upstream) {
      upstream = dgram.createSocket('udp4');
      upstream.bind(0, '127.0.0.1');
      upstream.on('message', (reply) => {
        if (!blocked) front.send(reply, client.port, client.address);
      });
      upstreams.set(key, upstream);
    }
    upstream.send(datagram, target, '127.0.0.1');
  });
  return {
    port: front.address().port,
    connect(port) { target = port; },
    block() { blocked = true; },
    unblock() { blocked = false; },
    close() {
      for (const upstream of upstreams.values()) upstream.close();
      front.close();
    },
  };
}

export async function createRoom(url, body = {}) {
  const res = await fetch(`${url}/api/realtime/room`, {
    method: 'POST',
    headers: { 'x-vcs-token': API_KEY, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (res.status !== 200) throw new Error(`create failed: ${res.status} ${await res.text()}`);
  return (await res.json()).room;
}

/** Launches Chromium; `fakeDevice` parameters of the fake devices (`device-count=3`);
 * `{ loopbackPeers: false }` leaves out the flag without which it gathers
 * no ICE candidates on loopback, so its peer connections never connect; `extraArgs` are more
 * flags (e.g. `--force-fieldtrials=WebRTC-LegacySimulcastLayerLimit/Disabled/`, so that a
 * small camera sends three simulcast layers; Chromium keeps only one `--force-fieldtrials`). */
export function launchBrowser({ loopbackPeers = true, extraArgs = [], fakeDevice = null } = {}) {
  let base = loopbackPeers ? CHROMIUM_ARGS : CHROMIUM_ARGS.filter((a) => a !== '--allow-loopback-in-peer-connection');
  // Parameters of the fake devices (e.g. `device-count=3`: three cameras), on the one flag.
  if (fakeDevice) {
    base = base.map((a) => (a === '--use-fake-device-for-media-stream' ? `${a}=${fakeDevice}` : a));
  }
  return chromium.launch({ executablePath: '/usr/bin/chromium', args: [...base, ...extraArgs], headless: true });
}

/**
 * Opens a page of the service in a fresh context and loads the SDK into it. The page keeps
 * every event it sees in `window.T.events`.
 */
export async function openPage(browser, url) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error') console.log(`[page] ${m.text()}`);
  });
  await page.goto(`${url}/demo`);
  await page.evaluate(async () => {
    const sdk = await import('/sdk/convene.js');
    const T = { sdk, room: null, events: [] };
    window.T = T;
    // Joins like an application: a small camera of its own (160x120 at 10 fps, so that many
    // pages fit on two cores) unless `options.delayLocalStream` (then the SDK asks for camera
    // and microphone itself), handlers added once joinRoom resolves.
    T.join = async (token, name, options = {}) => {
      if (!options.delayLocalStream) {
        options = {
          mediaStream: await navigator.mediaDevices.getUserMedia({
            audio: true,
            video: { width: 160, height: 120, frameRate: 10 },
          }),
          ...options,
        };
      }
      try {
        const room = await sdk.joinRoom(token, { name, ...options });
        T.room = room;
        const events = ['participantJoined', 'participantLeft', 'participantUpdated', 'participantJoinFailed',
          'localStream', 'remoteStream', 'messageReceived', 'conferenceTypeChanged', 'reconnecting', 'reconnected',
          'roomLeft', 'audioBlocked', 'screenShareStarted', 'screenShareStopped'];
        for (const event of events) {
          room.on(event, (subject, detail) => {
            const address = typeof subject === 'object' && subject ? subject.address : undefined;
            T.events.push({
              event, address, value: address ? undefined : subject, detail, audio: subject?.audio, at: performance.now(),
            });
          });
        }
        // The speakers' addresses (Participant objects do not cross to the test).
        room.on('localTrackChanged', (kind, track) => {
          T.events.push({ event: 'localTrackChanged', value: kind, detail: track.getSettings().deviceId, at: performance.now() });
        });
        room.on('activeSpeakersChanged', (speakers) => {
          T.events.push({ event: 'activeSpeakersChanged', value: speakers.map((p) => p.address), at: performance.now() });
        });
        return { address: room.localParticipant.address, conferenceType: room.conferenceType };
      } catch (e) {
        return { error: e.reason, code: e.code };
      }
    };
    // Per remote participant, from the SDK's getStats(): video frames decoded, audio packets
    // received, and the connection they came through (`mesh` or `sfu`).
    T.media = async () => {
      const result = {};
      for (const p of T.room.remoteParticipants) {
        const { via, audio, video } = await p.getStats();
        result[p.address] = { frames: video.framesDecoded, packets: audio.packetsReceived, via };
      }
      return result;
    };
    // Watches decoded video per remote participant every `interval` ms until T.stopWatch():
    // per address the longest time without a new decoded frame (`maxGap`, counted from the
    // first frame seen) and when the first frame through `sfu` was decoded (`firstSfuAt`,
    // performance.now() time). Counters start from 0 on a new connection, so a change of
    // `via` with frames decoded counts as progress.
    T.watch = (interval = 100) => {
      const seen = {};
      T.watched = seen;
      const tick = async () => {
        const now = performance.now();
        if (!seen.sfuConnectedAt && T.room?._sfuConnection()?.connectionState === 'connected') seen.sfuConnectedAt = now;
        for (const p of T.room?.remoteParticipants ?? []) {
          if (p.address === 'sfuConnectedAt') continue;
          const { via, video } = await p.getStats();
          const s = seen[p.address] ??= { via: null, frames: 0, last: null, maxGap: 0, firstSfuAt: null };
          const progress = video.framesDecoded > 0 && (via !== s.via || video.framesDecoded > s.frames);
          if (progress) {
            if (s.last !== null) s.maxGap = Math.max(s.maxGap, now - s.last);
            s.last = now;
            if (via === 'sfu' && s.firstSfuAt === null) s.firstSfuAt = now;
          }
          s.via = via;
          s.frames = video.framesDecoded;
        }
      };
      const timer = setInterval(tick, interval);
      T.stopWatch = () => {
        clearInterval(timer);
        return seen;
      };
    };
  });
  return page;
}

/** Waits until the page has seen an event matching `match` (an object of fields). */
export async function waitForEvent(page, match, timeout = 15000) {
  await page.waitForFunction(
    (m) => window.T.events.some((e) => Object.entries(m).every(([k, v]) => e[k] === v)),
    match,
    { timeout },
  );
}

/**
 * Polls `check` (an async function answering a truthy value when done) until it is done;
 * fails with `what` and the last value seen after `timeout` ms. (Playwright's waitForFunction
 * takes a Promise as a truthy answer, so async conditions, like getStats, are polled from here.)
 */
export async function waitUntil(check, what, { timeout = 30000, interval = 200 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await check();
    if (last && last.done !== false) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}; last: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** Waits until the page receives video (frames decoded) and audio (packets received) from
 * every one of `addresses` (with `via`, through that connection: `mesh` or `sfu`). */
export async function waitForMedia(page, addresses, { timeout = 30000, via } = {}) {
  return waitUntil(async () => {
    const media = await page.evaluate(() => window.T.media());
    const done = addresses.every((a) => media[a] && media[a].frames > 0 && media[a].packets > 0
      && (!via || media[a].via === via));
    return { done, media };
  }, `media from ${addresses.join(', ')}${via ? ` via ${via}` : ''}`, { timeout });
}

/** Per remote address: `{ frames, packets }` received so far by the page. */
export function mediaCounts(page) {
  return page.evaluate(() => window.T.media());
}

/** Waits until the page has decoded more than `counts[address].frames` video frames and
 * received more than `counts[address].packets` audio packets from each address of `counts`. */
export async function waitForMoreMedia(page, counts, timeout = 30000) {
  await waitUntil(async () => {
    const media = await page.evaluate(() => window.T.media());
    const done = Object.entries(counts).every(
      ([a, b]) => media[a] && media[a].frames > b.frames && media[a].packets > b.packets,
    );
    return { done, media, before: counts };
  }, 'more media', { timeout });
}

/** The room's participants as the server lists them (REST). */
export async function participantsOf(url, roomId) {
  const res = await fetch(`${url}/api/realtime/room/${roomId}/participants`, { headers: { 'x-vcs-token': API_KEY } });
  if (res.status !== 200) throw new Error(`participants: ${res.status} ${await res.text()}`);
  return (await res.json()).data;
}

/** Where Debian's coturn (`apt-get install coturn`) puts its server, if installed. */
export const TURNSERVER = ['/usr/bin/turnserver', '/usr/sbin/turnserver'].find((p) => existsSync(p)) ?? null;

/** A free UDP port on loopback (bound, then let go). */
async function freeUdpPort() {
  const socket = dgram.createSocket('udp4');
  await new Promise((resolve) => socket.bind(0, '127.0.0.1', resolve));
  const { port } = socket.address();
  await new Promise((resolve) => socket.close(resolve));
  return port;
}

async function freeTcpPort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/**
 * A self-signed certificate for 127.0.0.1 made by `openssl` in a fresh directory:
 * `{ cert, key }` (paths) and `spki`, the base64 SHA-256 of its public key, which Chromium's
 * `--ignore-certificate-errors-spki-list` takes. `null` without openssl.
 */
export function selfSignedCertificate() {
  const dir = mkdtempSync(join(tmpdir(), 'convene-cert-'));
  const [cert, key] = [join(dir, 'cert.pem'), join(dir, 'key.pem')];
  const made = spawnSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
    '-keyout', key, '-out', cert,
  ]);
  if (made.error || made.status !== 0) return null;
  const der = new X509Certificate(readFileSync(cert)).publicKey.export({ type: 'spki', format: 'der' });
  return { cert, key, spki: createHash('sha256').update(der).digest('base64') };
}

/** Answers once a STUN Binding request to 127.0.0.1:`port` gets a Binding success. */
async function stunAnswers(port) {
  const socket = dgram.createSocket('udp4');
  const id = randomBytes(12);
  const request = Buffer.concat([Buffer.from([0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42]), id]);
  try {
    return await new Promise((resolve) => {
      socket.on('message', (m) => {
        if (m.length >= 20 && m.readUInt16BE(0) === 0x0101 && m.subarray(8, 20).equals(id)) resolve(true);
      });
      socket.on('error', () => resolve(false));
      socket.send(request, port, '127.0.0.1');
      setTimeout(() => resolve(false), 500);
    });
  } finally {
    socket.close();
  }
}

/**
 * Starts Debian's coturn on loopback with the deployment's configuration
 * (`deploy/coturn/turnserver.conf`: `use-auth-secret`, relay ports, denied peers) and what a
 * loopback-only test needs on top: its own port, `secret`, and relaying allowed to loopback
 * peers (the pages' relay addresses and the server's media port are all on 127.0.0.1).
 * Resolves once it answers STUN; `{ port, url, logs, stop() }`.
 */
export async function startTurnServer(secret, { tls = null } = {}) {
  if (!TURNSERVER) throw new Error('turnserver (Debian package coturn) is not installed');
  const port = await freeUdpPort();
  // TURN over TLS (the deployment's tls-listening-port) on a free port, with `tls`'s
  // certificate; without one coturn listens on no TLS port.
  const tlsPort = tls ? await freeTcpPort() : null;
  const tlsArgs = tls ? [`--tls-listening-port=${tlsPort}`, `--cert=${tls.cert}`, `--pkey=${tls.key}`] : [];
  const dir = mkdtempSync(join(tmpdir(), 'convene-turn-'));
  const child = spawn(TURNSERVER, [
    '-c', 'deploy/coturn/turnserver.conf',
    `--listening-port=${port}`, '--listening-ip=127.0.0.1', '--relay-ip=127.0.0.1',
    `--static-auth-secret=${secret}`, '--realm=convene.test',
    '--allowed-peer-ip=127.0.0.1', '--allow-loopback-peers',
    // Sessions (realm and username of each allocation) are logged only when verbose.
    '--verbose',
    `--pidfile=${join(dir, 'turnserver.pid')}`, `--userdb=${join(dir, 'turndb')}`,
    ...tlsArgs,
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  const logs = [];
  child.stdout.on('data', (c) => logs.push(c.toString()));
  child.stderr.on('data', (c) => logs.push(c.toString()));
  let exited = null;
  child.once('exit', (code) => { exited = code; });
  await waitUntil(async () => {
    if (exited !== null) throw new Error(`turnserver exited (${exited}):\n${logs.join('')}`);
    return stunAnswers(port);
  }, 'turnserver to answer STUN', { timeout: 15000 });
  if (tls) {
    await waitUntil(() => new Promise((resolve) => {
      const socket = net.connect(tlsPort, '127.0.0.1', () => { socket.destroy(); resolve(true); });
      socket.on('error', () => resolve(false));
    }), 'turnserver to listen for TLS', { timeout: 15000 });
  }
  return {
    port,
    url: `turn:127.0.0.1:${port}?transport=udp`,
    tlsUrl: tls ? `turns:127.0.0.1:${tlsPort}?transport=tcp` : null,
    logs,
    stop: () => new Promise((done) => {
      if (exited !== null) return done();
      child.once('exit', done);
      child.kill('SIGTERM');
    }),
  };
}

/** Per peer connection of the page's room (MESH peers and `sfu`): the candidate types of the
 * selected pair (`local`, `remote`), and the types of every local candidate gathered. */
export function selectedCandidates(page) {
  return page.evaluate(async () => {
    const room = window.T.room;
    const pcs = [...room._peerConnections()];
    if (room._sfuConnection()) pcs.push(['sfu', room._sfuConnection()]);
    const result = {};
    for (const [address, pc] of pcs) {
      const stats = await pc.getStats();
      let selected = null;
      const localTypes = new Set();
      stats.forEach((s) => {
        if (s.type === 'transport' && s.selectedCandidatePairId) selected = stats.get(s.selectedCandidatePairId);
        if (s.type === 'local-candidate') localTypes.add(s.candidateType);
      });
      result[address] = {
        local: selected ? stats.get(selected.localCandidateId)?.candidateType : null,
        remote: selected ? stats.get(selected.remoteCandidateId)?.candidateType : null,
        localTypes: [...localTypes].sort(),
      };
    }
    return result;
  });
}

/**
 * Serves `html` at `/` of a plain HTTP server on loopback (a page of another origin than the
 * service, as an application's would be); every other path is redirected to the same path on
 * `backend` (the service: `/sdk/v1/convene.js` and the like). Playwright's routes cannot stand
 * in for it: Chromium treats a routed document as outside the local network and refuses its
 * sockets to 127.0.0.1. Resolves to `{ url, close() }`.
 */
export async function servePage(html, backend) {
  const server = http.createServer((req, res) => {
    const path = new URL(req.url, 'http://page').pathname;
    if (path === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(html);
    } else {
      res.writeHead(302, { location: `${backend}${req.url}` });
      res.end();
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}/`,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

/** Where Debian's `redis-server` (`apt-get install redis-server`) is, if installed. */
export const REDIS_SERVER = ['/usr/bin/redis-server', '/usr/sbin/redis-server', '/usr/local/bin/redis-server']
  .find((p) => existsSync(p)) ?? null;

/** A free TCP port on loopback (bound, then let go). */
/** Answers once `PING` to the Redis at 127.0.0.1:`port` gets `+PONG`. */
function redisAnswers(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let reply = '';
    const done = (ok) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => done(false));
    socket.on('error', () => done(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (d) => {
      reply += d.toString();
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
    });
  });
}

/**
 * Starts a private `redis-server` on a free loopback port, without persistence (never the
 * machine's Redis). Resolves once it answers PING; `{ port, url, stop() }`.
 */
export async function startRedis() {
  if (!REDIS_SERVER) throw new Error('redis-server is not installed');
  const port = await freeTcpPort();
  const child = spawn(REDIS_SERVER, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs = [];
  child.stdout.on('data', (c) => logs.push(c.toString()));
  child.stderr.on('data', (c) => logs.push(c.toString()));
  let exited = null;
  child.once('exit', (code) => { exited = code ?? 'signal'; });
  const stop = () => new Promise((done) => {
    if (exited !== null) return done();
    child.once('exit', () => done());
    child.kill('SIGKILL');
  });
  try {
    await waitUntil(async () => {
      if (exited !== null) throw new Error(`redis-server exited (${exited}):\n${logs.join('')}`);
      return redisAnswers(port);
    }, 'redis-server to answer PING', { timeout: 15000, interval: 50 });
  } catch (e) {
    await stop();
    throw e;
  }
  return { port, url: `redis://127.0.0.1:${port}/`, stop };
}

/**
 * A TCP load balancer on loopback, the way a deployment puts one (Caddy) in front of several
 * nodes: each new connection goes to the next backend (`host:port`) in turn, round robin; a
 * backend whose connect fails is skipped for the next one, and a connection that no backend
 * takes is closed. It does not look into the bytes (no stickiness). `routed` lists, per
 * connection accepted, the backend it went to (`null`: none). Resolves to
 * `{ url, host, routed, close() }`.
 */
export async function startBalancer(backends) {
  let next = 0;
  const routed = [];
  const sockets = new Set();
  const track = (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  };
  const server = net.createServer((client) => {
    track(client);
    client.pause();
    const index = routed.length;
    routed.push(undefined);
    const first = next;
    next = (next + 1) % backends.length;
    const attempt = (tried) => {
      if (client.destroyed) return;
      if (tried === backends.length) {
        routed[index] = null;
        client.destroy();
        return;
      }
      const backend = backends[(first + tried) % backends.length];
      const [host, port] = backend.split(':');
      const upstream = net.connect(Number(port), host);
      track(upstream);
      upstream.once('error', () => {
        if (routed[index] === undefined) attempt(tried + 1);
        else client.destroy();
      });
      upstream.once('connect', () => {
        routed[index] = backend;
        upstream.on('error', () => client.destroy());
        client.on('error', () => upstream.destroy());
        upstream.once('close', () => client.destroy());
        client.once('close', () => upstream.destroy());
        client.pipe(upstream);
        upstream.pipe(client);
        client.resume();
      });
    };
    attempt(0);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const host = `127.0.0.1:${server.address().port}`;
  return {
    url: `http://${host}`,
    host,
    routed,
    close: () => new Promise((resolve) => {
      for (const socket of sockets) socket.destroy();
      server.close(() => resolve());
    }),
  };
}
