// The Cloister console's front end. It talks only to the local
// `cloister console` process, which does all verification. Everything that
// comes from the server is inserted as text (textContent, text nodes),
// never as HTML.

import { barChart, lineChart, seconds } from "./charts.js";

const TOKEN_KEY = "cloister-console-token";
const TOKEN_HEADER = "X-Cloister-Console-Token";

// takeToken moves the token from the URL into sessionStorage, and removes
// it from the address bar and the history.
function takeToken() {
  const url = new URL(window.location.href);
  const t = url.searchParams.get("token");
  if (t) {
    sessionStorage.setItem(TOKEN_KEY, t);
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

let token = takeToken();

// el builds an element. attrs sets properties (className, type, value...)
// or, for names with a dash, attributes; children are nodes or strings,
// and strings become text nodes.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k.includes("-")) e.setAttribute(k, String(v));
    else e[k] = v;
  }
  append(e, children);
  return e;
}

function append(parent, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    parent.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return parent;
}

class APIError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || "HTTP " + status);
    this.status = status;
    this.kind = e.kind || "";
    this.code = e.code || "";
    this.body = body || {};
  }
}

// api calls the local console's JSON API with the token.
async function api(method, path, body) {
  const headers = { [TOKEN_HEADER]: token };
  let payload;
  if (body instanceof FormData) {
    payload = body;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const resp = await fetch(path, { method, headers, body: payload, credentials: "same-origin", cache: "no-store" });
  let data = null;
  try {
    data = await resp.json();
  } catch {
    data = null;
  }
  if (resp.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    token = "";
    showLogin("The console refused the token. Paste the URL or the token that `cloister console` printed.");
    throw new APIError(401, data);
  }
  if (!resp.ok && !(data && data.ok === false && data.receipt)) throw new APIError(resp.status, data);
  return data;
}

const main = () => document.getElementById("main");

function setPage(...children) {
  const m = main();
  m.replaceChildren();
  append(m, children);
}

function showLogin(message) {
  const input = el("input", { type: "password", id: "token-input", autocomplete: "off", placeholder: "token", "aria-label": "Console token" });
  const form = el("form", {
    className: "card login",
    onsubmit: (ev) => {
      ev.preventDefault();
      let t = input.value.trim();
      const m = t.match(/[?&]token=([0-9a-fA-F]+)/);
      if (m) t = m[1];
      sessionStorage.setItem(TOKEN_KEY, t);
      token = t;
      route().then(simCheck);
    },
  },
  el("h2", {}, "Log in"),
  el("p", {}, message || "Open the URL that `cloister console` printed, or paste its token here."),
  input, " ", el("button", { type: "submit" }, "Open"));
  setPage(form);
}

// Small views.

function badge(ok, okText, failText) {
  return el("span", { className: "badge " + (ok ? "ok" : "bad") }, ok ? okText || "verified" : failText || "NOT verified");
}

function verificationBox(v) {
  if (!v) return null;
  if (!v.ok) {
    return el("div", { className: "verify bad", role: "alert" },
      el("strong", {}, "VERIFICATION FAILED"), " — do not trust this answer.",
      v.error ? el("pre", { className: "wrap" }, v.error) : null);
  }
  return el("div", { className: "verify ok" },
    el("strong", {}, "Verified by this machine"),
    el("ul", {}, (v.checks || []).map((c) => el("li", {}, c))));
}

function errorBox(err) {
  if (err.kind === "verification") {
    return verificationBox({ ok: false, error: err.message });
  }
  return el("div", { className: "error", role: "alert" },
    el("strong", {}, err.kind ? err.kind.replace("_", " ") : "error"),
    err.code ? " (" + err.code + ")" : "", ": ", err.message);
}

function kv(rows) {
  return el("dl", { className: "kv" }, rows.filter((r) => r).map(([k, v, hint]) => [
    el("dt", {}, k, hint ? el("span", { className: "hint" }, hint) : null),
    el("dd", {}, v === undefined || v === null || v === "" ? el("span", { className: "muted" }, "—") : v instanceof Node ? v : String(v)),
  ]));
}

function mono(s) {
  return el("code", { className: "mono" }, s || "");
}

// table renders rows under head. A head entry is a label, or
// { label, cls }: cls goes on the column's header and cells (the style
// sheet hides the "opt-wide" columns on narrower screens and the
// "opt-narrow" ones on phones; "wrap-cell" lets a column wrap).
function table(head, rows, empty) {
  if (!rows.length) return el("p", { className: "muted" }, empty || "Nothing yet.");
  const cols = head.map((h) => (typeof h === "object" && h !== null && !(h instanceof Node) ? h : { label: h }));
  return el("div", { className: "scroll" },
    el("table", {},
      el("thead", {}, el("tr", {}, cols.map((h) => el("th", { scope: "col", className: h.cls }, h.label)))),
      el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c, i) => el("td", { className: cols[i] && cols[i].cls }, c instanceof Node ? c : String(c ?? ""))))))));
}

