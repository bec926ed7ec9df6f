// The demo page: chat with presence, a shared document, a collaborative text and a live
// inventory, on the client library alone. Served by the local runner at `/`; as static files
// it takes `?url=wss://...&token=...` to reach a deployed stack.

import { LiveSync } from '../livesync.js';

const params = new URLSearchParams(location.search);
const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
const url = params.get('url') ?? `${scheme}://${location.host}`;
const me = params.get('user') ?? `guest-${Math.random().toString(36).slice(2, 6)}`;
const client = new LiveSync(url, { token: params.get('token') ?? undefined });
const $ = (id) => document.getElementById(id);

$('me').textContent = me;
client.addEventListener('state', (e) => {
  $('state').textContent = e.detail;
  $('state').dataset.state = e.detail;
});
// Where WebSockets are blocked the library goes on over HTTP: chat and events only.
client.addEventListener('transport', (e) => { $('transport').textContent = e.detail; });
$('drop').addEventListener('click', () => client.drop());

// Each room's last seq, as the library tracks it.
function showSeqs() {
  $('seqs').textContent = [...client.rooms.values()].map((r) => `${r.name}#${r.lastSeq ?? '-'}`).join('  ');
}

// ---- chat and presence
const lobby = client.room('lobby', { since: 0, user: me });
const presence = client.presence('lobby');
lobby.addEventListener('event', (e) => {
  const event = e.detail;
  showSeqs();
  if (event.kind !== undefined) return;
  const item = document.createElement('li');
  item.dataset.seq = event.seq;
  const from = document.createElement('span');
  from.className = 'from';
  from.textContent = event.data?.user ?? event.from;
  item.append(from, String(event.data?.text ?? JSON.stringify(event.data)));
  $('messages').append(item);
  $('messages').scrollTop = $('messages').scrollHeight;
});
presence.addEventListener('change', (e) => {
  $('presence').replaceChildren(...e.detail.map((m) => Object.assign(document.createElement('li'), { textContent: m.user })));
});
$('say').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = $('line').value.trim();
  if (!text) return;
  $('line').value = '';
  lobby.publish({ user: me, text }).catch((error) => alert(error.message));
});

// ---- a shared document: a poll whose votes never get lost, even when two pages vote at once
const board = client.room('board', { since: 0 });
const poll = client.doc('board', 'poll');
poll.addEventListener('change', (e) => {
  $('doc-version').textContent = e.detail.version;
  for (const choice of ['tea', 'coffee']) $(`votes-${choice}`).textContent = e.detail.value?.[choice] ?? 0;
  showSeqs();
});
poll.addEventListener('conflict', (e) => {
  $('doc-note').textContent = `Another vote came first (version ${e.detail.version}): yours was applied on top of it.`;
});
for (const button of document.querySelectorAll('.vote')) {
  button.addEventListener('click', () => {
    const choice = button.dataset.choice;
    poll.update((value) => ({ ...value, [choice]: (value?.[choice] ?? 0) + 1 })).catch((error) => alert(error.message));
  });
}

// ---- collaborative text
const notes = client.room('notes', { since: 0 });
const pad = client.text('notes', 'pad');
const area = $('pad');
pad.addEventListener('change', (e) => {
  if (area.value === e.detail) return;
  // Keep the caret where it was, counted from the end when the change came before it.
  const [start, end, before] = [area.selectionStart, area.selectionEnd, area.value];
  const fromEnd = before.length - end;
  area.value = e.detail;
  const caret = before.slice(0, start) === e.detail.slice(0, start) ? start : Math.max(0, e.detail.length - fromEnd);
  area.setSelectionRange(caret, caret + (end - start));
  showSeqs();
});
pad.addEventListener('error', (e) => { $('pad-note').textContent = `An edit was refused (${e.detail.code}); the text was reloaded.`; });
area.addEventListener('input', () => pad.edit(area.value));

// ---- inventory, sales as they happen, and the last end-of-day report
const shop = client.room('shop', { since: 0 });
const stock = client.stock('shop');
const LOW = 5;
function showLevels() {
  const rows = [...stock.levels.values()].sort((a, b) => a.sku.localeCompare(b.sku)).map((level) => {
    const row = document.createElement('tr');
    row.dataset.sku = level.sku;
    const sku = Object.assign(document.createElement('td'), { textContent: level.sku });
    const count = Object.assign(document.createElement('td'), { textContent: level.level, className: level.level < LOW ? 'low' : '' });
    count.dataset.level = level.level;
    const sell = Object.assign(document.createElement('button'), { textContent: 'sell 1' });
    sell.addEventListener('click', () => {
      stock.adjust(level.sku, -1).catch((error) => alert(error.code === 'insufficient_stock' ? `${level.sku} is sold out` : error.message));
    });
    const actions = document.createElement('td');
    actions.append(sell);
    row.append(sku, count, actions);
    return row;
  });
  $('levels').replaceChildren(...rows);
}
stock.addEventListener('change', showLevels);
shop.addEventListener('event', (e) => {
  const event = e.detail;
  showSeqs();
  if (event.kind === 'stock' && event.data.delta < 0) {
    const sale = document.createElement('li');
    sale.dataset.seq = event.seq;
    sale.textContent = `${-event.data.delta} × ${event.data.sku} sold (${event.data.level} left)`;
    $('sales').prepend(sale);
  }
});
$('add-sku').addEventListener('submit', (e) => {
  e.preventDefault();
  const sku = $('sku').value.trim();
  if (!sku) return;
  $('sku').value = '';
  stock.set(sku, 10).catch((error) => alert(error.message));
});

const reports = client.room('reports', { since: 0 });
reports.addEventListener('event', (e) => {
  const event = e.detail;
  if (event.kind !== 'report') return;
  const { date, generated_at: at, totals, restock } = event.data;
  $('report').textContent =
    `${date} (made ${at})\n${totals.events} events, ${totals.doc_versions} document versions, ` +
    `${totals.conflicts} conflicts, ${totals.units_sold} units sold\n` +
    `restock: ${restock?.map((r) => `${r.room}/${r.sku} (${r.level})`).join(', ') || 'nothing'}`;
});

// Once the rooms are joined, load the state the events do not carry from the start.
const ready = (async () => {
  await client.connect();
  await Promise.all([lobby.joined, board.joined, notes.joined, shop.joined, reports.joined]);
  if (client.transport === 'http') {
    $('pad-note').textContent = 'Over HTTP (WebSockets are blocked here): everything on this page is live and the chat can be written to; votes, the text and the stock need a WebSocket to be changed.';
    showSeqs();
    return;
  }
  await Promise.all([presence.load(), poll.get(), pad.load(), stock.load()]);
  area.value = pad.value;
  area.disabled = false;
  showSeqs();
})();

// For the browser test, and for a curious person in the console.
window.livesync = { client, ready, pad, poll, stock, me };
