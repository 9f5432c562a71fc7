// The admin page (/admin) in Chromium, against the real binary: sign in, create a room
// through the page, watch two participants join live, remove one, see an upgrade, delete
// the room. Participants are plain WebSocket clients of the signaling endpoint, run in a
// page of the service. Leaves a screenshot in tests/artifacts/admin.png.
//
// Run by tests/admin_page.rs (cargo test), inside a network namespace with only loopback.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { API_KEY, launchBrowser, startServer } from '../harness.mjs';

const ARTIFACTS = fileURLToPath(new URL('../../../tests/artifacts/', import.meta.url));

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

async function rest(url, method, path, body) {
  const init = { method, headers: { 'x-vcs-token': API_KEY } };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(`${url}${path}`, init);
  return { status: res.status, body: await res.json() };
}

/** Opens the admin page in a fresh context and signs in. */
async function signedIn(url, key = API_KEY) {
  const context = await browser.newContext();
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: url });
  const page = await context.newPage();
  page.on('pageerror', (e) => console.log(`[admin page] ${e.message}`));
  page.on('dialog', (dialog) => dialog.accept());
  await page.goto(`${url}/admin`);
  await page.fill('#signin input[name=key]', key);
  await page.click('#signin button');
  return page;
}

async function waitLive(page) {
  await page.waitForFunction(() => document.querySelector('#live').textContent === 'live', null, { timeout: 5000 });
}

/**
 * A page of the service that holds raw signaling WebSockets, one per participant:
 * `join(name)` resolves to the `joined` message; each socket records what it receives.
 */
