// The demo chat page. Each tab is one device of one user: its state (identity, prekeys,
// sessions, outbox, inbox) lives in IndexedDB under a name of its own, so two tabs of one
// browser are two devices, and a reloaded tab is the same device again.
import { IndexedDbStore, createClient, describeBackend } from '/hermetic-client.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const user = params.get('user');
const deviceLabel = params.get('device') ?? '';

// Development only: the demo server mints a token for any name (see examples/demo.ts).
async function token(userId) {
  const res = await fetch(`/demo/token?user=${encodeURIComponent(userId)}`);
  const body = await res.json();
  if (!res.ok) throw new Error(body.error ?? `token: HTTP ${res.status}`);
  return body.token;
}

function item(list, parts, attrs = {}) {
  const li = document.createElement('li');
  for (const [cls, text] of parts) {
    const span = document.createElement('span');
    if (cls) span.className = cls;
    span.textContent = text; // never innerHTML: bodies and names come from other people
    li.append(span);
  }
  Object.assign(li.dataset, attrs);
  list.append(li);
  return li;
}

function showError(err) {
  $('error').textContent = err?.code ? `${err.code}: ${err.message}` : String(err?.message ?? err);
}

// Which implementation serves each primitive (createClient waited for libsodium to load).
function showCrypto() {
  const d = describeBackend();
  $('primitives').replaceChildren();
  for (const [primitive, impl] of Object.entries(d.primitives)) item($('primitives'), [['', primitive], ['', ': '], ['', impl]]);
  if (d.sodiumError) item($('primitives'), [['error', `libsodium unavailable: ${d.sodiumError}`]]);
}

const peers = new Map(); // user -> <li> of its safety number

async function showSafetyNumber(client, peer) {
  if (peer === client.userId) return;
  let li = peers.get(peer);
  if (!li) {
    li = item($('safety'), [['who', `${peer}: `]], { peer });
    li.append(document.createElement('code'));
    peers.set(peer, li);
  }
  try {
    li.querySelector('code').textContent = (await client.safetyNumber(peer)).toString();
  } catch (err) {
    li.querySelector('code').textContent = `(${err.code ?? err.message})`;
  }
}

function describeBody(m) {
  return m.kind === 'text' ? m.body : m.kind === 'json' ? JSON.stringify(m.body) : `(${m.body.length} bytes)`;
}

async function start() {
  $('login').hidden = true;
  $('chat').hidden = false;
  $('me').textContent = user;
  document.title = `${user} — hermetic demo chat`;

  const store = await IndexedDbStore.open(deviceLabel ? `demo-${user}-${deviceLabel}` : `demo-${user}`);
  const client = await createClient({ url: location.origin, userId: user, token: () => token(user), store });
  showCrypto();
  $('device').textContent = client.deviceId;

  const showState = (s) => {
    $('state').textContent = s.state + (s.state === 'offline' && s.reason ? ` (${s.reason})` : '');
    $('awaiting-link').hidden = s.state !== 'awaiting-link';
  };
  showState(client.state);
  client.on('state', showState);
  if (client.linkCode) $('link-code').querySelector('code').textContent = client.linkCode;
  $('fingerprint').textContent = client.fingerprint;

  client.on('message', (m) => {
    item($('messages'), [['who', `${m.from.userId} → you`], ['body', describeBody(m)]], { from: m.from.userId });
    void showSafetyNumber(client, m.from.userId);
    void m.done(); // shown: never offered again, also after a reload
  });
  client.on('flag', (f) => {
    const who = f.deviceId ? `${f.userId}/${f.deviceId}` : f.userId;
    item($('flags'), [['time', `${new Date(f.at).toLocaleTimeString()} `], ['code', f.code], ['', `${who}: ${f.detail}`]], { code: f.code, user: f.userId });
  });
  client.on('error', showError);

  $('send').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const form = ev.target;
    const to = form.to.value.trim();
    const body = form.body.value;
    $('error').textContent = '';
    try {
      await client.send(to, body);
      item($('messages'), [['who', `you → ${to}`], ['body', body]], { to }).className = 'mine';
      form.body.value = '';
      void showSafetyNumber(client, to);
    } catch (err) {
      showError(err);
    }
  });

  $('link-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const code = ev.target.code.value.trim();
    try {
      const linked = await client.linkDevice(code);
      $('link-result').textContent = `linked device ${linked.deviceId} (fingerprint ${linked.fingerprint}: check it on the new device)`;
      ev.target.code.value = '';
    } catch (err) {
      $('link-result').textContent = `${err.code ?? 'error'}: ${err.message}`;
    }
  });
}

if (!user) {
  $('login').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const next = new URLSearchParams({ user: ev.target.user.value.trim() });
    if (ev.target.device.value.trim()) next.set('device', ev.target.device.value.trim());
    location.search = next.toString();
  });
} else {
  // One tab per device: a second tab opening the same store would run two clients on it.
  navigator.locks.request(`hermetic-demo:${user}:${deviceLabel}`, { ifAvailable: true }, async (lock) => {
    if (!lock) {
      $('login').hidden = true;
      $('busy').hidden = false;
      return;
    }
    try {
      await start();
    } catch (err) {
      showError(err);
      return;
    }
    await new Promise(() => {}); // hold the lock while the tab lives
  });
}
