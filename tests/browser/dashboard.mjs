// The dashboard in a real browser (Debian's chromium, headless, driven by
// playwright-core): the run page of a live run shows its progress move with no
// reload (the event stream), the failures appear grouped by signature, and their
// link filters the task table on the server. Screenshots go to the directory given.
//
// Usage: node dashboard.mjs BASE_URL RUN GATE_FILE SCREENSHOT_DIR
// The run's tasks wait for GATE_FILE; this script creates it once the page is live.
import { writeFileSync } from "node:fs";
import { chromium } from "playwright-core";

const [base, run, gate, shots] = process.argv.slice(2);
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"] });
try {
  const page = await browser.newPage({ viewport: { width: 1300, height: 1000 } });
  const errors = [];
  page.on("pageerror", (err) => errors.push(String(err)));
  await page.goto(`${base}#/runs/${run}`);
  const done = () => page.locator(".stat .value").first().textContent();
  await page.waitForFunction(() => document.getElementById("live").textContent.includes("live"));
  const before = await done();
  if (!before.startsWith("0 / ")) throw new Error(`a live run with nothing done shows ${before}`);
  await page.screenshot({ path: `${shots}/live-before.png`, fullPage: true });

  writeFileSync(gate, "");
  // The same page, no reload: the stream moves the count, then the run's end.
  await page.waitForFunction(() => {
    const value = document.querySelector(".stat .value");
    return value && /^(\d+) \/ \1$/.test(value.textContent);
  }, null, { timeout: 20000 });
  await page.waitForSelector("h1 .badge.finished", { timeout: 20000 });
  await page.screenshot({ path: `${shots}/live-after.png`, fullPage: true });

  const group = page.locator(".group").first();
  const signature = await group.locator(".sig").textContent();
  if (signature !== "bad thing") throw new Error(`the failure's signature reads ${signature}`);
  await group.locator("text=show in the table").click();
  await page.waitForFunction(() => location.hash.includes("status=failed"));
  await page.waitForFunction(() => document.querySelectorAll("table tr td:first-child a").length === 1);
  const rows = await page.locator("table tr td:first-child a").allTextContents();
  if (rows.join(",") !== "3") throw new Error(`the filtered table holds tasks ${rows}`);
  await page.screenshot({ path: `${shots}/filtered.png`, fullPage: true });
  if (errors.length) throw new Error(`the page threw: ${errors.join("; ")}`);
  console.log(`dashboard: ${before} -> finished; failures filtered to task ${rows}`);
} finally {
  await browser.close();
}
