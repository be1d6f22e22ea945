// Drives `cloister console` in a headless chromium (Debian's, through
// playwright-core) against a real `cloister up`. Run by
// cmd/cloister/console_e2e_test.go, which sets:
//
//   CONSOLE_URL           the URL the console printed, with its token
//   TAMPERED_CONSOLE_URL  a second console whose gateway flips a byte of every receipt
//   CHROMIUM              the chromium binary
//   GO_WASM, JS_SOURCE    the functions to deploy from the browser
//   SCREENSHOTS           where to save a screenshot of each page, at 1280 and 390 px
//
// Each check prints "ok - ..." or "FAIL - ..."; the first failure ends the
// run with exit status 1.
"use strict";

const fs = require("node:fs");
const http = require("node:http");
const path = require("node:path");
const { chromium } = require("playwright-core");

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(k + " is not set (run through go test -run TestConsoleBrowser ./cmd/cloister/)");
  return v;
};
const consoleURL = new URL(env("CONSOLE_URL"));
const tamperedURL = env("TAMPERED_CONSOLE_URL");
const origin = consoleURL.origin;
const token = consoleURL.searchParams.get("token");
const shotsDir = env("SCREENSHOTS");
const XSS = "<img src=x onerror=alert(1)>";
const TOKEN_HEADER = "X-Cloister-Console-Token";
const LONG = 120000; // deploying a 3 MB Go module compiles and snapshots it

class CheckError extends Error {}
function check(cond, msg) {
  if (!cond) throw new CheckError(msg);
}

const dialogs = [];
const pageErrors = [];
const cspViolations = [];

function watch(page) {
  page.on("dialog", (d) => {
    dialogs.push(d.type() + ": " + d.message());
    d.dismiss().catch(() => {});
  });
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  page.on("console", (m) => {
    if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
  });
  return page;
}

async function shot(page, name, { banner = true } = {}) {
  // The sim banner shows on every page once logged in.
  if (banner) check(await page.locator("#sim-banner").isVisible(), `${name}: the sim banner is hidden`);
  const vp = page.viewportSize();
  for (const width of [1280, 390]) {
    await page.setViewportSize({ width, height: 900 });
    await page.waitForTimeout(50); // let the layout settle
    await page.screenshot({ path: path.join(shotsDir, `${name}-${width}.png`), fullPage: true });
  }
  await page.setViewportSize(vp);
}

// noScriptInjected checks that nothing the server sent became markup.
async function noScriptInjected(page, where) {
  const imgs = await page.locator("img").count();
  check(imgs === 0, `${where}: ${imgs} img element(s) in the page, want none`);
  check(dialogs.length === 0, `${where}: dialogs opened: ${dialogs.join("; ")}`);
  check(cspViolations.length === 0, `${where}: CSP violations (something tried to run): ${cspViolations.join("; ")}`);
}

// kvValue returns the text of the <dd> after the <dt> whose text starts with label, inside scope.
async function kvValue(scope, label) {
  return scope.evaluate((root, label) => {
    for (const dt of root.querySelectorAll("dt")) {
      if (dt.firstChild && dt.firstChild.textContent.trim() === label) return dt.nextElementSibling.textContent;
    }
    return null;
  }, label);
}

// paintTimes reloads page at url and returns the browser's paint timings and
// the time until selector showed.
async function paintTimes(page, url, selector) {
  await page.goto("about:blank");
  await page.goto(url);
  await page.locator(selector).first().waitFor();
  const ready = await page.evaluate(() => performance.now());
  const paints = await page.evaluate(() => Object.fromEntries(performance.getEntriesByType("paint").map((e) => [e.name, e.startTime])));
  return { fp: paints["first-paint"], fcp: paints["first-contentful-paint"], ready };
}

const ms = (x) => (x === undefined ? "n/a" : x.toFixed(0) + " ms");

