// The demo page in a real browser (Debian's chromium, driven by playwright-core): two pages chat,
// vote on the same document, type in the same text and sell the same stock; then one page's
// socket is cut and the runner restarted while the other keeps working, and each page must show
// every event it missed, in order, and the same final text and stock. Screenshots go to
// target/browser-artifacts/.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startRunner, until } from '../testing/runner.js';

const artifacts = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'target', 'browser-artifacts');
const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';

let runner;
let browser;
before(async () => {
  mkdirSync(artifacts, { recursive: true });
  runner = await startRunner();
  browser = await chromium.launch({
    executablePath,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
});
after(async () => {
  await browser?.close();
  await runner?.dispose();
});

async function open(user) {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on('pageerror', (error) => { throw error; });
  await page.goto(`${runner.url.replace('ws://', 'http://')}/?user=${user}`);
  await page.waitForFunction(() => window.livesync !== undefined);
  await page.evaluate(() => window.livesync.ready);
  return page;
}

const texts = (page, selector) => page.locator(selector).allTextContents();
const connection = (page) => page.locator('#state').textContent();

async function say(page, line) {
  await page.fill('#line', line);
  await page.click('#say button');
}

test('two pages stay in sync, and a page that was cut off catches up in order', async () => {
  const [ann, bob] = [await open('ann'), await open('bob')];
  await until(async () => (await connection(ann)) === 'open' && (await connection(bob)) === 'open', 'both pages connected');

  // Presence and chat.
  await until(async () => (await texts(bob, '#presence li')).sort().join() === 'ann,bob', 'both present');
  await say(ann, 'hello from ann');
  await say(bob, 'hi ann');
  const chat = ['annhello from ann', 'bobhi ann'];
  for (const page of [ann, bob]) await until(async () => (await texts(page, '#messages li')).join('|') === chat.join('|'), 'the chat on both pages');

  // The shared document: both vote at once, no vote is lost.
  // (Two clicks on one page at once go through the page itself: the mouse can only be in one place.)
  const vote = (page, ...choices) => page.evaluate((cs) => { for (const c of cs) document.querySelector(`.vote[data-choice="${c}"]`).click(); }, choices);
  await Promise.all([vote(ann, 'tea'), vote(bob, 'tea', 'coffee')]);
  for (const page of [ann, bob]) {
    await until(async () => (await page.textContent('#votes-tea')) === '2' && (await page.textContent('#votes-coffee')) === '1', 'every vote on both pages');
  }

  // The text: both type at once.
  await ann.locator('#pad').pressSequentially('ann types here. ', { delay: 5 });
  await Promise.all([
    ann.locator('#pad').pressSequentially('more from ann. ', { delay: 7 }),
    bob.locator('#pad').pressSequentially('bob too! ', { delay: 9 }),
  ]);
  await until(async () => (await ann.inputValue('#pad')) === (await bob.inputValue('#pad')), 'one text on both pages');
  assert.match(await ann.inputValue('#pad'), /ann types here\./);

  // The stock: ann stocks mugs, both sell at once.
  await ann.fill('#sku', 'mug');
  await ann.click('#add-sku button');
  const sell = (page) => page.click('tr[data-sku="mug"] button');
  await until(async () => (await bob.locator('tr[data-sku="mug"]').count()) === 1, 'the mug row on bob\'s page');
  const sellTwice = (page) => page.evaluate(() => { for (let i = 0; i < 2; i++) document.querySelector('tr[data-sku="mug"] button').click(); });
  await Promise.all([sellTwice(ann), sellTwice(bob)]);
  const level = (page) => page.locator('tr[data-sku="mug"] td[data-level]').getAttribute('data-level');
  for (const page of [ann, bob]) await until(async () => (await level(page)) === '6', 'six mugs left on both pages');
  await ann.screenshot({ path: join(artifacts, 'in-sync-ann.png'), fullPage: true });
  await bob.screenshot({ path: join(artifacts, 'in-sync-bob.png'), fullPage: true });

  // Bob's socket is cut; while it is down, and across a restart of the runner, ann goes on.
  await bob.evaluate(() => { window.livesync.client.options.initialBackoffMs = 2000; window.livesync.client.drop(); });
  await until(async () => (await connection(bob)) !== 'open', 'bob to notice');
  await say(ann, 'are you there, bob?');
  await sell(ann);
  await runner.restart();
  await until(async () => (await connection(ann)) === 'open', 'ann back after the restart');
  await say(ann, 'the server restarted');
  await sell(ann);
  await ann.locator('#pad').pressSequentially('ann wrote this alone. ', { delay: 3 });

  // Bob comes back with everything he missed, in order, once.
  await until(async () => (await connection(bob)) === 'open', 'bob back');
  const everything = [...chat, 'annare you there, bob?', 'annthe server restarted'];
  for (const page of [ann, bob]) {
    await until(async () => (await texts(page, '#messages li')).join('|') === everything.join('|'), 'every message, in order, once');
    await until(async () => (await level(page)) === '4', 'the same stock');
  }
  await until(async () => (await ann.inputValue('#pad')) === (await bob.inputValue('#pad')), 'the same text');
  assert.match(await bob.inputValue('#pad'), /ann wrote this alone\./);
  const seqs = await bob.locator('#messages li').evaluateAll((items) => items.map((li) => Number(li.dataset.seq)));
  assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), 'messages in seq order');
  const sales = await bob.locator('#sales li').count();
  assert.equal(sales, 6, 'every sale, once');
  await ann.screenshot({ path: join(artifacts, 'after-restart-ann.png'), fullPage: true });
  await bob.screenshot({ path: join(artifacts, 'after-restart-bob.png'), fullPage: true });
});

