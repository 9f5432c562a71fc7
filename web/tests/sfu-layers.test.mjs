// Real-browser tests of the SFU at conference scale (docs/sfu.md, "Simulcast, layers and
// active speakers, as the SDK sees them"): six pages in an SFU room, each publishing its camera
// in three simulcast layers. One page shows one remote video big, one as a thumbnail and hides
// a third: it must get the thumbnail in a lower layer than the big one, and no video of the
// hidden one (while its audio still comes). Then the pages play a tone in turn and everyone's
// `activeSpeakers` must follow.
//
// The cameras are small (320x180 at 10 fps, so that six pages fit on two cores): Chrome sends
// three layers of it only with the field trial WebRTC-LegacySimulcastLayerLimit/Disabled/
// and `simulcast: true`. Audio is WebAudio (a tone through a gain node, 0 when silent), not
// the fake microphone, which beeps.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  API_KEY, createRoom, launchBrowser, openPage, startServer, waitForMedia, waitUntil,
} from './harness.mjs';

const PAGES = 6;

let browser;
let server;
before(async () => {
  browser = await launchBrowser({
    extraArgs: ['--force-fieldtrials=WebRTC-LegacySimulcastLayerLimit/Disabled/', '--autoplay-policy=no-user-gesture-required'],
  });
  server = await startServer();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

/** A page joined with a 320x180 camera in simulcast and a WebAudio tone, silent until
 * `T.tone(true)`. */
async function join(room, name) {
  const page = await openPage(browser, server.url);
  const joined = await page.evaluate(async ([token, n]) => {
    const T = window.T;
    const audio = new AudioContext();
    await audio.resume();
    const oscillator = audio.createOscillator();
    oscillator.frequency.value = 440;
    const gain = audio.createGain();
    gain.gain.value = 0;
    const destination = audio.createMediaStreamDestination();
    oscillator.connect(gain).connect(destination);
    oscillator.start();
    // Answers when it changed (wall clock, comparable across the pages of one machine).
    T.tone = (on) => {
      gain.gain.value = on ? 0.5 : 0;
      return { at: Date.now(), state: audio.state };
    };
    const camera = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 180, frameRate: 10 } });
    const stream = new MediaStream([...destination.stream.getAudioTracks(), ...camera.getVideoTracks()]);
    const result = await T.join(token, n, { mediaStream: stream, simulcast: true });
    // The last layers the server asked of this page's camera (null: none yet, so all), and
    // when each request came (wall clock).
    T.layers = null;
    T.layerLog = [];
    const onSignal = T.room._onSignal.bind(T.room);
    T.room._onSignal = (from, data) => {
      if (from === 'sfu' && data?.layers) {
        T.layers = data.layers.active;
        T.layerLog.push({ at: Date.now(), active: data.layers.active });
      }
      onSignal(from, data);
    };
    // The speakers as each change came, with the wall clock.
    T.speakers = [];
    T.room?.on('activeSpeakersChanged', (list) => T.speakers.push({ at: Date.now(), list: list.map((p) => p.address) }));
    return result;
  }, [room.token, name]);
  assert.ok(joined.address, JSON.stringify(joined));
  assert.equal(joined.conferenceType, 'SFU');
  return { page, address: joined.address };
}

/** What `page` receives of `address`, from the SDK's participant.getStats(). */
function statsOf(page, address) {
  return page.evaluate(async (a) => {
    const p = window.T.room.remoteParticipants.find((x) => x.address === a);
    const { via, audio, video } = await p.getStats();
    return {
      via, width: video.frameWidth, height: video.frameHeight, frames: video.framesDecoded,
      videoPackets: video.packetsReceived, audioPackets: audio.packetsReceived,
    };
  }, address);
}

/** The page's `room.activeSpeakers`, as addresses. */
function speakersOf(page) {
  return page.evaluate(() => window.T.room.activeSpeakers.map((p) => p.address));
}