// invokeOn fills the invoke page of page for name and returns #invoke-result
// once it holds an answer (or, async, the queued notice).
async function invokeOn(page, name, params, { async = false, logs = false } = {}) {
  await page.goto(origin + "/#invoke/" + encodeURIComponent(name));
  await page.locator("#invoke-params").fill(JSON.stringify(params));
  if (async) await page.locator("#invoke-async").check();
  if (logs) await page.locator("#invoke-logs").check();
  await page.getByRole("button", { name: "Invoke sealed" }).click();
  const out = page.locator("#invoke-result");
  await out.locator(".verify, .error, h3:text('Queued')").first().waitFor({ timeout: LONG });
  return out;
}

async function expectVerifiedResult(out, fn, greeting) {
  const text = await out.innerText();
  check(await out.locator(".verify.bad, .error").count() === 0, `invoking ${fn}: an error or failed verification: ${text}`);
  check(await out.locator("h3:has-text('Result') .badge.ok").count() === 1, `invoking ${fn}: no verified result: ${text}`);
  const output = await out.locator("pre.output").first().textContent();
  check(output.includes(greeting), `invoking ${fn}: output ${JSON.stringify(output)}, want it to hold ${JSON.stringify(greeting)}`);
  check(await out.locator(".verify.ok").count() === 1, `invoking ${fn}: no "Verified by this machine" box`);
  const receipt = out.locator("section:has(h3:has-text('Receipt'))");
  check(await receipt.locator("h3 .badge.ok").count() === 1, `invoking ${fn}: the receipt is not shown as verified`);
  const recFn = await kvValue(receipt, "Function");
  const mode = await kvValue(receipt, "Mode");
  check(recFn === fn, `invoking ${fn}: the receipt names function ${recFn}`);
  check(mode && mode !== "plain", `invoking ${fn}: receipt mode ${mode}, want a sealed mode`);
  return { output, mode };
}

// rawRequest sends a request straight to the console, with any headers
// (Host and Sec-Fetch-Site included), and returns the status.
function rawRequest(method, p, headers, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: consoleURL.hostname, port: consoleURL.port, method, path: p, headers }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode));
    });
    req.on("error", reject);
    req.end(body);
  });
}

const steps = [];
const step = (name, fn) => steps.push([name, fn]);
let browser, page, other;
const timings = {};

step("a wrong token is refused and the right one logs in; the sim banner shows", async () => {
  await page.goto(origin + "/");
  await page.locator("#token-input").waitFor();
  await shot(page, "login", { banner: false });
  await page.locator("#token-input").fill("00".repeat(32));
  await page.getByRole("button", { name: "Open" }).click();
  await page.locator(".login p:has-text('refused the token')").waitFor();
  check(await page.locator("h1").count() === 0, "a page rendered after a wrong token");
  check(await page.evaluate(() => sessionStorage.length) === 0, "a refused token stayed in sessionStorage");
  await page.locator("#token-input").fill(token);
  await page.getByRole("button", { name: "Open" }).click();
  await page.locator("h1:text('Overview')").waitFor();
  await page.locator("#sim-banner").waitFor({ state: "visible" });
  // The printed URL logs in too, and the token leaves the address bar.
  await page.goto(consoleURL.href);
  await page.locator("h2:has-text('Attestation') .badge.ok").waitFor();
  check(!page.url().includes("token"), `the token is still in the address bar: ${page.url()}`);
  check(await page.locator("#sim-banner").isVisible(), "the sim banner is hidden on the overview");
  const tee = await kvValue(page.locator("main"), "TEE kind");
  check(tee && tee.startsWith("sim"), `TEE kind ${tee}, want sim`);
  await shot(page, "overview");
});

step("first paint of the overview and functions pages (reported, not asserted)", async () => {
  timings.overview = await paintTimes(page, origin + "/#overview", "h2:has-text('Admitted workers')");
  timings.functions = await paintTimes(page, origin + "/#functions", "h2:text('Functions')");
  for (const [p, t] of Object.entries(timings)) {
    console.log(`# ${p}: first-paint ${ms(t.fp)}, first-contentful-paint ${ms(t.fcp)}, content shown ${ms(t.ready)}`);
  }
  check(await page.locator("#sim-banner").isVisible(), "the sim banner is hidden on the functions page");
});