async function participantsPage(url) {
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${url}/healthz`);
  await page.evaluate(() => {
    window.P = {};
    window.join = (token, name) => new Promise((resolve, reject) => {
      const ws = new WebSocket(new URL('/api/realtime/signaling', location.href).href.replace(/^http/, 'ws'));
      const p = { ws, messages: [], close: null };
      window.P[name] = p;
      ws.onopen = () => ws.send(JSON.stringify({ type: 'join', token, name }));
      ws.onmessage = (e) => {
        const m = JSON.parse(e.data);
        p.messages.push(m);
        if (m.type === 'joined') resolve(m);
        if (m.type === 'error') reject(new Error(JSON.stringify(m)));
      };
      ws.onclose = (e) => { p.close = e.code; };
    });
  });
  return {
    page,
    join: (token, name) => page.evaluate(([t, n]) => window.join(t, n), [token, name]),
    messages: (name) => page.evaluate((n) => window.P[n].messages, name),
    send: (name, message) => page.evaluate(([n, m]) => window.P[n].ws.send(JSON.stringify(m)), [name, message]),
    waitFor: (name, match, timeout = 5000) => page.waitForFunction(
      ([n, m]) => window.P[n].messages.some((x) => Object.entries(m).every(([k, v]) => x[k] === v)),
      [name, match],
      { timeout },
    ),
    waitClosed: (name, code) => page.waitForFunction(([n, c]) => window.P[n].close === c, [name, code], { timeout: 5000 }),
  };
}

const rowText = (page, name) => page.locator('#rooms tr', { hasText: name }).innerText();

test('an operator follows a room from creation to deletion', async () => {
  const page = await signedIn(server.url);
  await waitLive(page);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('convene-admin-key')), API_KEY);
  await page.waitForFunction(() => document.querySelector('#rooms').textContent.includes('No rooms'));

  // A REST error shows its published description.
  await page.fill('#create input[name=autoUpgradeParticipantCount]', '1');
  await page.click('#create button');
  const refused = await rest(server.url, 'POST', '/api/realtime/room', { conferenceType: 'MESH', autoUpgradeParticipantCount: '1' });
  assert.equal(refused.status, 400);
  await page.waitForFunction((text) => document.querySelector('#error span').textContent === text,
    refused.body.description.join(' '), { timeout: 5000 });
  assert.equal(await page.isVisible('#error'), true);

  // Create a room through the page: a demo join link, and the row from the event stream.
  await page.fill('#create input[name=name]', 'Ops room');
  await page.fill('#create input[name=description]', 'Weekly operations');
  await page.fill('#create input[name=autoUpgradeParticipantCount]', '3');
  await page.click('#create button');
  await page.waitForSelector('#created:not([hidden])');
  assert.equal(await page.isVisible('#error'), false, 'the error went with the next success');
  const link = await page.inputValue('#link-text');
  assert.equal(await page.getAttribute('#link', 'href'), link);
  const linkUrl = new URL(link);
  assert.equal(`${linkUrl.origin}${linkUrl.pathname}`, `${server.url}/demo`);
  const token = linkUrl.searchParams.get('token');
  await page.click('#copy');
  await page.waitForFunction(() => document.querySelector('#copy').textContent === 'Copied', null, { timeout: 1000 });
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), link);
  const row = page.locator('#rooms tr', { hasText: 'Ops room' });
  await row.waitFor({ timeout: 1000 });
  const roomId = await row.getAttribute('data-id');
  const room = await rest(server.url, 'GET', `/api/realtime/room/${roomId}`);
  assert.equal(room.status, 200);
  assert.equal(room.body.name, 'Ops room');
  assert.equal(room.body.description, 'Weekly operations');
  assert.equal(room.body.autoUpgradeParticipantCount, 3);
  assert.match(await rowText(page, 'Ops room'), /Ops room\s+Weekly operations\s+MESH\s+0 \/ 7\s+\d+s\s+23h 59m/);
  assert.match(await page.textContent('#log'), /Room Ops room created/);

  // The age ticks without any event.
  const age = () => row.locator('td.age').innerText();
  const firstAge = await age();
  await page.waitForFunction(([id, before]) => document.querySelector(`tr[data-id="${id}"] td.age`).textContent !== before,
    [roomId, firstAge], { timeout: 3000 });

  // Two participants join; each shows within a second of its join.
  const people = await participantsPage(server.url);
  await row.click();
  await page.waitForSelector('#detail:not([hidden])');
  const joined = {};
  for (const [name, count] of [['Ann', 1], ['Bob', 2]]) {
    joined[name] = await people.join(token, name);
    await page.waitForFunction(([id, n]) => document.querySelector(`tr[data-id="${id}"] td.count`).textContent === `${n} / 7`,
      [roomId, count], { timeout: 1000 });
    await page.waitForSelector(`#participants tr[data-address="${joined[name].address}"]`, { timeout: 1000 });
  }
  const listed = await page.$$eval('#participants tr', (trs) => trs.map((tr) => tr.cells[0].textContent));
  assert.deepEqual(listed, ['Ann', 'Bob']);
  assert.match(await page.textContent('#log'), /Bob joined Ops room/);

  // A participant's media state follows it live.
  await people.send('Ann', { type: 'mediaState', audio: false, video: false });
  const annRow = page.locator(`#participants tr[data-address="${joined.Ann.address}"]`);
  await page.waitForFunction((address) => {
    const cells = document.querySelector(`#participants tr[data-address="${address}"]`).cells;
    return cells[2].textContent === 'off' && cells[3].textContent === 'off';
  }, joined.Ann.address, { timeout: 1000 });
  // A MESH room: no media connection to the server (the Media column says —).
  assert.match(await annRow.innerText(), /^Ann\s+PA-\S+\s+off\s+off\s+—\s+\d+s ago\s+Remove$/);

  // Remove Bob through the page: he is told and closed with 4013, Ann hears of it.
  await page.locator('#participants tr', { hasText: 'Bob' }).locator('button').click();
  await people.waitFor('Bob', { type: 'roomClosed', reason: 'kicked' });
  await people.waitClosed('Bob', 4013);
  await people.waitFor('Ann', { type: 'participantLeft', address: joined.Bob.address, reason: 'kicked' });
  await page.waitForFunction(() => document.querySelectorAll('#participants tr').length === 1, null, { timeout: 1000 });
  assert.match(await rowText(page, 'Ops room'), /1 \/ 7/);
  assert.match(await page.textContent('#log'), /Bob was removed from Ops room/);
  const left = await rest(server.url, 'GET', `/api/realtime/room/${roomId}/participants`);
  assert.deepEqual(left.body.data.map((p) => p.address), [joined.Ann.address]);

  // Two more join: the third upgrades the room to SFU, flagged as it happens.
  await people.join(token, 'Cy');
  // Dee joins with a participant token: the page shows her identity under her name.
  const issued = await rest(server.url, 'POST', `/api/realtime/room/${roomId}/token`, { identity: 'dee@example.com', name: 'Dee' });
  assert.equal(issued.status, 200);
  const dee = await people.join(issued.body.token, 'ignored: the token names her');
  const deeRow = page.locator('#participants tr[data-identity="dee@example.com"]');
  await deeRow.waitFor({ timeout: 1000 });
  assert.equal(await deeRow.getAttribute('data-address'), dee.address);
  assert.equal(await deeRow.locator('td.name small.identity').textContent(), 'dee@example.com');
  assert.match(await deeRow.innerText(), /^Dee\s+dee@example\.com\s+PA-/);
  // Those who joined with the room token have none.
  assert.equal(await page.locator('#participants tr small.identity').count(), 1);
  await page.waitForFunction((id) => document.querySelector(`tr[data-id="${id}"] td.type`).textContent === 'SFU',
    roomId, { timeout: 1000 });
  assert.match(await rowText(page, 'Ops room'), /SFU\s+3 \/ 100/);
  assert.match(await page.textContent('#log'), /Room Ops room upgraded to SFU \(100 seats\)/);
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: `${ARTIFACTS}admin.png`, fullPage: true });

  // Delete the room through the page: everyone is told, the row goes, the log says so.
  await row.locator('button[data-action=delete]').click();
  await people.waitFor('Ann', { type: 'roomClosed', reason: 'deleted' });
  await page.waitForFunction(() => !document.querySelector('#rooms').textContent.includes('Ops room'), null, { timeout: 1000 });
  assert.equal(await page.isVisible('#detail'), false);
  assert.match(await page.textContent('#log'), /Room Ops room deleted, 3 participants disconnected/);
  assert.equal((await rest(server.url, 'GET', `/api/realtime/room/${roomId}`)).status, 404);
  await people.page.context().close();

  // The key stays for the tab: a reload signs in again; signing out forgets it.
  await page.reload();
  await waitLive(page);
  await page.click('#signout');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('convene-admin-key')), null);
  assert.equal(await page.isVisible('#signin'), true);
  await page.context().close();
});