describe('an SFU room of 6 pages with simulcast', () => {
  const pages = [];
  const addresses = [];
  let room;
  after(async () => {
    await Promise.all(pages.map((p) => p.context().close()));
  });

  test('every page gets every other\'s media, and publishes its camera in layers q, h, f', async () => {
    room = await createRoom(server.url, { name: 'layers', conferenceType: 'SFU' });
    for (let i = 0; i < PAGES; i++) {
      const { page, address } = await join(room, `L${i}`);
      pages.push(page);
      addresses.push(address);
    }
    for (let i = 0; i < PAGES; i++) {
      await waitForMedia(pages[i], addresses.filter((_, j) => j !== i), { via: 'sfu', timeout: 45000 });
    }
    // The camera is one m-line with three encodings, low to high; the answer kept them all.
    const rids = await pages[0].evaluate(() => window.T.room._sfuConnection().getSenders()
      .find((s) => s.track?.kind === 'video').getParameters().encodings.map((e) => e.rid));
    assert.deepEqual(rids, ['q', 'h', 'f']);
    const sdp = await pages[0].evaluate(() => window.T.room._sfuConnection().remoteDescription.sdp);
    assert.match(sdp, /a=simulcast:recv q;h;f/);
  });

  test('a thumbnail gets a lower layer than a big video; a hidden video gets none, its audio still comes', async () => {
    assert.equal(pages.length, PAGES, 'needs the previous test');
    const [big, thumb, hidden] = addresses.slice(1, 4);
    // Page 0 shows L1 at 640x360, L2 at 40x22 and L3 in an element with display: none; L4 and
    // L5 are not attached (size unknown: the server sends its best). What it tells sfu is kept.
    await pages[0].evaluate(([b, t, h]) => {
      const room = window.T.room;
      const send = room._send.bind(room);
      window.T.views = [];
      room._send = (frame) => {
        if (frame.type === 'signal' && frame.to === 'sfu' && frame.data.views) window.T.views.push(frame.data.views);
        send(frame);
      };
      const box = (id, css) => {
        const el = document.createElement('div');
        el.id = id;
        el.style.cssText = `position: fixed; z-index: 10; background: #000; ${css}`;
        document.body.append(el);
        return el;
      };
      const show = (address, el) => {
        const video = window.T.room.remoteParticipants.find((p) => p.address === address).attach(el);
        video.style.cssText = 'display: block; width: 100%; height: 100%;';
      };
      show(b, box('big', 'left: 0; top: 0; width: 640px; height: 360px;'));
      show(t, box('thumb', 'left: 650px; top: 0; width: 40px; height: 22px;'));
      show(h, box('hidden', 'left: 700px; top: 0; width: 320px; height: 180px; display: none;'));
    }, [big, thumb, hidden]);
    const started = Date.now();
    // The three sizes in device pixels (changes are gathered for 200 ms: one message).
    const expected = { [big]: [640, 360], [thumb]: [40, 22], [hidden]: [0, 0] };
    const { views } = await waitUntil(async () => {
      const sent = await pages[0].evaluate(() => window.T.views);
      const byAddress = Object.fromEntries(sent.flat().map((v) => [v.address, [v.width, v.height]]));
      return { done: JSON.stringify(byAddress) === JSON.stringify(expected), views: sent };
    }, 'views sent to sfu', { timeout: 5000, interval: 100 });
    console.log(`# views sent by page 0 in ${views.length} message(s)`);

    // The thumbnail in a lower layer than the big one (at most half as wide: layers are a
    // quarter, half and full size; under CPU load Chrome may scale them all down), both still
    // decoding, for 2 s.
    let steady = null;
    const sizes = await waitUntil(async () => {
      const b = await statsOf(pages[0], big);
      const t = await statsOf(pages[0], thumb);
      const ok = t.width > 0 && t.width * 2 <= b.width;
      if (!ok) steady = null;
      else if (!steady) steady = { b, t, at: Date.now() };
      const done = ok && Date.now() - steady.at >= 2000 && b.frames > steady.b.frames && t.frames > steady.t.frames;
      return { done, big: b, thumb: t };
    }, 'the thumbnail in a lower layer than the big video', { timeout: 30000, interval: 250 });
    console.log(`# page 0 receives the big video (640x360 CSS px) at ${sizes.big.width}x${sizes.big.height}, `
      + `the thumbnail (40x22) at ${sizes.thumb.width}x${sizes.thumb.height} `
      + `(so ${steady.at - started} ms after the views changed, and for 2 s after)`);
    // L2's camera sends q (page 0's thumbnail) as the server asked, and exactly the layers it
    // asked for (typically q and f: the others show L2 at an unknown size, nobody uses h).
    const layers = await waitUntil(async () => {
      const { now, wish } = await pages[2].evaluate(() => {
        const { T } = window;
        const encodings = T.room._sfuConnection().getSenders().find((s) => s.track?.kind === 'video').getParameters().encodings;
        return {
          now: encodings.map((e) => `${e.rid}:${e.active}`),
          wish: encodings.map((e) => `${e.rid}:${T.layers?.includes(e.rid) ?? true}`),
        };
      });
      return { done: now[0] === 'q:true' && now.join(' ') === wish.join(' '), now, wish };
    }, 'L2 sending q, and the layers the server asked for', { timeout: 5000, interval: 100 });
    const asked = (await pages[2].evaluate(() => window.T.layerLog)).find((l) => l.at >= started && l.active.includes('q'));
    console.log(`# L2's layers: ${layers.now.join(' ')} (the server asked L2 for q ${asked ? asked.at - started : '?'} ms after the views changed)`);

    // The hidden one: no new video packets or frames for 1.5 s, while its audio goes on.
    let since = null;
    const quiet = await waitUntil(async () => {
      const h = await statsOf(pages[0], hidden);
      if (!since || h.videoPackets !== since.videoPackets || h.frames !== since.frames) since = { ...h, at: Date.now() };
      return { done: Date.now() - since.at >= 1500 && h.audioPackets > since.audioPackets, hidden: h };
    }, 'no more video of the hidden participant while its audio goes on', { timeout: 15000, interval: 250 });
    console.log(`# the hidden video stopped at ${quiet.hidden.frames} frames; audio packets still rising (${quiet.hidden.audioPackets})`);

    // Page 1 shows nothing (sizes unknown): it gets L2 in a higher layer than page 0's
    // thumbnail (the same publisher at the same time, so whatever Chrome's CPU adaptation
    // does), and L3's video.
    const before = await statsOf(pages[1], hidden);
    const other = await waitUntil(async () => {
      const t = await statsOf(pages[1], thumb);
      const h = await statsOf(pages[1], hidden);
      return { done: t.width >= 2 * sizes.thumb.width && h.frames > before.frames + 5, thumb: t, hidden: h };
    }, 'page 1 to get L2 in a higher layer, and L3\'s video', { timeout: 15000, interval: 250 });
    console.log(`# page 1, which shows nothing, receives L2 at ${other.thumb.width}x${other.thumb.height} `
      + `(page 0's thumbnail: ${(await statsOf(pages[0], thumb)).width} wide)`);

    // Shown again, the hidden one's video comes back; the thumbnail made big goes up a layer.
    await pages[0].evaluate(() => {
      document.getElementById('hidden').style.display = 'block';
      Object.assign(document.getElementById('thumb').style, { top: '370px', left: '0', width: '640px', height: '360px' });
    });
    const stopped = await statsOf(pages[0], hidden);
    const back = await waitUntil(async () => {
      const h = await statsOf(pages[0], hidden);
      const t = await statsOf(pages[0], thumb);
      return { done: h.frames > stopped.frames + 5 && t.width >= 2 * sizes.thumb.width, hidden: h, thumb: t };
    }, 'the hidden video back and the enlarged thumbnail in a higher layer', { timeout: 15000, interval: 250 });
    console.log(`# shown again: L3 at ${back.hidden.width}x${back.hidden.height}, the enlarged thumbnail at ${back.thumb.width}x${back.thumb.height}`);
    // Only the changes went to sfu after that.
    const later = (await pages[0].evaluate(() => window.T.views)).slice(views.length).flat();
    assert.deepEqual(later.map((v) => [v.address, v.width, v.height]).sort(), [[hidden, 320, 180], [thumb, 640, 360]].sort());
  });

  test('camera off deactivates every layer sent to sfu; on again restores the server\'s choice', async () => {
    assert.equal(pages.length, PAGES, 'needs the previous tests');
    // The encodings of L5's camera, and the layers the server last asked of it (all before it
    // asked): the SDK's wish, which the server may change any time.
    const encodings = () => pages[5].evaluate(() => {
      const { T } = window;
      const now = T.room._sfuConnection().getSenders().find((s) => s.track?.kind === 'video').getParameters().encodings;
      return { now: now.map((e) => `${e.rid}:${e.active}`), wish: now.map((e) => `${e.rid}:${T.layers?.includes(e.rid) ?? true}`) };
    });
    console.log(`# L5's layers: ${(await encodings()).now.join(' ')}`);
    assert.equal(await pages[5].evaluate(() => window.T.room.toggleVideo()), false);
    await waitUntil(async () => {
      const { now } = await encodings();
      return { done: now.every((e) => e.endsWith(':false')), now };
    }, 'every encoding of L5 off', { timeout: 5000, interval: 100 });
    // Page 0 gets no more of its video.
    let since = null;
    await waitUntil(async () => {
      const v = await statsOf(pages[0], addresses[5]);
      if (!since || v.videoPackets !== since.videoPackets) since = { ...v, at: Date.now() };
      return { done: Date.now() - since.at >= 1500 && v.audioPackets > since.audioPackets, v };
    }, 'no more video of L5', { timeout: 10000, interval: 250 });
    assert.equal(await pages[5].evaluate(() => window.T.room.toggleVideo()), true);
    await waitUntil(async () => {
      const { now, wish } = await encodings();
      return { done: JSON.stringify(now) === JSON.stringify(wish), now, wish };
    }, 'L5\'s layers as the server wants them', { timeout: 5000, interval: 100 });
    const stopped = await statsOf(pages[0], addresses[5]);
    await waitUntil(async () => {
      const v = await statsOf(pages[0], addresses[5]);
      return { done: v.frames > stopped.frames + 5, v };
    }, 'L5\'s video back at page 0', { timeout: 10000, interval: 250 });
  });

  test('active speakers follow who plays a tone', async () => {
    assert.equal(pages.length, PAGES, 'needs the previous tests');
    // Nobody speaks yet.
    await waitUntil(async () => {
      const lists = await Promise.all(pages.map(speakersOf));
      return { done: lists.every((l) => l.length === 0), lists };
    }, 'no active speakers', { timeout: 10000 });

    /** Plays the tone on page `i` (and silences `silence`), then waits until every page's
     * `activeSpeakers` is exactly [its address]; answers how long after the tone each page
     * first listed it, and saw it alone. */
    const speak = async (i, silence) => {
      if (silence !== undefined) await pages[silence].evaluate(() => window.T.tone(false));
      const { at, state } = await pages[i].evaluate(() => window.T.tone(true));
      assert.equal(state, 'running', 'the page\'s AudioContext plays');
      await waitUntil(async () => {
        const lists = await Promise.all(pages.map(speakersOf));
        return { done: lists.every((l) => l.length === 1 && l[0] === addresses[i]), lists };
      }, `everyone's active speakers to be [L${i}]`, { timeout: 15000, interval: 100 });
      const seen = await Promise.all(pages.map((p) => p.evaluate(() => window.T.speakers)));
      const first = seen.map((changes) => changes.find((c) => c.at >= at && c.list.includes(addresses[i])).at - at);
      const alone = seen.map((changes) => changes.findLast((c) => c.list.length === 1 && c.list[0] === addresses[i]).at - at);
      return { first, alone };
    };

    const one = await speak(0);
    console.log(`# L0 plays a tone: listed by every page after ${Math.min(...one.first)}-${Math.max(...one.first)} ms`);
    const two = await speak(1, 0);
    console.log(`# L0 stops and L1 plays: L1 listed after ${Math.min(...two.first)}-${Math.max(...two.first)} ms, `
      + `alone (L0 dropped) after ${Math.min(...two.alone)}-${Math.max(...two.alone)} ms`);
    // The admin page marks the speaker in the room's participant list, and nobody else.
    const admin = await (await browser.newContext()).newPage();
    try {
      await admin.goto(`${server.url}/admin`);
      await admin.fill('#signin input[name=key]', API_KEY);
      await admin.click('#signin button');
      await admin.click(`#rooms tr[data-id="${room.id}"]`);
      await admin.waitForSelector(`#participants tr[data-address="${addresses[1]}"] .tag.speaking`, { timeout: 10000 });
      assert.equal(await admin.locator('#participants .tag.speaking').count(), 1);
    } finally {
      await admin.context().close();
    }
    // Silence: the list empties.
    await pages[1].evaluate(() => window.T.tone(false));
    await waitUntil(async () => {
      const lists = await Promise.all(pages.map(speakersOf));
      return { done: lists.every((l) => l.length === 0), lists };
    }, 'no active speakers after the tone stops', { timeout: 10000 });
  });
});