async function deploy(name, file) {
  await page.goto(origin + "/#functions");
  await page.locator("#deploy-name").fill(name);
  await page.locator("#deploy-file").setInputFiles(file);
  await page.getByRole("button", { name: "Sign and deploy" }).click();
  const status = page.locator("#deploy-status");
  await status.locator(".ok-text, .error, .verify").first().waitFor({ timeout: LONG });
  const text = await status.innerText();
  check(text.startsWith("Deployed " + name + " v1"), `deploying ${name}: ${text}`);
  const row = page.locator("tr", { has: page.locator(`a[href="#invoke/${name}"]`) });
  await row.waitFor();
  check(await row.locator(".badge.ok").count() === 1, `${name}'s certificate is not shown as verified: ${await row.innerText()}`);
}

step("deploying a Go function from the browser (file upload)", async () => {
  await deploy("hello-go", env("GO_WASM"));
});

step("deploying a JS function from the browser (file upload)", async () => {
  await deploy("hello-js", env("JS_SOURCE"));
  await shot(page, "functions");
  await page.getByRole("button", { name: "Details of hello-js" }).click();
  await page.locator("#function-detail h2:has-text('hello-js v1') .badge.ok").waitFor();
  const runtime = await kvValue(page.locator("#function-detail"), "Runtime");
  check(/js/i.test(runtime), `hello-js runtime ${runtime}`);
  await shot(page, "function-detail");
});

step("invoking the Go function sealed: the result and a verified receipt", async () => {
  const out = await invokeOn(page, "hello-go", { name: "Ada" });
  const r = await expectVerifiedResult(out, "hello-go", "Hello, Ada!");
  console.log(`# hello-go: mode ${r.mode}, output ${r.output.trim()}`);
  // The receipt is in the ledger once a checkpoint covers it (one a second).
  let text = "";
  for (let i = 0; i < 15; i++) {
    await out.getByRole("button", { name: "Prove inclusion in the ledger" }).click();
    const proof = out.locator("section:has(h3:text('Ledger')) > div").first();
    await proof.locator(".verify, .error").first().waitFor();
    text = await proof.innerText();
    if (text.includes("Index")) break;
    await page.waitForTimeout(1000);
  }
  check(text.includes("Index") && text.includes("Verified by this machine"), `inclusion proof: ${text}`);
  await shot(page, "invoke");
});

step("invoking the JS function sealed: the result and a verified receipt", async () => {
  const out = await invokeOn(page, "hello-js", { name: "Ada" });
  const r = await expectVerifiedResult(out, "hello-js", "Hello, Ada!");
  console.log(`# hello-js: mode ${r.mode}, output ${r.output.trim()}`);
});

step("HTML in an output, a function name and a filter is shown as text, never run", async () => {
  const out = await invokeOn(page, "hello-js", { name: XSS }, { logs: true });
  const r = await expectVerifiedResult(out, "hello-js", XSS);
  check(r.output.includes("Hello, " + XSS), `output ${r.output}`);
  await noScriptInjected(page, "an output holding HTML");
  await shot(page, "invoke-html");
  // A function named like markup: the invoke page takes it from the URL.
  const bad = await invokeOn(page, XSS, { name: "Ada" });
  check(await bad.locator(".error, .verify.bad").count() >= 1, `invoking ${XSS}: no error shown: ${await bad.innerText()}`);
  check((await page.locator("#invoke-name").inputValue()) === XSS, "the function name field does not hold the name as typed");
  await noScriptInjected(page, "a function named like markup (invoke)");
  // Deploying under that name: the form's pattern is only a hint, so drop it
  // and let the server answer.
  await page.goto(origin + "/#functions");
  await page.locator("#deploy-name").evaluate((e) => e.removeAttribute("pattern"));
  await page.locator("#deploy-name").fill(XSS);
  await page.locator("#deploy-file").setInputFiles(env("JS_SOURCE"));
  await page.getByRole("button", { name: "Sign and deploy" }).click();
  const status = page.locator("#deploy-status");
  await status.locator(".ok-text, .error, .verify").first().waitFor({ timeout: LONG });
  const st = await status.innerText();
  console.log(`# deploying a function named ${XSS}: ${st.replace(/\s+/g, " ")}`);
  await page.waitForTimeout(800); // the page reloads the list after a deploy
  await noScriptInjected(page, "a function named like markup (deploy and list)");
  await page.goto(origin + "/#activations?function=" + encodeURIComponent(XSS));
  await page.locator("main .card table, main p.muted:text('No activations match.'), main .error").first().waitFor();
  check((await page.locator("#act-function").inputValue()) === XSS, "the activations filter does not hold the name as typed");
  await noScriptInjected(page, "an activations filter holding markup");
});

