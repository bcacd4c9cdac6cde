'use strict';
// What the headless-Chromium drivers share: Debian's /usr/bin/chromium launched by
// playwright-core with the flags this machine needs (no background networking: the
// network is closed), one JSON line per step on stdout, and exit 0 / {"step":"error"}.

const { chromium } = require('playwright-core');

const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

function out(step, fields) {
  process.stdout.write(JSON.stringify(Object.assign({ step: step }, fields || {})) + '\n');
}

// Runs body(context) in a fresh persistent context, then exits the process.
function run(userDataDir, body) {
  async function main() {
    const context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: '/usr/bin/chromium',
      headless: true,
      args: FLAGS,
      timeout: 30000,
    });
    try {
      await body(context);
    } finally {
      await context.close();
    }
  }
  main().then(function () { process.exit(0); }, function (err) {
    out('error', { message: String(err && err.stack || err) });
    process.exit(1);
  });
}

module.exports = { out: out, run: run };
