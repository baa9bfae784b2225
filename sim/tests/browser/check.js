// Drives a ctx-sim diagram page in headless Chromium with playwright-core
// and reports what it saw as one JSON object on stdout; the Rust test
// (sim/tests/browser.rs) compares it with the trace's view.
//
// usage: node check.js PAGE.html EXPECT.json SCREENSHOT.png
// EXPECT: { lanes, arrows, node, arrows_without_node, message, kind }
"use strict";
const fs = require("fs");
const path = require("path");
const { chromium } = require("playwright-core");

async function main() {
  const [pagePath, expectPath, screenshot] = process.argv.slice(2);
  const expect = JSON.parse(fs.readFileSync(expectPath, "utf8"));
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu"],
  });
  const seen = {};
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 720 } });
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    // Nothing may be fetched: the page is self-contained.
    const requests = [];
    page.on("request", (r) => { if (!r.url().startsWith("file:")) requests.push(r.url()); });
    await page.goto("file://" + path.resolve(pagePath));
    await page.waitForFunction(() => window.ctxView && window.ctxView.ready, null, { timeout: 20000 });
    seen.errors = errors;
    seen.requests = requests;
    seen.counts = await page.evaluate(() => window.ctxView.counts);
    seen.drawn = await page.evaluate(() => ({ ...window.ctxView.drawn }));
    seen.stats = await page.evaluate(() => ({ ...document.getElementById("stats").dataset }));
    seen.verdict = await page.textContent("#verdict");
    seen.failedChecks = await page.locator("#checks li.fail").count();

    // Click a message and read its details.
    const point = await page.evaluate((id) => window.ctxView.pointOf(id), expect.message);
    seen.point = point;
    if (point) {
      await page.mouse.move(point.x, point.y);
      seen.tooltip = await page.textContent("#tooltip");
      await page.mouse.click(point.x, point.y);
      seen.details = await page.textContent("#details");
      seen.detailsType = await page.getAttribute("#details", "data-type");
    }

    // Filter a node out: fewer lanes, fewer arrows.
    await page.click("#f-nodes-box summary");
    await page.uncheck(`#f-nodes input[data-name="${expect.node}"]`);
    seen.drawnWithoutNode = await page.evaluate(() => ({ ...window.ctxView.drawn }));
    await page.check(`#f-nodes input[data-name="${expect.node}"]`);
    await page.click("#f-nodes-box summary");
    seen.drawnAgain = await page.evaluate(() => ({ ...window.ctxView.drawn }));

    // The screenshot: the whole run, the failure pinned in the details.
    await page.click("#zoom-fit");
    if (seen.failedChecks > 0) await page.click("#checks li.fail");
    await page.click("#zoom-fit");
    await page.screenshot({ path: screenshot });
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(seen) + "\n");
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack ? e.stack : e) + "\n");
  process.exit(1);
});
