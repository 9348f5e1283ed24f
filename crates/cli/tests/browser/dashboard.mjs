// The dashboard in a real headless browser (Debian's chromium, driven by npm's
// playwright-core), run by crates/cli/tests/cli/dashboard.rs against a running
// `meshwork up examples/store-billing` with traffic.
//
//   node dashboard.mjs URL SCREENSHOT
//   env: MESHWORK_CHROMIUM (the browser), MESHWORK_NODE_MODULES (where playwright-core is)
//
// Talks to the test over stdio, one JSON object per line: prints {"step":"waiting-for-denial"}
// once the page shows the services and the store → billing edge, then reads one line
// {"decision_id", "policy", "rule"} (the 403 the test just provoked) and checks that the
// open page shows that denial without being reloaded. Exit 0 when everything held; 1 with
// the reason on stderr otherwise.

import { createRequire } from "node:module";
import { createInterface } from "node:readline";
import path from "node:path";

const [url, screenshot] = process.argv.slice(2);
const require = createRequire(path.join(process.env.MESHWORK_NODE_MODULES, "x.js"));
const { chromium } = require("playwright-core");

// A hang guard for each wait, not a measurement: the page polls every second.
const PATIENCE = 30_000;
const SERVICES = ["billing", "store", "reporting", "stripe"];

const say = (step, extra = {}) => console.log(JSON.stringify({ step, ...extra }));
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

function check(ok, what) {
  if (!ok) throw new Error(what);
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.MESHWORK_CHROMIUM,
    chromiumSandbox: false,
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    const requests = [];
    page.on("request", (r) => requests.push(r.url()));
    let navigations = 0;
    page.on("framenavigated", (f) => { if (f === page.mainFrame()) navigations += 1; });

    await page.goto(url);
    for (const name of SERVICES) {
      await page.locator(`#graph [data-node="${name}"]`).waitFor({ timeout: PATIENCE });
    }
    // The store → billing edge with a success rate (the test sent store's charges).
    const edge = page.locator('#graph [data-edge="store->billing"]');
    await edge.waitFor({ timeout: PATIENCE });
    const success = Number(await edge.getAttribute("data-success"));
    check(success === 1, `store → billing success rate ${success}, expected 1`);
    const label = await edge.locator("text").textContent();
    check(/^100% · [\d.]+ rps.*p50 [\d.]+ ms · p99 [\d.]+ ms$/.test(label), `edge label ${label}`);
    await page.locator('#services tr[data-service="billing"]').waitFor({ timeout: PATIENCE });
    await page.locator("#identities tbody tr", { hasText: "sa/store" }).waitFor({ timeout: PATIENCE });
    await page.locator("#claims tbody tr", { hasText: "charges-db" }).waitFor({ timeout: PATIENCE });
    // A marker that a reload would lose.
    await page.evaluate(() => { window.__stillTheSamePage = true; });
    say("waiting-for-denial", { navigations });

    const next = await lines.next();
    check(!next.done, "the test sent no denial");
    const denial = JSON.parse(next.value);
    const row = page.locator(`#denials tr[data-decision="${denial.decision_id}"]`);
    await row.waitFor({ timeout: PATIENCE });
    const cells = await row.locator("td").allTextContents();
    check(cells[1] === "reporting", `caller cell ${cells[1]}`);
    check(cells[2] === "POST billing /charges", `request cell ${cells[2]}`);
    check(cells[3] === denial.policy, `policy cell ${cells[3]}, the 403 said ${denial.policy}`);
    check(cells[4] === String(denial.rule), `rule cell ${cells[4]}, the 403 said ${denial.rule}`);
    check(await page.evaluate(() => window.__stillTheSamePage === true), "the page was reloaded");
    check(navigations === 1, `${navigations} navigations: the page was reloaded`);
    const outside = requests.filter((u) => !u.startsWith(new URL(url).origin));
    check(outside.length === 0, `requests outside the dashboard: ${outside}`);
    check(errors.length === 0, `script errors: ${errors}`);
    await page.screenshot({ path: screenshot, fullPage: true });
    say("screenshot", { path: screenshot });

    // The decision id links to its explanation.
    await row.locator("a").click();
    await page.waitForURL(/\/explain\?decision=/, { timeout: PATIENCE });
    const body = await page.locator("body").textContent();
    for (const want of [denial.decision_id, denial.policy, "spiffe://meshwork.local/ns/default/sa/reporting"]) {
      check(body.includes(want), `the explanation does not name ${want}: ${body}`);
    }
    say("done");
  } finally {
    await browser.close();
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(`dashboard browser test: ${e.stack || e}`);
    process.exit(1);
  },
);
