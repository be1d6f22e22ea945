// Measures `cloister console` at scale in a headless chromium (Debian's,
// through playwright-core). Run by TestConsoleScale
// (cmd/cloister/console_scale_e2e_test.go), which deploys the functions,
// makes the activations and sets:
//
//   CONSOLE_URL     the URL the console printed, with its token
//   CHROMIUM        the chromium binary
//   FUNCTIONS       how many functions the namespace holds (named fn-000...)
//   ACTIVATIONS     how many activations it holds
//   FIRST_FUNCTION  the first function's name
//   SCREENSHOTS     (optional) where to save the lists at 1280 and 390 px
//
// It reports the first paints of the overview, functions and activations
// pages (not asserted), and checks that each list shows its first page,
// pages on to the next, and does not scroll sideways at 1280 or 390 px.
// Each check prints "ok - ..." or "FAIL - ..."; the first failure ends the
// run with exit status 1. The last line is "timings {json}".
"use strict";

const path = require("node:path");
const { chromium } = require("playwright-core");

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(k + " is not set (run through go test -run TestConsoleScale ./cmd/cloister/)");
  return v;
};
const consoleURL = new URL(env("CONSOLE_URL"));
const origin = consoleURL.origin;
const nFunctions = Number(env("FUNCTIONS"));
const nActivations = Number(env("ACTIVATIONS"));
const PAGE = 50; // the console's page size (app.js FUNCTION_PAGE, ACTIVATION_PAGE)
const RUNS = 5; // loads of each page; the median is reported

class CheckError extends Error {}
function check(cond, msg) {
  if (!cond) throw new CheckError(msg);
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};

// load opens url in page afresh and returns the first contentful paint
// and the time until selector showed, from the start of the navigation.
async function load(page, url, selector) {
  await page.goto("about:blank");
  await page.goto(url);
  await page.locator(selector).first().waitFor();
  const shown = await page.evaluate(() => performance.now());
  const fcp = await page.evaluate(() => {
    const e = performance.getEntriesByType("paint").find((p) => p.name === "first-contentful-paint");
    return e ? e.startTime : NaN;
  });
  return { fcp, shown };
}

async function measure(page, url, selector) {
  const runs = [];
  for (let i = 0; i < RUNS; i++) runs.push(await load(page, url, selector));
  return { fcp: median(runs.map((r) => r.fcp)), shown: median(runs.map((r) => r.shown)), runs };
}

// rowNames returns the function names of the functions table's rows.
const rowNames = (page) => page.locator("main table tbody tr td:first-child a").allTextContents();
// rowIDs returns the activation ids of the activations table's rows.
const rowIDs = (page) => page.locator("main table tbody tr td:first-child a").evaluateAll((as) => as.map((a) => a.getAttribute("href").replace("#activations/", "")));

// noSideways checks that neither the page nor a table scrolls sideways at
// each width.
async function noSideways(page, what) {
  for (const width of [1280, 390]) {
    await page.setViewportSize({ width, height: 900 });
    await page.waitForTimeout(50); // let the layout settle
    const r = await page.evaluate(() => ({
      page: document.documentElement.scrollWidth - window.innerWidth,
      tables: [...document.querySelectorAll(".scroll")].map((e) => e.scrollWidth - e.clientWidth),
    }));
    if (process.env.SCREENSHOTS) {
      await page.screenshot({ path: path.join(process.env.SCREENSHOTS, `${what.replace(/^the /, "").replace(/\W+/g, "-")}-scale-${width}.png`), fullPage: true });
    }
    check(r.page <= 0, `${what} at ${width} px: the page is ${r.page} px wider than the window`);
    const over = Math.max(0, ...r.tables);
    check(over <= 1, `${what} at ${width} px: a table scrolls sideways by ${over} px`);
  }
  await page.setViewportSize({ width: 1280, height: 900 });
}

const steps = [];
const step = (name, fn) => steps.push([name, fn]);
let page;
const timings = {};

step("log in with the printed URL", async () => {
  await page.goto(consoleURL.href);
  await page.locator("h2:has-text('Attestation') .badge.ok").waitFor();
});

step("the overview: first paint", async () => {
  timings.overview = await measure(page, origin + "/#overview", "main h2:has-text('Admitted workers') ~ div table tbody tr");
});

