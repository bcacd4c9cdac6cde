'use strict';
// The live demo page across a gateway restart, in headless Chromium (playwright-core),
// driven by tests/e2e/test_demo_reconnect.py.
//
//   node demo_reconnect.js <url> <fresh user-data-dir>
//
// Opens the page and prints {"step":"ready"}; the test then restarts the gateway.
// The page must notice (data-ready="0": "disconnected"), reconnect by itself
// (io.sails.reconnection = true in gateway/static/index.html; sails.io.js defaults
// to false) and fetch its list again (data-ready="1": "back"). Exits 0, or prints
// {"step":"error"} and exits 1.

const { chromium } = require('playwright-core');

const [url, userDataDir] = process.argv.slice(2);
const STEP_MS = 30000;
const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

function out(step, fields) {
  process.stdout.write(JSON.stringify(Object.assign({ step: step }, fields || {})) + '\n');
}

function state(page) {
  return page.evaluate(function () {
    return {
      conn: document.getElementById('conn').textContent,
      items: Array.prototype.map.call(document.querySelectorAll('#items li .text'),
        function (el) { return el.textContent; }),
      reconnection: io.sails.reconnection,
    };
  });
}

async function main() {
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: FLAGS,
    timeout: 30000,
  });
  const problems = [];
  try {
    const page = await context.newPage();
    page.on('pageerror', function (err) { problems.push(err.message); });
    await page.goto(url, { waitUntil: 'load', timeout: STEP_MS });
    await page.waitForSelector('body[data-ready="1"]', { timeout: STEP_MS });
    out('ready', await state(page));
    await page.waitForSelector('body[data-ready="0"]', { timeout: STEP_MS, state: 'attached' });
    out('disconnected', await state(page));
    await page.waitForSelector('body[data-ready="1"]', { timeout: STEP_MS, state: 'attached' });
    out('back', await state(page));
    out('done', { problems: problems });
  } finally {
    await context.close();
  }
}

main().then(function () { process.exit(0); }, function (err) {
  out('error', { message: String(err && err.stack || err) });
  process.exit(1);
});
