'use strict';
// The live demo in headless Chromium (Debian's /usr/bin/chromium driven by
// playwright-core), two pages side by side, driven by tests/e2e/test_demo_browser.py.
//
//   node demo_browser.js <url> <fresh user-data-dir>
//
// Page A adds an item, page B sees it arrive; B ticks it, A sees it done; A deletes
// it, B sees it go; B closes, A's viewer count drops. Prints one JSON line per step
// and exits 0, or prints {"step":"error"} and exits 1.

const { out, run } = require('./browser');

const [url, userDataDir] = process.argv.slice(2);
const STEP_MS = 10000;
async function openPage(context, name, problems) {
  const page = await context.newPage();
  page.on('pageerror', function (err) { problems.push(name + ': ' + err.message); });
  page.on('console', function (msg) {
    if (msg.type() === 'error') { problems.push(name + ' console: ' + msg.text()); }
  });
  await page.goto(url, { waitUntil: 'load', timeout: STEP_MS });
  await page.waitForSelector('body[data-ready="1"]', { timeout: STEP_MS });
  out('ready', { page: name, transport: await page.evaluate(function () {
    return io.socket._raw.io.engine.transport.name;
  }) });
  return page;
}

function items(page) {
  return page.$$eval('#items li', function (lis) {
    return lis.map(function (li) {
      return { text: li.querySelector('.text').textContent, done: li.classList.contains('done') };
    });
  });
}

run(userDataDir, async function (context) {
  const problems = [];
  const a = await openPage(context, 'A', problems);
  const b = await openPage(context, 'B', problems);
  await a.waitForFunction(function () {
    return document.getElementById('viewers').textContent === '2';
  }, null, { timeout: STEP_MS });
  out('viewers', { page: 'A', viewers: 2 });

  await a.fill('#text', 'buy milk');
  await a.click('#add button');
  await b.waitForSelector('#items li >> text=buy milk', { timeout: STEP_MS });
  // A's own page renders on its request's answer, B's on the room's event: two paths
  await a.waitForSelector('#items li >> text=buy milk', { timeout: STEP_MS });
  out('created', { a: await items(a), b: await items(b) });

  await b.check('#items li:has-text("buy milk") input[type=checkbox]');
  await a.waitForSelector('#items li.done >> text=buy milk', { timeout: STEP_MS });
  await b.waitForSelector('#items li.done >> text=buy milk', { timeout: STEP_MS });
  out('updated', { a: await items(a), b: await items(b) });

  await a.click('#items li:has-text("buy milk") button');
  for (const page of [b, a]) {
    await page.waitForFunction(function () {
      return document.querySelectorAll('#items li').length === 0;
    }, null, { timeout: STEP_MS });
  }
  out('destroyed', { a: await items(a), b: await items(b) });

  await b.close();
  await a.waitForFunction(function () {
    return document.getElementById('viewers').textContent === '1';
  }, null, { timeout: STEP_MS });
  out('viewers', { page: 'A', viewers: 1 });
  out('done', { problems: problems });
});