test('rooms made elsewhere appear, and expiring rooms are flagged as they close', async () => {
  const short = await startServer({ CONVENE_ROOM_TTL_SECONDS: '8' });
  try {
    const page = await signedIn(short.url);
    await waitLive(page);
    const created = await rest(short.url, 'POST', '/api/realtime/room', { name: 'Brief' });
    assert.equal(created.status, 200);
    const id = created.body.room.id;
    await page.waitForSelector(`#rooms tr[data-id="${id}"]`, { timeout: 5000 });
    assert.match(await page.locator(`#rooms tr[data-id="${id}"] td.ttl`).innerText(), /^[0-8]s$/);
    // Rows are selectable from the keyboard too.
    await page.focus(`#rooms tr[data-id="${id}"]`);
    await page.keyboard.press('Enter');
    await page.waitForSelector('#detail:not([hidden])', { timeout: 5000 });
    assert.equal(await page.textContent('#detail-name'), 'Brief');
    await page.waitForFunction((rid) => !document.querySelector(`#rooms tr[data-id="${rid}"]`), id, { timeout: 15000 });
    assert.match(await page.textContent('#log'), /Room Brief expired/);
    assert.equal(await page.isVisible('#detail'), false, 'the expired room\'s participants went with it');
    await page.context().close();
  } finally {
    await short.stop();
  }
});

test('ages and TTLs count from the service\'s clock, not the browser\'s', async () => {
  const { id } = (await rest(server.url, 'POST', '/api/realtime/room', { name: 'Clock' })).body.room;
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.clock.install({ time: Date.now() + 3600 * 1000 }); // this browser runs an hour ahead
  await page.goto(`${server.url}/admin`);
  await page.fill('#signin input[name=key]', API_KEY);
  await page.click('#signin button');
  await waitLive(page);
  const row = page.locator(`#rooms tr[data-id="${id}"]`);
  await page.waitForFunction((rid) => /^[0-9]s$/.test(document.querySelector(`tr[data-id="${rid}"] td.age`).textContent),
    id, { timeout: 5000 });
  // The service's time is known here to about a second (its Date header), so a room this young
  // shows its whole TTL or a second less; an uncorrected clock would show 22h 59m.
  assert.match(await row.locator('td.ttl').innerText(), /^(1d 0h|23h 59m)$/);
  assert.equal((await rest(server.url, 'DELETE', `/api/realtime/room?id=${id}`)).status, 200);
  await context.close();
});