// pager is a list's paging control: links to the first page (when this
// is not it) and to the next (when there is one).
function pager(firstHref, nextHref, nextText, what) {
  if (!firstHref && !nextHref) return null;
  return el("div", { className: "pager", role: "navigation", "aria-label": "Pages of " + what },
    firstHref ? el("a", { href: firstHref, className: "pager-first" }, "← " + (what === "activations" ? "Newest" : "First page")) : null,
    nextHref ? el("a", { href: nextHref, className: "pager-next", rel: "next" }, nextText + " →") : null);
}

// hashQuery is the query of the address's hash (#page?k=v).
function hashQuery() {
  return new URLSearchParams(location.hash.split("?")[1] || "");
}

function short(h, n = 12) {
  return h && h.length > n ? h.slice(0, n) + "…" : h || "";
}

function hashCell(h, n = 16) {
  return el("code", { className: "mono", title: h || "" }, short(h, n));
}

function when(t) {
  if (!t) return "";
  const d = new Date(t);
  return isNaN(d) ? String(t) : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function loading(what) {
  setPage(el("p", { className: "muted" }, "Loading " + what + "…"));
}

function setSimBanner(on) {
  document.getElementById("sim-banner").hidden = !on;
}

// Receipts: each field, with what it means.

const RECEIPT_FIELDS = [
  ["invocation_id", "Invocation", "unique ID the worker gave this call"],
  ["namespace", "Namespace", "the namespace the function lives in"],
  ["function", "Function", "the function that ran"],
  ["function_version", "Version", "the version that ran"],
  ["code_sha256", "Code hash", "SHA-256 of the code the owner signed"],
  ["instrumented_code_sha256", "Instrumented code", "SHA-256 of the module that actually ran (after metering)"],
  ["bundle_sha256", "Bundle hash", "SHA-256 of the signed bundle"],
  ["snapshot_sha256", "Snapshot hash", "the state every call starts from, certified at deploy"],
  ["reset_generation", "Reset generation", "how many times the instance was reset"],
  ["mode", "Mode", "hpke/session: sealed end to end; plain: the gateway saw the data"],
  ["request_sha256", "Request hash", "SHA-256 of the (sealed) request as sent"],
  ["response_sha256", "Response hash", "SHA-256 of the (sealed) response as returned"],
  ["status", "Status", "ok, or the error code of a failed call"],
  ["tee", "TEE", "where it ran: the worker certificate's TEE kind, TCB and measurement"],
  ["worker_id", "Worker", "the worker that signed this receipt"],
  ["time", "Time", "when the worker signed it"],
  ["caller_sha256", "Caller", "hash of the key that signed the request (empty: anonymous)"],
  ["trust", "Trust", "gateway-trusted for a plaintext call"],
  ["sequence", "Sequence", "the sequence this is a step of"],
  ["step", "Step", "its step number"],
  ["prev", "Previous", "ledger hash of the previous step's receipt"],
  ["metering", "Metering", "what the worker measured: instructions, time, memory, bytes"],
  ["v", "Receipt format", "version of the receipt format"],
];

function fieldText(v) {
  if (v === undefined || v === null || v === "") return null;
  if (typeof v === "object") {
    return el("code", { className: "mono wrap" }, Object.entries(v).map(([k, x]) => k + "=" + (typeof x === "object" ? JSON.stringify(x) : x)).join("  "));
  }
  return typeof v === "string" && /^[0-9a-f]{32,}$/.test(v) ? mono(v) : String(v);
}

function receiptView(r, verified) {
  if (!r) return null;
  const rows = RECEIPT_FIELDS.filter(([k]) => r[k] !== undefined && r[k] !== "" && r[k] !== null)
    .map(([k, label, hint]) => [label, fieldText(r[k]), hint]);
  return el("section", { className: "card" },
    el("h3", {}, "Receipt ", badge(verified)),
    kv(rows));
}

function outputView(res) {
  const out = res.output_base64 ? "(binary, base64) " + res.output_base64 : res.output;
  return el("pre", { className: "output wrap" }, out || "");
}

// Pages.

async function overview() {
  loading("the attestation");
  const o = await api("GET", "/api/overview");
  const a = o.attestation;
  setSimBanner(a.sim);
  const att = el("section", { className: "card" },
    el("h2", {}, "Attestation ", badge(a.ok)),
    a.ok ? null : verificationBox(a),
    kv([
      ["TEE kind", a.tee ? el("span", { className: a.sim ? "sim-text" : "" }, a.tee + (a.sim ? " (simulation: no hardware protection)" : "")) : null],
      ["Measurement", mono(a.measurement)],
      ["Manifest hash", mono(a.manifest_hash)],
      ["TCB", a.tcb],
      ["Identity key", mono(a.identity_key)],
      ["Ledger origin", a.ledger_origin],
      ["Verified at", when(a.verified_at)],
      a.warning ? ["Warning", el("strong", { className: "sim-text" }, a.warning)] : null,
    ]),
    a.ok ? verificationBox(a) : null);
  const pol = el("section", { className: "card" },
    el("h2", {}, "Your policy"),
    el("p", { className: "muted" }, "What the evidence was checked against (CLOISTER_POLICY)."),
    o.policy_allows_sim ? el("p", { className: "sim-text" }, "This policy accepts sim evidence.") : null,
    el("pre", { className: "wrap" }, JSON.stringify(o.policy, null, 2)),
    kv([["Namespace", o.namespace || "(the API key's)"], ["Your caller key hash", mono(o.caller_sha256)], ["Can deploy", o.can_deploy ? "yes (owner key held)" : "no owner key"]]));
  const workers = el("section", { className: "card" },
    el("h2", {}, "Admitted workers"),
    el("p", { className: "muted" }, "Each certificate verified against the attested coordinator."),
    table(["Worker", "TEE", "TCB", "Certificate expires", ""],
      o.workers.map((w) => [el("span", { title: "measurement " + w.measurement }, w.worker_id), w.tee, w.tcb, when(w.not_after), w.expired ? badge(false, "", "expired") : badge(true, "valid")]),
      "No admitted workers."));
  const health = el("section", { className: "card" },
    el("h2", {}, "Node health"),
    el("p", { className: "muted" }, "Health is what the gateways say, not proof: the attestation is the proof."),
    table(["Gateway", "Live", "Ready", "Detail"],
      (o.health || []).map((h) => [h.url, h.live ? "yes" : "no", h.ready ? "yes" : "no", h.error || ""]), "No gateways configured."));
  setPage(el("h1", {}, "Overview"), el("div", { className: "grid" }, att, pol, workers, health));
}

// FUNCTION_PAGE and ACTIVATION_PAGE are how many rows a list page shows;
// the console pages through the gateway's lists (?after=, ?before=).
const FUNCTION_PAGE = 50;
const ACTIVATION_PAGE = 50;

async function functions() {
  loading("functions");
  const after = hashQuery().get("after") || "";
  let list = [];
  let next = "";
  let listErr = null;
  try {
    const p = new URLSearchParams({ limit: String(FUNCTION_PAGE) });
    if (after) p.set("after", after);
    const r = await api("GET", "/api/functions?" + p.toString());
    list = r.functions;
    next = r.next || "";
  } catch (e) {
    if (e.status === 401) return;
    listErr = e;
  }
  const status = el("div", { id: "deploy-status" });
  const nameIn = el("input", { name: "name", id: "deploy-name", required: true, pattern: "[a-z0-9][a-z0-9_\\-]{0,62}", placeholder: "hello", autocomplete: "off" });
  const fileIn = el("input", { type: "file", name: "file", id: "deploy-file", required: true, accept: ".wasm,.js,.py" });
  const manIn = el("textarea", { name: "manifest", id: "deploy-manifest", rows: 4, placeholder: '{"limits": {"timeout_ms": 2000}}  (optional)' });
  const form = el("form", {
    className: "card",
    onsubmit: async (ev) => {
      ev.preventDefault();
      status.replaceChildren(el("p", { className: "muted" }, "Signing with your owner key and deploying…"));
      const fd = new FormData();
      fd.append("file", fileIn.files[0]);
      fd.append("manifest", manIn.value);
      try {
        const r = await api("POST", "/api/functions/" + encodeURIComponent(nameIn.value), fd);
        const f = r.function;
        status.replaceChildren(el("p", { className: "ok-text" }, "Deployed " + f.name + " v" + f.version + ", code " + short(f.code_sha256)));
        setTimeout(route, 600);
      } catch (e) {
        if (e.status !== 401) status.replaceChildren(errorBox(e));
      }
    },
  },
  el("h2", {}, "Deploy"),
  el("p", { className: "muted" }, "A .wasm module, a .js or a .py script, signed here by your owner key, then uploaded."),
  el("div", { className: "form-row" },
    el("label", { htmlFor: "deploy-name" }, "Name"), nameIn,
    el("label", { htmlFor: "deploy-file" }, "File"), fileIn),
  el("label", { htmlFor: "deploy-manifest" }, "Manifest (JSON, optional)"), manIn,
  el("div", {}, el("button", { type: "submit" }, "Sign and deploy")),
  status);

  const detail = el("div", { id: "function-detail" });
  const rows = list.map((f) => [
    el("a", { href: "#invoke/" + encodeURIComponent(f.name) }, f.name),
    String(f.version) + (f.latest && f.latest !== f.version ? " (latest " + f.latest + ")" : ""),
    [f.runtime, f.abi].filter(Boolean).join(" / "),
    f.confidential,
    hashCell(f.owner_key, 10),
    hashCell(f.code_sha256, 10),
    hashCell(f.snapshot_sha256, 10),
    f.suite || "",
    f.certificate.ok ? badge(true) : el("span", { title: f.certificate.error || "" }, badge(false)),
    el("span", { className: "actions" },
      el("button", {
        className: "small-btn", type: "button", "aria-label": "Details of " + f.name,
        onclick: async () => {
          try {
            detail.replaceChildren(functionDetail((await api("GET", "/api/functions/" + encodeURIComponent(f.name))).function));
            detail.scrollIntoView({ block: "nearest" });
          } catch (e) {
            if (e.status !== 401) detail.replaceChildren(errorBox(e));
          }
        },
      }, "Details"),
      el("button", {
        className: "danger small-btn", type: "button", "aria-label": "Delete " + f.name,
        onclick: async () => {
          if (!confirm("Delete " + f.name + " and all its versions?")) return;
          try {
            await api("DELETE", "/api/functions/" + encodeURIComponent(f.name));
            route();
          } catch (e) {
            if (e.status !== 401) status.replaceChildren(errorBox(e));
          }
        },
      }, "Delete")),
  ]);
  const head = [
    { label: "Name", cls: "wrap-cell" }, "Version", { label: "Runtime", cls: "opt-narrow wrap-cell" }, { label: "Confidential", cls: "opt-narrow" },
    { label: "Owner key", cls: "opt-narrow" }, { label: "Code", cls: "opt-narrow" }, { label: "Snapshot", cls: "opt-wide" },
    { label: "Suite", cls: "opt-wide wrap-cell" }, "Certificate", { label: "", cls: "wrap-cell" },
  ];
  const paging = pager(after ? "#functions" : "", next ? "#functions?after=" + encodeURIComponent(next) : "", "Next page", "functions");
  const listCard = el("section", { className: "card" },
    el("h2", {}, "Functions"),
    el("p", { className: "muted" }, "Runtime, confidential mode, owner key, hashes and sealing suite come from each certificate, verified by this console against the attested coordinator. Limits (in Details) are the gateway's report of the manifest."),
    after ? el("p", { className: "muted small" }, "Functions after ", mono(after), ", in name order.") : null,
    listErr ? errorBox(listErr) : table(head, rows, after ? "No functions after " + after + "." : "No functions yet: deploy one."),
    paging);
  setPage(el("h1", {}, "Functions"), form, listCard, detail);
}

function functionDetail(f) {
  const l = f.limits || {};
  return el("section", { className: "card" },
    el("h2", {}, f.namespace + "/" + f.name + " v" + f.version + " ", badge(f.certificate.ok)),
    f.certificate.ok ? null : verificationBox(f.certificate),
    kv([
      ["Runtime", f.runtime + (f.abi ? " (ABI " + f.abi + ")" : ""), "from the certificate"],
      ["Confidential", f.confidential, "required: sealed calls only; optional: plaintext allowed"],
      ["Owner key", mono(f.owner_key), "the key that signed the bundle"],
      ["Code hash", mono(f.code_sha256)],
      ["Snapshot hash", mono(f.snapshot_sha256), "the state every call starts from"],
      ["Bundle hash", mono(f.bundle_sha256)],
      ["Sealing suite", f.suite],
      ["Allowed TEEs", (f.allow_tee || []).join(", ") || "any the platform admits"],
      ["Min TCB", f.min_tcb ? Object.entries(f.min_tcb).map(([k, v]) => k + ": " + v).join(", ") : ""],
      ["Created", when(f.created)],
    ]),
    el("h3", {}, "Limits ", el("span", { className: "badge neutral" }, "gateway's report of the signed manifest")),
    kv([
      ["Memory", l.memory_pages !== undefined ? l.memory_pages + " pages (" + (l.memory_pages * 64) + " KiB)" : ""],
      ["Timeout", l.timeout_ms !== undefined ? l.timeout_ms + " ms" : ""],
      ["Max input", l.max_input_bytes !== undefined ? l.max_input_bytes + " bytes" : ""],
      ["Max output", l.max_output_bytes !== undefined ? l.max_output_bytes + " bytes" : ""],
      ["Concurrency", l.concurrency],
      ["Fuel", l.fuel || "platform default"],
    ]),
    f.manifest ? el("details", {}, el("summary", {}, "Manifest (JSON)"), el("pre", { className: "wrap small" }, JSON.stringify(f.manifest, null, 2))) : null,
    el("p", {}, el("a", { href: "#invoke/" + encodeURIComponent(f.name) }, "Invoke " + f.name + " →")));
}

async function invoke(name) {
  const nameIn = el("input", { id: "invoke-name", value: name || "", required: true, autocomplete: "off", placeholder: "function name" });
  const verIn = el("input", { id: "invoke-version", type: "number", min: "0", value: "0", className: "narrow" });
  const params = el("textarea", { id: "invoke-params", rows: 8, spellcheck: false, className: "mono" });
  params.value = '{\n  "name": "Ada"\n}';
  const jsonState = el("span", { className: "small", id: "json-state" }, "valid JSON");
  params.addEventListener("input", () => {
    try {
      JSON.parse(params.value);
      jsonState.textContent = "valid JSON";
      jsonState.className = "small ok-text";
    } catch (e) {
      jsonState.textContent = "not JSON: " + e.message;
      jsonState.className = "small bad-text";
    }
  });
  const logs = el("input", { type: "checkbox", id: "invoke-logs" });
  const async_ = el("input", { type: "checkbox", id: "invoke-async" });
  const out = el("div", { id: "invoke-result" });
  const form = el("form", {
    className: "card",
    onsubmit: async (ev) => {
      ev.preventDefault();
      let p;
      try {
        p = JSON.parse(params.value);
      } catch (e) {
        out.replaceChildren(errorBox({ kind: "bad_request", message: "params are not JSON: " + e.message }));
        return;
      }
      out.replaceChildren(el("p", { className: "muted" }, "Sealing and invoking…"));
      try {
        const r = await api("POST", "/api/invoke", { name: nameIn.value, version: Number(verIn.value) || 0, params: p, logs: logs.checked, async: async_.checked });
        if (async_.checked) {
          out.replaceChildren(el("section", { className: "card" },
            el("h3", {}, "Queued"),
            el("p", {}, "Activation ", el("a", { href: "#activations/" + r.activation_id }, mono(r.activation_id)), r.duplicate ? " (an earlier activation with this idempotency key)" : ""),
            el("p", { className: "muted" }, "This console holds the key that opens its result.")));
          return;
        }
        out.replaceChildren(resultSection(r));
      } catch (e) {
        if (e.status !== 401) out.replaceChildren(errorBox(e));
      }
    },
  },
  el("div", { className: "form-row" },
    el("label", { htmlFor: "invoke-name" }, "Function"), nameIn,
    el("label", { htmlFor: "invoke-version" }, "Version (0: latest)"), verIn),
  el("label", { htmlFor: "invoke-params" }, "Params (JSON) "), jsonState, params,
  el("div", { className: "form-row" },
    el("label", {}, logs, " return the function's logs"),
    el("label", {}, async_, " asynchronous")),
  el("div", {}, el("button", { type: "submit" }, "Invoke sealed")));
  setPage(el("h1", {}, "Invoke"),
    el("p", { className: "muted" }, "The params are sealed (HPKE) by the console process to the function's certified key: only the attested worker opens them."),
    form, out);
}

function resultSection(r) {
  const parts = [];
  if (r.ok) {
    parts.push(el("section", { className: "card" }, el("h3", {}, "Result ", badge(true)), outputView(r)));
  } else if (r.error) {
    parts.push(el("section", { className: "card" }, el("h3", {}, "The function failed"), errorBox(r.error)));
  }
  if (r.logs !== undefined && r.logs !== null) {
    parts.push(el("section", { className: "card" }, el("h3", {}, "Logs"), el("pre", { className: "output wrap" }, r.logs || "(nothing on stderr)")));
  }
  parts.push(verificationBox(r.verification));
  parts.push(receiptView(r.receipt, r.verification && r.verification.ok));
  if (r.worker) {
    parts.push(el("section", { className: "card" }, el("h3", {}, "Worker"),
      kv([["Worker", r.worker.worker_id], ["TEE", r.worker.tee], ["TCB", r.worker.tcb], ["Measurement", mono(r.worker.measurement)], ["Certificate expires", when(r.worker.not_after)]])));
  }
  if (r.signed_receipt) {
    const status = el("div", {});
    parts.push(el("section", { className: "card" },
      el("h3", {}, "Ledger"),
      el("button", {
        type: "button",
        onclick: async () => {
          status.replaceChildren(el("p", { className: "muted" }, "Proving inclusion…"));
          try {
            status.replaceChildren(inclusionView(await api("POST", "/api/ledger/inclusion", { receipt: r.signed_receipt })));
          } catch (e) {
            if (e.status !== 401) status.replaceChildren(errorBox(e));
          }
        },
      }, "Prove inclusion in the ledger"),
      status,
      el("details", {}, el("summary", {}, "Signed receipt (JSON)"), el("pre", { className: "wrap small" }, JSON.stringify(r.signed_receipt, null, 2)))));
  }
  return el("div", {}, parts);
}

function inclusionView(r) {
  if (!r.included) return el("div", {}, el("p", {}, "Not in a checkpoint yet: ", r.note || "", ". Try again in a moment."), verificationBox(r.verification));
  return el("div", {},
    kv([["Index", r.index], ["Checkpoint size", r.checkpoint.size], ["Root hash", mono(r.checkpoint.root_hash)], ["Origin", r.checkpoint.origin]]),
    verificationBox(r.verification));
}

async function activations(id) {
  if (id) return activation(id);
  const q = hashQuery();
  const fn = el("input", { id: "act-function", value: q.get("function") || "", placeholder: "any function", autocomplete: "off" });
  const st = el("select", { id: "act-status" },
    ["", "queued", "running", "success", "application_error", "developer_error", "platform_error"].map((s) => el("option", { value: s, selected: q.get("status") === s }, s || "any status")));
  const since = el("select", { id: "act-since" },
    [["", "any time"], ["15m", "last 15 min"], ["1h", "last hour"], ["24h", "last day"]].map(([v, t]) => el("option", { value: v, selected: q.get("since") === v }, t)));
  const form = el("form", {
    className: "card form-row",
    onsubmit: (ev) => {
      ev.preventDefault();
      const p = new URLSearchParams();
      if (fn.value) p.set("function", fn.value);
      if (st.value) p.set("status", st.value);
      if (since.value) p.set("since", since.value);
      location.hash = "#activations?" + p.toString();
    },
  }, el("label", { htmlFor: "act-function" }, "Function"), fn, st, since, el("button", { type: "submit" }, "Filter"));
  setPage(el("h1", {}, "Activations"), form, el("p", { className: "muted" }, "Loading…"));
  const filters = new URLSearchParams();
  for (const k of ["function", "status", "since"]) if (q.get(k)) filters.set(k, q.get(k));
  const before = q.get("before") || "";
  const p = new URLSearchParams(filters);
  p.set("limit", String(ACTIVATION_PAGE));
  if (before) p.set("before", before);
  let r;
  try {
    r = await api("GET", "/api/activations?" + p.toString());
  } catch (e) {
    if (e.status !== 401) setPage(el("h1", {}, "Activations"), form, errorBox(e));
    return;
  }
  const here = (extra) => {
    const h = new URLSearchParams(filters);
    for (const [k, v] of Object.entries(extra)) h.set(k, v);
    const s = h.toString();
    return "#activations" + (s ? "?" + s : "");
  };
  const head = [
    "Activation", { label: "Function", cls: "wrap-cell" }, { label: "Version", cls: "opt-narrow" }, "Status", { label: "Submitted", cls: "opt-narrow" },
    { label: "Duration", cls: "opt-narrow" }, { label: "Attempts", cls: "opt-wide" }, "Key held",
  ];
  setPage(el("h1", {}, "Activations"), form,
    el("p", { className: "muted" }, r.note),
    before ? el("p", { className: "muted small" }, "Activations older than ", mono(short(before, 16)), ", newest first.") : null,
    el("section", { className: "card" }, table(head,
      r.activations.map((a) => [el("a", { href: "#activations/" + a.activation_id }, mono(short(a.activation_id, 16))), a.name, a.version, a.status, when(a.submitted), a.duration_ms + " ms", a.attempts, a.key_held ? "yes" : "no"]),
      before ? "No older activations match." : "No activations match."),
    pager(before ? here({}) : "", r.next ? here({ before: r.next }) : "", "Older", "activations")));
}

async function activation(id) {
  loading("activation " + id);
  const r = await api("GET", "/api/activations/" + encodeURIComponent(id));
  const a = r.record;
  const parts = [el("h1", {}, "Activation"),
    el("p", {}, el("a", { href: "#activations" }, "← all activations")),
    el("section", { className: "card" },
      el("h2", {}, "Record ", el("span", { className: "badge neutral" }, "gateway's word")),
      kv([["ID", mono(a.activationId)], ["Function", a.namespace + "/" + a.name], ["Version", a.version], ["Kind", a.kind], ["Mode", a.mode], ["Status", a.status],
        ["Submitted", when(a.submitted)], ["Duration", (a.duration || 0) + " ms"], ["Attempts", a.attempts], ["Worker", a.worker], ["Trigger", a.trigger]])),
    el("section", { className: "card" }, el("h3", {}, "Platform log lines"), el("pre", { className: "output wrap" }, (r.platform_logs || []).join("\n") || "(none)"))];
  if (r.pending) parts.push(el("p", { className: "muted" }, "Not finished yet. ", el("button", { type: "button", onclick: route }, "Refresh")));
  if (r.note) parts.push(el("p", { className: "muted" }, r.note));
  if (r.result) parts.push(resultSection(r.result));
  setPage(parts);
}

async function ledger() {
  loading("the ledger");
  const parts = [el("h1", {}, "Ledger")];
  try {
    const r = await api("GET", "/api/ledger");
    parts.push(el("section", { className: "card" },
      el("h2", {}, "Checkpoint ", badge(r.verification.ok)),
      kv([["Origin", r.checkpoint.origin], ["Size", r.checkpoint.size], ["Root hash", mono(r.checkpoint.root_hash)],
        r.previous ? ["Previously verified size", r.previous.size] : null]),
      verificationBox(r.verification),
      el("details", {}, el("summary", {}, "Signed note"), el("pre", { className: "wrap small" }, r.note))));
  } catch (e) {
    if (e.status === 401) return;
    parts.push(errorBox(e));
  }
  const billOut = el("div", { id: "bill" });
  parts.push(el("section", { className: "card" },
    el("h2", {}, "Bill"),
    el("p", { className: "muted" }, "Replays the whole log, verifies every receipt and sums the metering per function (as `cloister ledger audit`)."),
    el("button", {
      type: "button", id: "audit-btn",
      onclick: async () => {
        billOut.replaceChildren(el("p", { className: "muted" }, "Auditing…"));
        try {
          billOut.replaceChildren(billWithCharts(await api("GET", "/api/ledger/bill")));
        } catch (e) {
          if (e.status !== 401) billOut.replaceChildren(e.body && e.body.bill ? billWithCharts(e.body) : errorBox(e));
        }
      },
    }, "Audit the ledger"),
    billOut));
  const rIn = el("textarea", { id: "inclusion-receipt", rows: 5, className: "mono", placeholder: "a signed receipt, as `cloister invoke --receipt-out` saves it" });
  const incOut = el("div", {});
  parts.push(el("form", {
    className: "card",
    onsubmit: async (ev) => {
      ev.preventDefault();
      let rc;
      try {
        rc = JSON.parse(rIn.value);
      } catch (e) {
        incOut.replaceChildren(errorBox({ kind: "bad_request", message: "not JSON: " + e.message }));
        return;
      }
      try {
        incOut.replaceChildren(inclusionView(await api("POST", "/api/ledger/inclusion", { receipt: rc })));
      } catch (e) {
        if (e.status !== 401) incOut.replaceChildren(errorBox(e));
      }
    },
  }, el("h2", {}, "Inclusion proof of a receipt"), el("label", { htmlFor: "inclusion-receipt" }, "Signed receipt (JSON)"), rIn, el("div", {}, el("button", { type: "submit" }, "Verify")), incOut));
  setPage(parts);
}

function billView(b) {
  return el("div", {},
    kv([["Checkpoint size", b.checkpoint && b.checkpoint.size], ["Entries audited", b.entries], ["Root matches", b.root_matches ? "yes" : "NO"], ["Duplicates", b.duplicates]]),
    verificationBox(b.verification),
    b.problems && b.problems.length ? el("ul", { className: "bad-text" }, b.problems.map((p) => el("li", {}, p))) : null,
    table(["Namespace", "Function", "Invocations", "Failed", "Instructions", "Wall ms", "CPU ms", "In bytes", "Out bytes", "Peak pages"],
      b.bill.map((l) => [l.namespace, l.function, l.invocations, l.failed, l.instructions, (l.wall_ns / 1e6).toFixed(3), (l.cpu_ns / 1e6).toFixed(3), l.input_bytes, l.output_bytes, l.peak_memory_pages]),
      "No receipts in the ledger yet."));
}

// The metrics page: the gateways' and workers' Prometheus metrics, which
// the console scrapes every few seconds; the page redraws itself while it
// is shown.

let metricsTimer = null;

function stopMetricsTimer() {
  if (metricsTimer !== null) clearTimeout(metricsTimer);
  metricsTimer = null;
}

function currentPage() {
  return location.hash.replace(/^#/, "").split("?")[0].split("/")[0];
}

async function metrics() {
  stopMetricsTimer();
  if (!main().querySelector("#metrics-charts")) loading("the metrics");
  let v;
  try {
    v = await api("GET", "/api/metrics");
  } catch (e) {
    if (e.status === 401) return;
    if (currentPage() !== "metrics") return;
    setPage(el("h1", {}, "Metrics"), errorBox(e));
    scheduleMetrics(5);
    return;
  }
  if (currentPage() !== "metrics") return; // the user moved on meanwhile
  setPage(metricsView(v));
  scheduleMetrics(Math.min(5, Math.max(1, v.interval_seconds || 5)));
}

function scheduleMetrics(secs) {
  stopMetricsTimer();
  metricsTimer = setTimeout(() => {
    metricsTimer = null;
    if (currentPage() === "metrics" && token) metrics();
  }, secs * 1000);
}

function metricsView(v) {
  const pts = v.points || [];
  const times = pts.map((p) => new Date(p.t).getTime());
  const col = (k) => pts.map((p) => (p[k] === undefined ? null : p[k]));
  const keys = (k) => [...new Set(pts.flatMap((p) => Object.keys(p[k] || {})))].sort();
  const rates = pts.filter((p) => p.invocations_per_s !== null).length;
  const throughput = lineChart({
    id: "chart-throughput", title: "Throughput", unit: "per second",
    times, series: [{ name: "invocations/s (workers)", values: col("invocations_per_s") }, { name: "HTTP requests/s (gateways)", values: col("requests_per_s") }],
  });
  const latency = lineChart({
    id: "chart-latency", title: "Latency of invocations", unit: "seconds", format: seconds, empty: "no invocation in this period",
    times, series: [
      { name: "p50 at the gateway", values: col("p50_s") }, { name: "p99 at the gateway", values: col("p99_s") },
      { name: "p50 in the worker", values: col("worker_p50_s") }, { name: "p99 in the worker", values: col("worker_p99_s") },
    ],
  });
  const errorKeys = keys("errors");
  const errors = barChart({
    id: "chart-errors", title: "Errors by code", unit: "per interval", seconds: v.interval_seconds, empty: "no error in this period",
    times, series: errorKeys.map((k) => ({ name: k, values: pts.map((p) => (p.errors ? p.errors[k] || 0 : null)) })),
  });
  const poolKeys = keys("pools");
  const pools = lineChart({
    id: "chart-pools", title: "Pools and slots", unit: "count", empty: "no pool or slot reported",
    times, series: [
      ...poolKeys.map((k) => ({ name: "sandboxes " + k, values: pts.map((p) => (p.pools ? p.pools[k] || 0 : null)) })),
      { name: "slots in use", values: col("slots_in_use") }, { name: "calls waiting for a slot", values: col("slots_waiting") },
    ],
  });
  const lastErr = pts.length ? pts[pts.length - 1].error : "";
  const sources = el("section", { className: "card" },
    el("h2", {}, "Sources"),
    table(["Endpoint", "Credential", "Last scrape", "Status"],
      (v.sources || []).map((s) => [s.url, s.auth, when(s.last_scrape), s.error ? el("span", { className: "bad-text" }, s.error) : "ok"]),
      "No endpoint to scrape."));
  return el("div", { id: "metrics-charts" },
    el("h1", {}, "Metrics ", el("span", { className: "badge neutral" }, "platform's word")),
    el("p", { className: "muted" }, v.note, " Scraped by this console: a point every ", String(v.interval_seconds), " s, the last ", String(v.capacity),
      " kept; this page redraws itself while it is open. Rates need two scrapes of a source."),
    rates < 1 ? el("p", { className: "muted", id: "metrics-collecting" }, "Collecting: the first rates come with the next scrape.") : null,
    lastErr ? el("div", { className: "error", role: "alert" }, el("strong", {}, "scrape failed"), ": ", lastErr) : null,
    el("div", { className: "charts" }, throughput, latency, errors, pools),
    sources);
}

// The ledger's charts: the audited receipts over time, by the time each
// receipt carries.

function ledgerCharts(s) {
  if (!s || !s.buckets) return null;
  const times = s.buckets.map((b) => new Date(b.start).getTime());
  const per = s.interval ? "per " + s.interval : "";
  return el("section", { className: "card", id: "ledger-charts" },
    el("h3", {}, "Over time"),
    el("p", { className: "muted" }, "The verified receipts counted above, " + per + ", by the time each receipt carries (UTC)."),
    el("div", { className: "charts" },
      barChart({
        id: "chart-ledger-invocations", title: "Invocations " + per, unit: "invocations", seconds: s.interval_seconds, empty: "no receipt yet",
        times, series: [
          { name: "ok", values: s.buckets.map((b) => b.invocations - b.failed) },
          { name: "failed", values: s.buckets.map((b) => b.failed) },
        ],
      }),
      barChart({
        id: "chart-ledger-instructions", title: "Instructions " + per, unit: "instructions", seconds: s.interval_seconds, empty: "no receipt yet",
        times, series: [{ name: "instructions (fuel)", values: s.buckets.map((b) => b.instructions) }],
      })));
}

function billWithCharts(b) {
  return el("div", {}, billView(b), ledgerCharts(b.series));
}

// Routing: #page or #page/arg.

const pages = { overview, functions, invoke, activations, ledger, metrics };

async function route() {
  if (!token) {
    showLogin();
    return;
  }
  const [page, arg] = location.hash.replace(/^#/, "").split("?")[0].split("/");
  const name = pages[page] ? page : "overview";
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.page === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  try {
    await pages[name](arg ? decodeURIComponent(arg) : undefined);
  } catch (e) {
    if (e instanceof APIError && e.status === 401) return;
    setPage(el("h1", {}, name[0].toUpperCase() + name.slice(1)), errorBox(e));
  }
}

// The sim banner shows on every page: ask once, whatever page opens first.
async function simCheck() {
  if (!token) return;
  try {
    const o = await api("GET", "/api/overview");
    setSimBanner(o.attestation.sim);
  } catch {
    // the page itself reports what failed
  }
}

window.addEventListener("hashchange", route);
route().then(() => {
  if (document.getElementById("sim-banner").hidden) simCheck();
});