let activationID;
step("an async call appears in the activations, and its verified result opens", async () => {
  const out = await invokeOn(page, "hello-js", { name: "Async" }, { async: true });
  const link = out.locator("a[href^='#activations/']");
  activationID = (await link.getAttribute("href")).slice("#activations/".length);
  check(/^[0-9a-zA-Z_-]{8,}$/.test(activationID), `activation id ${activationID}`);
  await page.goto(origin + "/#activations");
  const row = page.locator("tr", { has: page.locator(`a[href="#activations/${activationID}"]`) });
  await row.waitFor();
  const rowText = await row.innerText();
  check(rowText.includes("hello-js"), `the activation's row: ${rowText}`);
  check(/\byes\b/.test(rowText.split("\t").pop()), `the console does not say it holds the key: ${rowText}`);
  await shot(page, "activations");
  await row.locator("a").click();
  await page.locator("h1:text('Activation')").waitFor();
  for (let i = 0; i < 30; i++) {
    if (await page.locator("h3:has-text('Result') .badge.ok").count()) break;
    await page.waitForTimeout(500);
    const refresh = page.getByRole("button", { name: "Refresh" });
    if (await refresh.count()) await refresh.click();
    else await page.reload();
    await page.locator("h1:text('Activation')").waitFor();
  }
  const text = await page.locator("main").innerText();
  check(await page.locator("h3:has-text('Result') .badge.ok").count() === 1, `no verified result for activation ${activationID}: ${text}`);
  check(text.includes("Hello, Async!"), `activation ${activationID}: ${text}`);
  check(await page.locator("section:has(h3:has-text('Receipt')) h3 .badge.ok").count() === 1, "the activation's receipt is not shown as verified");
  await shot(page, "activation");
});

step("the ledger: a verified checkpoint and a bill that counts these calls", async () => {
  const want = { "hello-go": 1, "hello-js": 3 };
  let got = {};
  let text = "";
  for (let i = 0; i < 20; i++) {
    await page.goto(origin + "/#ledger");
    await page.locator("h2:has-text('Checkpoint') .badge").waitFor();
    check(await page.locator("h2:has-text('Checkpoint') .badge.ok").count() === 1, `the checkpoint is not verified: ${await page.locator("main").innerText()}`);
    await page.locator("#audit-btn").click();
    const bill = page.locator("#bill");
    await bill.locator("table, .error, .verify, p.muted:text('No receipts')").first().waitFor({ timeout: LONG });
    text = await bill.innerText();
    got = await bill.evaluate((b) => {
      const m = {};
      for (const tr of b.querySelectorAll("tbody tr")) {
        const td = [...tr.children].map((c) => c.textContent);
        m[td[1]] = Number(td[2]);
      }
      return m;
    });
    if (Object.entries(want).every(([f, n]) => got[f] === n)) break;
    await page.waitForTimeout(1000); // the next checkpoint, a second later
  }
  check(Object.entries(want).every(([f, n]) => got[f] === n), `bill invocations ${JSON.stringify(got)}, want ${JSON.stringify(want)}:\n${text}`);
  check(await page.locator("#bill .verify.ok").count() === 1, `the audit is not verified: ${text}`);
  check(/Root matches\s*yes/.test(text), `the audit's root does not match: ${text}`);
  await shot(page, "ledger");
});

