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

const { out, run } = require('./browser');

const [url, userDataDir] = process.argv.slice(2);
const STEP_MS = 30000;

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

run(userDataDir, async function (context) {
  const problems = [];
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
});