step("the functions page shows its first page, and pages on to the last", async () => {
  timings.functions = await measure(page, origin + "/#functions", "main table tbody tr");
  const seen = [];
  let names = await rowNames(page);
  check(names.length === Math.min(PAGE, nFunctions), `the first page shows ${names.length} functions, want ${Math.min(PAGE, nFunctions)}`);
  check(names[0] === env("FIRST_FUNCTION"), `the first page starts with ${names[0]}, want ${env("FIRST_FUNCTION")}`);
  await noSideways(page, "the functions page");
  for (let pages = 1; ; pages++) {
    check(pages <= Math.ceil(nFunctions / PAGE), `more than ${Math.ceil(nFunctions / PAGE)} pages of functions`);
    check(await page.locator("main table tbody tr .badge.ok").count() === names.length, `page ${pages}: a certificate is not shown as verified`);
    seen.push(...names);
    const next = page.getByRole("link", { name: "Next page" });
    if (await next.count() === 0) break;
    const last = names[names.length - 1];
    await next.click();
    await page.waitForFunction((last) => {
      const a = document.querySelector("main table tbody tr td:first-child a");
      return a && a.textContent > last;
    }, last);
    names = await rowNames(page);
    check(await page.getByRole("link", { name: "First page" }).count() === 1, `page ${pages + 1}: no link back to the first page`);
  }
  check(seen.length === nFunctions, `paged through ${seen.length} functions, want ${nFunctions}`);
  check(new Set(seen).size === seen.length, "a function shows on two pages");
  check(seen.every((n, i) => i === 0 || seen[i - 1] < n), "the pages are not in name order");
});

step("the activations page shows its first page, and older ones", async () => {
  timings.activations = await measure(page, origin + "/#activations", "main table tbody tr");
  const first = await rowIDs(page);
  check(first.length === PAGE, `the first page shows ${first.length} activations, want ${PAGE}`);
  check(first.every((id, i) => i === 0 || first[i - 1] > id), "the first page is not newest first");
  await noSideways(page, "the activations page");
  const seen = [...first];
  for (let pages = 1; pages < 4; pages++) {
    const last = seen[seen.length - 1];
    await page.getByRole("link", { name: "Older" }).click();
    await page.waitForFunction((last) => {
      const a = document.querySelector("main table tbody tr td:first-child a");
      return a && a.getAttribute("href").replace("#activations/", "") < last;
    }, last);
    const ids = await rowIDs(page);
    check(ids.length === PAGE, `page ${pages + 1} shows ${ids.length} activations, want ${PAGE}`);
    check(ids[0] < last, `page ${pages + 1} starts at ${ids[0]}, not older than ${last}`);
    seen.push(...ids);
  }
  check(new Set(seen).size === seen.length, "an activation shows on two pages");
  check(seen.every((id, i) => i === 0 || seen[i - 1] > id), "the pages are not newest first");
  check(await page.getByRole("link", { name: "Newest" }).count() === 1, "no link back to the newest activations");
  // A deep page, by its cursor in the address: as quick as the first.
  const deep = seen[seen.length - 1];
  timings.activationsDeep = await measure(page, origin + "/#activations?before=" + deep, "main table tbody tr");
  const ids = await rowIDs(page);
  check(ids.length === PAGE && ids[0] < deep, `a page by its cursor: ${ids.length} activations from ${ids[0]}`);
  console.log(`# ${nActivations} activations: 4 pages paged through, then one opened by its cursor`);
});

(async () => {
  const browser = await chromium.launch({ executablePath: env("CHROMIUM"), headless: true, args: ["--disable-dev-shm-usage"] });
  let failed = false;
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    context.setDefaultTimeout(30000);
    page = await context.newPage();
    page.on("pageerror", (e) => console.log("# page error: " + e));
    for (const [name, fn] of steps) {
      const t0 = Date.now();
      try {
        await fn();
        console.log(`ok - ${name} (${Date.now() - t0} ms)`);
      } catch (e) {
        failed = true;
        console.log(`FAIL - ${name}: ${e instanceof CheckError ? e.message : e.stack}`);
        try {
          console.log(`# the page at the failure:\n${(await page.locator("body").innerText()).slice(0, 2000)}`);
        } catch {
          // the page is gone
        }
        break;
      }
    }
  } finally {
    await browser.close();
  }
  const ms = (x) => (Number.isFinite(x) ? x.toFixed(0) + " ms" : "n/a");
  for (const [p, t] of Object.entries(timings)) {
    console.log(`# ${p}: first-contentful-paint ${ms(t.fcp)}, list shown ${ms(t.shown)} (median of ${t.runs.length}: ${t.runs.map((r) => ms(r.shown)).join(", ")})`);
  }
  const out = {};
  for (const [p, t] of Object.entries(timings)) out[p] = { fcp: t.fcp, shown: t.shown };
  console.log("timings " + JSON.stringify(out));
  process.exit(failed ? 1 : 0);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