step("requests from another origin are refused", async () => {
  // A page on another origin (another port of loopback) tries the API.
  const evil = http.createServer((req, res) => {
    res.setHeader("Content-Type", "text/html");
    res.end("<!doctype html><title>elsewhere</title><p>another origin</p>");
  });
  await new Promise((r) => evil.listen(0, "127.0.0.1", r));
  try {
    other = watch(await page.context().newPage());
    await other.goto(`http://127.0.0.1:${evil.address().port}/`);
    const res = await other.evaluate(async ({ origin, header, token }) => {
      const out = {};
      for (const [name, init] of Object.entries({
        "GET with the token": { headers: { [header]: token } },
        "DELETE with the token": { method: "DELETE", headers: { [header]: token } },
        "simple POST": { method: "POST", body: '{"name":"hello-js","params":{}}', headers: { "Content-Type": "text/plain" } },
      })) {
        const target = origin + (init.method === "DELETE" ? "/api/functions/hello-js" : init.method === "POST" ? "/api/invoke" : "/api/overview");
        try {
          const r = await fetch(target, init);
          out[name] = "HTTP " + r.status;
        } catch (e) {
          out[name] = "blocked: " + e.message;
        }
      }
      return out;
    }, { origin, header: TOKEN_HEADER, token });
    for (const [name, r] of Object.entries(res)) {
      console.log(`# from another origin, ${name}: ${r}`);
      check(r.startsWith("blocked"), `from another origin, ${name}: ${r}, want it blocked`);
    }
    await other.close();
  } finally {
    evil.close();
  }
  // Straight at the console, with the token: a foreign Origin, a
  // cross-site Sec-Fetch-Site and a foreign Host are refused.
  const host = consoleURL.host;
  const cases = [
    ["DELETE with Origin: http://evil.example", "DELETE", "/api/functions/hello-js", { Host: host, Origin: "http://evil.example", [TOKEN_HEADER]: token }],
    ["POST with Sec-Fetch-Site: cross-site", "POST", "/api/invoke", { Host: host, Origin: origin, "Sec-Fetch-Site": "cross-site", "Content-Type": "application/json", [TOKEN_HEADER]: token }, '{"name":"hello-js","params":{}}'],
    ["GET with Host: evil.example (DNS rebinding)", "GET", "/api/overview", { Host: "evil.example:" + consoleURL.port, [TOKEN_HEADER]: token }],
    ["GET without the token", "GET", "/api/overview", { Host: host }],
  ];
  for (const [name, method, p, headers, body] of cases) {
    const status = await rawRequest(method, p, headers, body);
    console.log(`# ${name}: HTTP ${status}`);
    check(status === 403 || status === 401 || status === 421, `${name}: HTTP ${status}, want it refused`);
  }
  // Nothing was deleted.
  const st = await rawRequest("GET", "/api/functions/hello-js", { Host: host, [TOKEN_HEADER]: token });
  check(st === 200, `hello-js after the cross-origin attempts: HTTP ${st}, want 200`);
});

step("a receipt tampered by the gateway is shown as a verification failure", async () => {
  const tp = watch(await browser.newPage({ viewport: { width: 1280, height: 900 } }));
  const tOrigin = new URL(tamperedURL).origin;
  await tp.goto(tamperedURL);
  await tp.locator("h2:has-text('Attestation') .badge.ok").waitFor();
  await tp.goto(tOrigin + "/#invoke/hello-js");
  await tp.locator("#invoke-params").fill(JSON.stringify({ name: "Tampered" }));
  await tp.getByRole("button", { name: "Invoke sealed" }).click();
  const out = tp.locator("#invoke-result");
  await out.locator(".verify, .error").first().waitFor({ timeout: LONG });
  const text = await out.innerText();
  check(await out.locator(".verify.bad").count() === 1 && text.includes("VERIFICATION FAILED"), `a tampered receipt: ${text}, want VERIFICATION FAILED`);
  check(await out.locator(".verify.ok, .badge.ok, pre.output").count() === 0, `a tampered receipt shown with a verified part or an output: ${text}`);
  check(!text.includes("Hello, Tampered"), `a tampered call's output is shown: ${text}`);
  console.log(`# tampered: ${text.replace(/\s+/g, " ").slice(0, 200)}`);
  await shot(tp, "invoke-tampered");
  await tp.close();
});

