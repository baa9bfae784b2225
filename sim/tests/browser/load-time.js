// Measures how long a ctx-sim diagram page takes to open in headless
// Chromium: from navigation to the first full drawing (window.ctxView.ready).
// usage: node load-time.js PAGE.html [RUNS]   (prints the median, in ms)
"use strict";
const path = require("path");
const { chromium } = require("playwright-core");

async function main() {
  const [pagePath, runsText] = process.argv.slice(2);
  const runs = Number(runsText || 5);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu"],
  });
  const times = [];
  try {
    for (let i = 0; i < runs; i++) {
      const page = await browser.newPage({ viewport: { width: 1400, height: 720 } });
      const started = Date.now();
      await page.goto("file://" + path.resolve(pagePath));
      await page.waitForFunction(() => window.ctxView && window.ctxView.ready, null, { timeout: 60000, polling: 10 });
      times.push(Date.now() - started);
      await page.close();
    }
  } finally {
    await browser.close();
  }
  times.sort((a, b) => a - b);
  console.log(`${path.basename(pagePath)}: opened in ${times[Math.floor(times.length / 2)]} ms (median of ${runs}; all: ${times.join(", ")} ms)`);
}

main().catch((e) => { console.error(e); process.exit(1); });
