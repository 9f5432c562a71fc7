// Test support for the browser tests: the convene binary on a random port, REST helpers,
// and Chromium pages that use the SDK as an application would.

import { spawn } from 'node:child_process';
import { chromium } from 'playwright-core';

export const API_KEY = 'browser-test-key';
const SECRET = 'browser-test-secret-of-at-least-32-bytes';

/** Flags known to work on these machines (shared/notes/browser-tests.md). */
const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
];

/** Starts the service; resolves to `{ url, stop() }`. */
export function startServer(env = {}) {
  const bin = process.env.CONVENE_BIN ?? 'target/debug/convene';
  const child = spawn(bin, [], {
    env: {
      PATH: process.env.PATH,
      CONVENE_BIND: '127.0.0.1:0',
      CONVENE_API_KEYS: API_KEY,
      CONVENE_TOKEN_SECRET: SECRET,
      CONVENE_LOG_LEVEL: 'warn,convene=info',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`convene did not start:\n${logs.join('')}`)), 30000);
    const onData = (chunk) => {
      const text = chunk.toString();
      logs.push(text);
      const match = text.match(/listening on (\d+\.\d+\.\d+\.\d+:\d+)/);
      if (match) {
        clearTimeout(timer);
        resolve({
          url: `http://${match[1]}`,
          logs,
          stop: () => new Promise((done) => {
            child.once('exit', done);
            child.kill('SIGTERM');
          }),
        });
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code) => reject(new Error(`convene exited (${code}):\n${logs.join('')}`)));
  });
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

export function launchBrowser() {
  return chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS, headless: true });
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
    T.join = async (token, name, options = {}) => {
      const stream = await navigator.mediaDevices.getUserMedia({
        audio: true,
        video: { width: 320, height: 240, frameRate: 15 },
      });
      try {
        const room = await sdk.joinRoom(token, { name, mediaStream: stream, ...options });
        T.room = room;
        const events = ['participantJoined', 'participantLeft', 'participantUpdated', 'participantJoinFailed',
          'remoteStream', 'messageReceived', 'conferenceTypeChanged', 'roomLeft'];
        for (const event of events) {
          room.on(event, (subject, detail) => {
            const address = typeof subject === 'object' && subject ? subject.address : undefined;
            T.events.push({ event, address, value: address ? undefined : subject, detail, audio: subject?.audio });
          });
        }
        return { address: room.localParticipant.address, conferenceType: room.conferenceType };
      } catch (e) {
        return { error: e.reason, code: e.code };
      }
    };
    // Per remote participant: video frames decoded and audio packets received.
    T.media = async () => {
      const result = {};
      for (const [address, pc] of T.room._peerConnections()) {
        let frames = 0;
        let packets = 0;
        (await pc.getStats()).forEach((s) => {
          if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded ?? 0;
          if (s.type === 'inbound-rtp' && s.kind === 'audio') packets += s.packetsReceived ?? 0;
        });
        result[address] = { frames, packets };
      }
      return result;
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

/** Waits until the page receives video and audio from every one of `addresses`. */
export async function waitForMedia(page, addresses, timeout = 30000) {
  await page.waitForFunction(
    async (want) => {
      const media = await window.T.media();
      return want.every((a) => media[a] && media[a].frames > 0 && media[a].packets > 0);
    },
    addresses,
    { timeout, polling: 250 },
  );
}