// chartInfo returns, for the chart (figure) with id in page: its data-max,
// its value count, each series' data-max by name, and its axis labels.
async function chartInfo(page, id) {
  return page.locator("#" + id).evaluate((fig) => ({
    max: Number(fig.dataset.max),
    values: Number(fig.dataset.values),
    series: Object.fromEntries([...fig.querySelectorAll("g.series")].map((g) => [g.dataset.series, g.dataset.max === "" ? null : Number(g.dataset.max)])),
    labels: [...fig.querySelectorAll("g.axis text")].map((t) => t.textContent),
    legend: [...fig.querySelectorAll(".legend li")].map((li) => li.textContent),
    svgs: fig.querySelectorAll("svg").length,
  }));
}

step("the ledger page charts the audited invocations and instructions over time", async () => {
  await page.goto(origin + "/#ledger");
  await page.locator("h2:has-text('Checkpoint') .badge").waitFor();
  await page.locator("#audit-btn").click();
  await page.locator("#ledger-charts, #bill .error").first().waitFor({ timeout: LONG });
  const text = await page.locator("#bill").innerText();
  check(await page.locator("#ledger-charts figure.chart svg").count() === 2, `the ledger shows no two charts: ${text}`);
  const inv = await chartInfo(page, "chart-ledger-invocations");
  const ins = await chartInfo(page, "chart-ledger-instructions");
  console.log(`# ledger charts: invocations max ${inv.max} per bucket over ${inv.values} bucket(s), instructions max ${ins.max}`);
  check(inv.max >= 1 && inv.values >= 1 && inv.series.ok >= 1, `the invocations chart holds no invocation: ${JSON.stringify(inv)}`);
  check(ins.max > 0, `the instructions chart holds no instruction: ${JSON.stringify(ins)}`);
  check(inv.labels.length >= 3 && ins.labels.length >= 3, `a ledger chart has no axis labels: ${JSON.stringify([inv.labels, ins.labels])}`);
  check(inv.legend.some((l) => l.includes("ok")) && inv.legend.some((l) => l.includes("failed")), `the invocations chart's legend: ${inv.legend}`);
  // The bars add up to the bill.
  const billed = await page.locator("#bill").evaluate((b) => [...b.querySelectorAll("tbody tr")].reduce((a, tr) => a + Number(tr.children[2].textContent), 0));
  const charted = await page.locator("#chart-ledger-invocations").evaluate((fig) => [...fig.querySelectorAll("rect.bar title")].reduce((a, t) => a + Number(t.textContent.split(": ").pop()), 0));
  check(charted === billed, `the invocations charted add up to ${charted}, the bill to ${billed}`);
  await noScriptInjected(page, "the ledger's charts");
  await shot(page, "ledger-charts");
});