test('after a drop the page resumes from the last event it saw', async () => {
  const context = await browser.newContext();
  // Records the page's sockets; while `__hold` is set, new ones go nowhere (and fail).
  await context.addInitScript(() => {
    const Native = window.WebSocket;
    window.__sockets = [];
    window.__hold = false;
    window.WebSocket = class extends Native {
      constructor(url, ...rest) {
        super(window.__hold ? 'ws://127.0.0.1:1/' : url, ...rest);
        this.sent = [];
        this.received = [];
        this.addEventListener('message', (e) => {
          const { type, seq } = JSON.parse(e.data);
          this.received.push({ type, seq });
        });
        window.__sockets.push(this);
      }
      send(data) {
        this.sent.push(JSON.parse(data));
        super.send(data);
      }
    };
  });
  const page = await context.newPage();
  await page.goto(`${server.url}/admin`);
  await page.fill('#signin input[name=key]', API_KEY);
  await page.click('#signin button');
  await waitLive(page);
  const first = (await rest(server.url, 'POST', '/api/realtime/room', { name: 'First' })).body.room;
  await page.waitForSelector(`#rooms tr[data-id="${first.id}"]`, { timeout: 1000 });
  const before = await page.evaluate(() => window.__sockets[0].received);

  // The connection drops; while the page cannot reach the service, things happen.
  await page.evaluate(() => { window.__hold = true; window.__sockets[0].close(); });
  await page.waitForFunction(() => document.querySelector('#live').textContent !== 'live');
  const second = (await rest(server.url, 'POST', '/api/realtime/room', { name: 'Second' })).body.room;
  assert.equal((await rest(server.url, 'DELETE', `/api/realtime/room?id=${first.id}`)).status, 200);
  // After three failed attempts in a row the page says so.
  await page.waitForFunction(() => document.querySelector('#error span').textContent.includes('cannot be opened'),
    null, { timeout: 10000 });
  await page.evaluate(() => { window.__hold = false; });

  // It reconnects with lastSeq and gets exactly what it missed: no snapshot, no repeat.
  await waitLive(page);
  assert.equal(await page.isVisible('#error'), false, 'the notice went when the stream came back');
  await page.waitForSelector(`#rooms tr[data-id="${second.id}"]`, { timeout: 1000 });
  await page.waitForFunction((id) => !document.querySelector(`#rooms tr[data-id="${id}"]`), first.id, { timeout: 1000 });
  const sockets = await page.evaluate(() => window.__sockets.map((s) => ({ url: s.url, sent: s.sent, received: s.received })));
  const resumed = sockets.at(-1);
  assert.deepEqual(before.map((m) => m.type), ['snapshot', 'roomCreated']);
  const seq = before[1].seq;
  assert.equal(seq, before[0].seq + 1);
  assert.deepEqual(sockets[0].sent, [{ type: 'auth', apiKey: API_KEY }]);
  assert.deepEqual(resumed.sent, [{ type: 'auth', apiKey: API_KEY, lastSeq: seq }]);
  assert.deepEqual(resumed.received, [{ type: 'roomCreated', seq: seq + 1 }, { type: 'roomDeleted', seq: seq + 2 }]);
  const log = await page.textContent('#log');
  assert.equal(log.match(/Room First created/g).length, 1);
  assert.equal(log.match(/Room Second created/g).length, 1);
  assert.match(log, /Room First deleted/);
  await context.close();
});

test('a stream refused for its origin is explained', async () => {
  // A service that allows only another origin refuses this page's stream with 403.
  const strict = await startServer({ CONVENE_ADMIN_ALLOWED_ORIGINS: 'https://ops.example' });
  try {
    const page = await signedIn(strict.url);
    await page.waitForFunction(() => document.querySelector('#error span').textContent.includes('cannot be opened'),
      null, { timeout: 10000 });
    assert.match(await page.textContent('#error span'), /admin_allowed_origins/);
    assert.match(await page.textContent('#live'), /^offline, retrying in \ds$/);
    await page.context().close();
  } finally {
    await strict.stop();
  }
});

test('a wrong key is refused and the page says why', async () => {
  const page = await signedIn(server.url, 'wrong');
  await page.waitForFunction(() => !document.querySelector('#signin').hidden, null, { timeout: 5000 });
  assert.equal(await page.textContent('#signin-note'), 'That API key was refused: The token ::= [wrong] is invalid.');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('convene-admin-key')), null);
  assert.equal(await page.isVisible('#app'), false);
  await page.context().close();
});