test('a page where WebSockets are blocked follows the room over Server-Sent Events, across a restart', async () => {
  // A proxy that refuses WebSockets: every attempt fails.
  const carol = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await carol.addInitScript(() => { window.WebSocket = class { constructor() { throw new Error('blocked by a proxy'); } }; });
  carol.on('pageerror', (error) => { throw error; });
  const http = runner.url.replace('ws://', 'http://');
  await carol.goto(`${http}/?user=carol`);
  await carol.waitForFunction(() => window.livesync !== undefined);
  await carol.evaluate(() => window.livesync.ready);
  assert.equal(await carol.textContent('#transport'), 'http');
  assert.equal(await carol.evaluate(() => window.livesync.client.readers.get('lobby')?.source?.constructor.name), 'EventSource');

  const dave = await open('dave');
  const seqsOf = (page) => page.locator('#messages li').evaluateAll((items) => items.map((li) => Number(li.dataset.seq)));
  const same = async () => {
    const [theirs, ours] = [await texts(dave, '#messages li'), await texts(carol, '#messages li')];
    return theirs.length > 0 && theirs.join('|') === ours.join('|') && (await seqsOf(dave)).join() === (await seqsOf(carol)).join();
  };
  await say(dave, 'dave, over a socket');
  await say(carol, 'carol, over http');
  // A backend's POST, as curl sends it.
  const posted = await fetch(`${http}/rooms/lobby/events`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ id: 'backend-1', data: { user: 'backend', text: 'restocked' } }) });
  assert.equal(posted.status, 200);
  await until(same, 'the same messages on both pages');
  const before = await texts(carol, '#messages li');
  assert.deepEqual(before.slice(-3), ['davedave, over a socket', 'carolcarol, over http', 'backendrestocked']);

  // The runner restarts; carol's EventSource reconnects with Last-Event-ID.
  await runner.restart();
  await until(async () => (await connection(dave)) === 'open', 'dave back after the restart');
  await say(dave, 'after the restart');
  await say(carol, 'still here over http');
  await until(same, 'every message on both pages after the restart');
  const seqs = await seqsOf(carol);
  assert.deepEqual(seqs, [...new Set(seqs)].sort((a, b) => a - b), 'in seq order, none twice');
  assert.deepEqual((await texts(carol, '#messages li')).slice(-2), ['daveafter the restart', 'carolstill here over http']);
  await carol.screenshot({ path: join(artifacts, 'over-http-carol.png'), fullPage: true });
});