step("the metrics page charts throughput, latency, errors and pools from the platform's metrics", async () => {
  // The console scrapes from the first visit on: the calls made next show
  // as a rate at the following scrape.
  await page.goto(origin + "/#metrics");
  await page.locator("#chart-throughput").waitFor();
  check(await page.locator("#nav a[data-page='metrics'][aria-current='page']").count() === 1, "the Metrics link is not the current page");
  for (let i = 0; i < 3; i++) {
    await expectVerifiedResult(await invokeOn(page, "hello-js", { name: "Metrics " + i }), "hello-js", "Hello, Metrics " + i);
  }
  const missing = await invokeOn(page, "no-such-function", { name: "Ada" }); // a refusal: not_found
  check(await missing.locator(".error").count() === 1, `invoking a missing function: ${await missing.innerText()}`);
  await page.goto(origin + "/#metrics");
  let thr;
  let errs;
  for (let i = 0; i < 40; i++) {
    await page.locator("#chart-throughput").waitFor();
    thr = await chartInfo(page, "chart-throughput");
    errs = await chartInfo(page, "chart-errors");
    if (thr.series["invocations/s (workers)"] > 0 && errs.max > 0) break;
    await page.waitForTimeout(1000); // the page redraws itself
  }
  const lat = await chartInfo(page, "chart-latency");
  const pools = await chartInfo(page, "chart-pools");
  console.log(`# metrics: throughput ${JSON.stringify(thr.series)}; latency ${JSON.stringify(lat.series)}; errors ${JSON.stringify(errs.series)}; pools ${JSON.stringify(pools.series)}`);
  check(thr.series["invocations/s (workers)"] > 0, `no throughput point above zero after 3 calls: ${JSON.stringify(thr)}\n${await page.locator("main").innerText()}`);
  check(lat.values > 0 && lat.series["p99 at the gateway"] > 0, `the latency chart holds no value: ${JSON.stringify(lat)}`);
  check(Object.keys(errs.series).some((k) => k.includes("not_found")), `the errors chart has no not_found: ${JSON.stringify(errs.series)}`);
  check(pools.svgs === 1 && "slots in use" in pools.series, `the pools chart: ${JSON.stringify(pools)}`);
  for (const c of [thr, lat, errs, pools]) check(c.labels.length >= 4 && c.legend.length >= 1, `a chart without axis labels or legend: ${JSON.stringify(c)}`);
  check(await page.locator("main .error").count() === 0, `a scrape failed: ${await page.locator("main").innerText()}`);
  const src = await page.locator("main table").innerText();
  check(src.includes("/metrics") && src.includes("api key"), `the sources table: ${src}`);
  // It fits at 390 px: nothing wider than the window.
  await page.setViewportSize({ width: 390, height: 900 });
  await page.reload();
  await page.locator("#chart-throughput").waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, `the metrics page is ${overflow} px wider than a 390 px window`);
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.reload();
  await page.locator("#chart-throughput").waitFor();
  await noScriptInjected(page, "the metrics page");
  await shot(page, "metrics");
  // Leaving the page stops its redraws.
  await page.goto(origin + "/#overview");
  await page.locator("h1:text('Overview')").waitFor();
  await page.waitForTimeout(6000);
  check(await page.locator("h1:text('Overview')").count() === 1, "the metrics page redrew itself over another page");
});

step("no page error, dialog or CSP violation anywhere", async () => {
  check(pageErrors.length === 0, `page errors: ${pageErrors.join("; ")}`);
  check(dialogs.length === 0, `dialogs: ${dialogs.join("; ")}`);
  check(cspViolations.length === 0, `CSP violations: ${cspViolations.join("; ")}`);
});

(async () => {
  fs.mkdirSync(shotsDir, { recursive: true });
  for (const f of fs.readdirSync(shotsDir)) if (f.endsWith(".png")) fs.rmSync(path.join(shotsDir, f));
  browser = await chromium.launch({ executablePath: env("CHROMIUM"), headless: true, args: ["--disable-dev-shm-usage"] });
  let failed = false;
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    context.setDefaultTimeout(30000);
    page = watch(await context.newPage());
    for (const [name, fn] of steps) {
      const t0 = Date.now();
      try {
        await fn();
        console.log(`ok - ${name} (${Date.now() - t0} ms)`);
      } catch (e) {
        failed = true;
        console.log(`FAIL - ${name}: ${e instanceof CheckError ? e.message : e.stack}`);
        try {
          await page.screenshot({ path: path.join(shotsDir, "failure.png"), fullPage: true });
          console.log(`# the page at the failure: ${path.join(shotsDir, "failure.png")}\n${(await page.locator("body").innerText()).slice(0, 2000)}`);
        } catch {
          // the page is gone
        }
        break;
      }
    }
  } finally {
    await browser.close();
  }
  console.log(`# screenshots in ${shotsDir}`);
  process.exit(failed ? 1 : 0);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
