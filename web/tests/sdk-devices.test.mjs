// Real-browser tests of what an application does with its devices after joining: switching
// camera and microphone (Chromium's fake devices, two cameras), sharing the screen (a second
// video per participant; getDisplayMedia answered by the fake capture), in MESH and SFU rooms;
// and remote audio held back by the browser's autoplay policy (`audioBlocked`, then
// `startAudio()` from a real click).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  createRoom, launchBrowser, mediaCounts, openPage, servePage, startServer, waitForEvent, waitForMedia,
  waitForMoreMedia, waitUntil,
} from './harness.mjs';

let browser;
let server;
before(async () => {
  // Three fake cameras (the second is a fake depth camera, Y16, which WebRTC does not send;
  // the third gives MJPEG); getDisplayMedia gets a fake screen without a picker.
  browser = await launchBrowser({
    fakeDevice: 'device-count=3',
    extraArgs: ['--auto-select-desktop-capture-source=Entire screen', '--enable-usermedia-screen-capturing'],
  });
  server = await startServer();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

async function joinTwo(conferenceType) {
  const room = await createRoom(server.url, { name: `devices ${conferenceType}`, conferenceType });
  const pages = [];
  const addresses = [];
  for (const name of ['A', 'B']) {
    const page = await openPage(browser, server.url);
    const joined = await page.evaluate(([token, n]) => window.T.join(token, n), [room.token, name]);
    assert.ok(joined.address, JSON.stringify(joined));
    pages.push(page);
    addresses.push(joined.address);
  }
  const via = conferenceType === 'SFU' ? 'sfu' : 'mesh';
  await waitForMedia(pages[0], [addresses[1]], { via });
  await waitForMedia(pages[1], [addresses[0]], { via });
  return { room, pages, addresses };
}

/** Per connection of the page's room, the deviceId of each kind's sending track. */
function sentDevices(page) {
  return page.evaluate(() => {
    const room = window.T.room;
    const pcs = [...room._peerConnections().values()];
    if (room._sfuConnection()) pcs.push(room._sfuConnection());
    return pcs.map((pc) => Object.fromEntries(pc.getSenders().filter((s) => s.track)
      .map((s) => [s.track.kind, s.track.getSettings().deviceId])));
  });
}

for (const conferenceType of ['MESH', 'SFU']) {
  describe(`a ${conferenceType} room`, () => {
    test('camera and microphone switch after joining; the other keeps receiving both', async () => {
      const { pages: [a, b], addresses: [addressA] } = await joinTwo(conferenceType);
      try {
        const devices = await a.evaluate(async () => {
          const all = await navigator.mediaDevices.enumerateDevices();
          const stream = window.T.room.localParticipant.mediaStream;
          return {
            cameras: all.filter((d) => d.kind === 'videoinput').map((d) => ({ id: d.deviceId, label: d.label })),
            microphones: all.filter((d) => d.kind === 'audioinput').map((d) => d.deviceId),
            camera: stream.getVideoTracks()[0].getSettings().deviceId,
            microphone: stream.getAudioTracks()[0].getSettings().deviceId,
          };
        });
        // fake_device_2: another camera that WebRTC can encode.
        const camera = devices.cameras.find((c) => c.label === 'fake_device_2' && c.id !== devices.camera)?.id;
        assert.ok(camera, JSON.stringify(devices));
        const microphone = devices.microphones.find((id) => id !== devices.microphone);
        assert.ok(microphone, JSON.stringify(devices));

        const before = await mediaCounts(b);
        const switched = await a.evaluate(async ([cam, mic]) => {
          const room = window.T.room;
          const video = await room.switchCamera(cam);
          const audio = await room.switchMicrophone(mic);
          const stream = room.localParticipant.mediaStream;
          return {
            video: video.getSettings().deviceId,
            audio: audio.getSettings().deviceId,
            streamVideo: stream.getVideoTracks().map((t) => t.getSettings().deviceId),
            streamAudio: stream.getAudioTracks().map((t) => t.getSettings().deviceId),
            // The new camera keeps the size asked of the old one.
            height: video.getSettings().height,
          };
        }, [camera, microphone]);
        assert.deepEqual(switched, {
          video: camera, audio: microphone, streamVideo: [camera], streamAudio: [microphone], height: 120,
        });
        // Every connection sends the new tracks.
        const sent = await sentDevices(a);
        assert.ok(sent.length >= 1);
        for (const senders of sent) assert.deepEqual(senders, { audio: microphone, video: camera });
        await waitForEvent(a, { event: 'localTrackChanged', value: 'video', detail: camera });
        await waitForEvent(a, { event: 'localTrackChanged', value: 'audio', detail: microphone });
        // The other page goes on decoding A's video and receiving its audio.
        await waitForMoreMedia(b, { [addressA]: before[addressA] });
        // A device that does not exist: a clear refusal, and nothing changed.
        const refused = await a.evaluate(() => window.T.room.switchCamera('no-such-camera')
          .then(() => null, (e) => ({ name: e.name, reason: e.reason })));
        assert.deepEqual(refused, { name: 'ConveneError', reason: 'mediaUnavailable' });
        assert.deepEqual(await sentDevices(a), sent);
      } finally {
        await Promise.all([a.context().close(), b.context().close()]);
      }
    });

    test('screen share: a second video with events, for a later joiner too; stopped, and ended by leaving', async () => {
      const { room, pages, addresses: [addressA] } = await joinTwo(conferenceType);
      const [a, b] = pages;
      try {
        const started = await a.evaluate(async () => {
          // A small screen, so that two cores keep up.
          const stream = await window.T.room.startScreenShare({ video: { width: 320, height: 180, frameRate: 5 } });
          return { tracks: stream.getVideoTracks().length, own: window.T.room.localParticipant.screenStream === stream };
        });
        assert.deepEqual(started, { tracks: 1, own: true });
        await waitForEvent(a, { event: 'screenShareStarted', address: addressA });
        await waitForEvent(b, { event: 'screenShareStarted', address: addressA });
        // B decodes frames of the screen track, and A's camera stream still has one video.
        const screenOf = (page) => waitUntil(() => page.evaluate(async (address) => {
          const p = window.T.room.remoteParticipants.find((r) => r.address === address);
          const track = p.screenStream?.getVideoTracks()[0];
          if (!track) return { done: false, why: 'no screenStream' };
          const pcs = [...window.T.room._peerConnections().values()];
          if (window.T.room._sfuConnection()) pcs.push(window.T.room._sfuConnection());
          let frames = 0;
          for (const pc of pcs) {
            for (const r of pc.getReceivers()) {
              if (r.track !== track) continue;
              (await r.getStats()).forEach((s) => {
                if (s.type === 'inbound-rtp') frames += s.framesDecoded ?? 0;
              });
            }
          }
          const video = p.attachScreen(document.body);
          return {
            done: frames > 0,
            frames,
            cameraVideos: p.mediaStream.getVideoTracks().length,
            cameraHasScreen: p.mediaStream.getTracks().includes(track),
            attached: video?.srcObject === p.screenStream,
          };
        }, addressA), 'screen share frames');
        const screen = await screenOf(b);
        assert.equal(screen.cameraVideos, 1, JSON.stringify(screen));
        assert.equal(screen.cameraHasScreen, false);
        assert.equal(screen.attached, true);
        // The camera keeps coming too.
        const counts = await mediaCounts(b);
        await waitForMoreMedia(b, { [addressA]: counts[addressA] });
        // Someone who joins while A shares gets the share as well.
        const c = await openPage(browser, server.url);
        pages.push(c);
        const joinedC = await c.evaluate((token) => window.T.join(token, 'C'), room.token);
        assert.ok(joinedC.address, JSON.stringify(joinedC));
        await waitForEvent(c, { event: 'screenShareStarted', address: addressA }).catch(async (e) => {
          // What C knows of A's share, and A's connection to C, for the failure's message.
          const seen = await c.evaluate((address) => {
            const p = window.T.room.remoteParticipants.find((r) => r.address === address);
            const pc = window.T.room._peerConnections().get(address);
            return {
              key: p?._screenKey, events: window.T.events.map((x) => x.event), state: pc?.signalingState,
              transceivers: pc?.getTransceivers().map((t) => [t.mid, t.currentDirection, t.receiver.track.kind]),
            };
          }, addressA);
          const sent = await a.evaluate((address) => {
            const peer = window.T.room._peers.get(address);
            return { screenSender: Boolean(peer?.screenSender), state: peer?.pc.signalingState, tracksAdded: peer?.tracksAdded };
          }, joinedC.address);
          throw new Error(`${e.message}: C saw ${JSON.stringify(seen)}; A to C ${JSON.stringify(sent)}`);
        });
        const late = await screenOf(c);
        assert.deepEqual([late.cameraVideos, late.cameraHasScreen], [1, false], JSON.stringify(late));

        await a.evaluate(() => window.T.room.stopScreenShare());
        await waitForEvent(a, { event: 'screenShareStopped', address: addressA });
        for (const page of [b, c]) {
          await waitForEvent(page, { event: 'screenShareStopped', address: addressA });
          const after = await page.evaluate((address) => {
            const p = window.T.room.remoteParticipants.find((r) => r.address === address);
            return { screen: p.screenStream, videos: document.querySelectorAll('video[data-convene-screen]').length };
          }, addressA);
          assert.deepEqual(after, { screen: null, videos: 0 });
        }
        // Sharing again, then leaving: the share ends with the participant, before it leaves.
        await a.evaluate(() => window.T.room.startScreenShare({ video: { width: 320, height: 180, frameRate: 5 } }));
        const shares = (page, event) => page.evaluate(([e, address]) => window.T.events
          .filter((x) => x.event === e && x.address === address).length, [event, addressA]);
        await waitUntil(async () => (await shares(b, 'screenShareStarted')) === 2, 'the second share at B');
        await a.evaluate(() => window.T.room.leave());
        await waitForEvent(b, { event: 'participantLeft', address: addressA });
        const order = await b.evaluate((address) => window.T.events
          .filter((x) => x.address === address && ['screenShareStopped', 'participantLeft'].includes(x.event))
          .map((x) => x.event), addressA);
        assert.deepEqual(order, ['screenShareStopped', 'screenShareStopped', 'participantLeft']);
      } finally {
        await Promise.all(pages.map((p) => p.context().close()));
      }
    });
  });
}

describe('autoplay', () => {
  test('audio held back by the autoplay policy: audioBlocked, then startAudio() from a click', async () => {
    // A browser whose pages may not play audio before a user gesture. The receiving page does
    // everything from its own script: Playwright's evaluate counts as a user gesture.
    // (Chromium allows audio on pages that capture camera or microphone: this one does not.)
    const strict = await launchBrowser({ extraArgs: ['--autoplay-policy=document-user-activation-required'] });
    const room = await createRoom(server.url, { name: 'autoplay' });
    const sender = await openPage(browser, server.url);
    let app = null;
    try {
      const joined = await sender.evaluate((token) => window.T.join(token, 'sender'), room.token);
      assert.ok(joined.address, JSON.stringify(joined));
      const context = await strict.newContext();
      const page = await context.newPage();
      const logged = [];
      page.on('console', (m) => logged.push(m.text()));
      // An application's page on another loopback origin (a secure context), importing the SDK
      // from the service.
      app = await servePage(`<!doctype html><button id="start">Start audio</button><div id="videos"></div>
<script type="module">
  import { joinRoom } from '${server.url}/sdk/v1/convene.js';
  // A canvas as its camera: Chromium lets a page that captures camera or microphone play
  // audio without a gesture, so this one captures neither.
  const canvas = document.createElement('canvas');
  canvas.getContext('2d').fillRect(0, 0, 10, 10);
  const stream = canvas.captureStream(5);
  const room = await joinRoom(${JSON.stringify(room.token)}, { name: 'listener', mediaStream: stream });
  window.room = room;
  const videos = document.querySelector('#videos');
  for (const p of room.remoteParticipants) p.attach(videos);
  room.on('participantJoined', (p) => p.attach(videos));
  room.on('audioBlocked', () => console.log('audioBlocked'));
  room.on('remoteStream', (p) => console.log('remoteStream ' + p.address));
  document.querySelector('#start').onclick = async () => console.log('startAudio ' + await room.startAudio());
</script>`, server.url);
      const blocked = page.waitForEvent('console', { predicate: (m) => m.text() === 'audioBlocked', timeout: 30000 });
      page.on('pageerror', (e) => logged.push(`pageerror: ${e.message}`));
      await page.goto(app.url);
      await blocked.catch((e) => {
        throw new Error(`${e.message}; the page said:\n${logged.join('\n')}`);
      });
      // Meanwhile the video plays, muted.
      await page.waitForFunction(() => {
        const v = document.querySelector('video[data-convene]');
        return v && v.muted && !v.paused && window.room.audioBlocked;
      });
      const started = page.waitForEvent('console', { predicate: (m) => m.text().startsWith('startAudio'), timeout: 30000 });
      await page.click('#start');
      assert.equal((await started).text(), 'startAudio true', logged.join('\n'));
      const state = await page.evaluate(() => {
        const v = document.querySelector('video[data-convene]');
        return { muted: v.muted, paused: v.paused, blocked: window.room.audioBlocked };
      });
      assert.deepEqual(state, { muted: false, paused: false, blocked: false });
      assert.equal(logged.filter((t) => t === 'audioBlocked').length, 1, logged.join('\n'));
    } finally {
      await sender.context().close();
      await strict.close();
      await app?.close();
    }
  });
});
