// smartpark alarm console: plain JavaScript, no build step, no third-party code.
// Everything the server sends is put into the page with textContent or as SVG attributes, never as HTML,
// so a comment, an operator name or a park name cannot run as script (the CSP forbids inline scripts too).
"use strict";

const T = {
  en: {
    title: "Alarm console", nav_active: "Active", nav_shelved: "Shelved", nav_oos: "Out of service",
    nav_overview: "Park overview", nav_history: "History", nav_handover: "Shift handover", nav_reports: "Reports",
    login_title: "Log in to the alarm console", user: "User", password: "Password", login: "Log in",
    logout: "Log out", site: "Site", priority: "Priority", all: "all", p_high: "high", p_medium: "medium",
    p_low: "low", state: "State", time: "Time", alarm: "Alarm", value: "Value", limit: "Limit",
    in_alarm: "In alarm", ack: "Acknowledge", ack_all: "Acknowledge all visible", shelve: "Shelve",
    unshelve: "Unshelve", oos: "Out of service", ins: "Return to service", detail: "Detail", by: "By",
    why: "Why", until: "Until", since: "Since", hours: "Hours", events: "Events", event: "Event",
    operator: "Operator", message: "Message", sensor: "Sensor", from: "From", to: "To", search: "Search",
    export_csv: "Export CSV", refresh: "Refresh", print: "Print", duration: "Duration", comment: "Comment",
    reason: "Reason (required)", ok: "OK", cancel: "Cancel", no_alarms: "No active alarms.",
    online: "live", offline: "offline", sound_on: "Sound on", sound_off: "Sound off",
    unacked: "unacknowledged", wrong_login: "Wrong user or password.", stale: "stale", no_data: "no data",
    handover_title: "Shift handover", kpis: "Alarm KPIs", actions: "Operator actions", shelved: "Shelved",
    out_of_service: "Out of service", active: "Active", period: "Period",
    k_alarms: "alarms raised", k_avg: "alarms per 10 min, average", k_peak: "alarms per 10 min, peak",
    k_flood: "time in flood (%)", k_chat: "chattering alarms", k_stale: "stale alarms (> 24 h)",
    k_actions: "operator actions", k_24h: "Alarm KPIs, last 24 h", k_flood_n: "10-min periods in flood",
    k_flood_def: "more than {n} alarms at one site in {m} min", k_chat_def: "{n} raises or more within {s} s",
    k_stale_def: "in alarm for more than {h} h", st_NORM: "normal", st_UNACK: "unacknowledged", st_ACKED: "acknowledged",
    st_RTNUN: "returned, unacknowledged", st_SHLVD: "shelved", st_OOSRV: "out of service",
    ack_all_confirm: "Acknowledge {n} alarms?", lang: "中文",
  },
  zh: {
    title: "报警控制台", nav_active: "活动报警", nav_shelved: "已搁置", nav_oos: "停用", nav_overview: "园区总览",
    nav_history: "历史", nav_handover: "交接班", nav_reports: "报表", login_title: "登录报警控制台", user: "用户",
    password: "密码", login: "登录", logout: "退出", site: "厂区", priority: "优先级", all: "全部", p_high: "高",
    p_medium: "中", p_low: "低", state: "状态", time: "时间", alarm: "报警", value: "值", limit: "限值",
    in_alarm: "持续", ack: "确认", ack_all: "确认全部可见", shelve: "搁置", unshelve: "取消搁置", oos: "停用",
    ins: "恢复", detail: "详情", by: "操作人", why: "原因", until: "截止", since: "开始", hours: "小时",
    events: "事件", event: "事件", operator: "操作人", message: "信息", sensor: "传感器", from: "从", to: "到",
    search: "查询", export_csv: "导出 CSV", refresh: "刷新", print: "打印", duration: "时长", comment: "备注",
    reason: "原因（必填）", ok: "确定", cancel: "取消", no_alarms: "没有活动报警。", online: "实时",
    offline: "离线", sound_on: "声音开", sound_off: "声音关", unacked: "未确认", wrong_login: "用户或密码错误。",
    stale: "数据过期", no_data: "无数据", handover_title: "交接班报告", kpis: "报警指标", actions: "操作记录",
    shelved: "已搁置", out_of_service: "停用", active: "活动报警", period: "时段", k_alarms: "报警次数",
    k_avg: "每10分钟报警数（平均）", k_peak: "每10分钟报警数（峰值）", k_flood: "报警泛滥时间 (%)",
    k_chat: "振荡报警", k_stale: "陈旧报警（超过24小时）", k_actions: "操作次数", k_24h: "报警指标（最近24小时）",
    k_flood_n: "报警泛滥时段（10分钟）", k_flood_def: "同一厂区 {m} 分钟内超过 {n} 条报警",
    k_chat_def: "{s} 秒内触发 {n} 次及以上", k_stale_def: "持续报警超过 {h} 小时", st_NORM: "正常",
    st_UNACK: "未确认", st_ACKED: "已确认", st_RTNUN: "已恢复未确认", st_SHLVD: "已搁置", st_OOSRV: "停用",
    ack_all_confirm: "确认 {n} 条报警？", lang: "English",
  },
};
const ROLES = ["viewer", "operator", "supervisor", "admin"];
const PRIO = { high: 0, medium: 1, low: 2 };
// the ISA-18.2 state codes by meaning, as the engine serves them with the park model (smartpark.schema)
let ST = {};
const SHELVE = [[900, "15 min"], [1800, "30 min"], [3600, "1 h"], [7200, "2 h"], [14400, "4 h"], [28800, "8 h"],
  [86400, "24 h"], [259200, "3 d"], [604800, "7 d"]];
const MAX_SHELVE = { operator: 28800, supervisor: 604800, admin: 604800 };

const S = {
  lang: localStorage.getItem("sp-lang") || (navigator.language || "en").startsWith("zh") ? "zh" : "en",
  session: null, park: null, sensors: new Map(), rows: new Map(), view: "active", detailId: null,
  lastEvent: null, lastId: "", source: null, unacked: new Set(), reconcileTimer: null, audio: null,
};
if (localStorage.getItem("sp-lang")) S.lang = localStorage.getItem("sp-lang");

const $ = (sel) => document.querySelector(sel);
const t = (key) => (T[S.lang] && T[S.lang][key]) || T.en[key] || key;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}
function svg(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

// ------------------------------------------------------------------ formatting
const formatters = new Map();
function fmtTime(ms) {
  if (!ms) return "";
  const tz = (S.park && S.park.timezone) || undefined, key = `${S.lang}|${tz}`;
  let f = formatters.get(key);  // one formatter per language and zone: building one costs more than formatting
  if (!f) {
    try {
      f = new Intl.DateTimeFormat(S.lang === "zh" ? "zh-CN" : "en-GB", {
        timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
        second: "2-digit", hour12: false });
    } catch (e) { f = { format: (d) => d.toISOString() }; }
    formatters.set(key, f);
  }
  return f.format(new Date(ms));
}
function fmtNum(v) {
  if (v === null || v === undefined) return "";
  // enough digits to see on which side of a limit a value lies
  const a = Math.abs(v);
  return a >= 1000 ? v.toFixed(1) : a >= 10 ? v.toFixed(2) : v.toPrecision(4).replace(/\.?0+$/, "");
}
function fmtDur(ms) {
  if (ms === null || ms === undefined || ms < 0) return "";
  const s = Math.floor(ms / 1000), d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600),
    m = Math.floor(s % 3600 / 60);
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : m ? `${m}m ${s % 60}s` : `${s % 60}s`;
}
function name(o) { return o ? (S.lang === "zh" && o.name_zh) || o.name || o.id : ""; }
function sensorOf(row) { return S.sensors.get(`${row.site}/${row.asset}/${row.sensor}`); }
function alarmLabel(row) {
  const s = sensorOf(row);
  if (!s) return `${row.site}/${row.asset}/${row.sensor} ${row.rule}`;
  return `${name(s.site)} · ${name(s.asset)} · ${name(s.sensor)} — ${row.rule}`;
}
function unit(row) { const s = sensorOf(row); return s ? s.sensor.unit : ""; }
function badge(state) { return el("span", { class: `badge st-${state}`, title: t(`st_${state}`) }, state); }
function allowed(role) { return S.session && ROLES.indexOf(S.session.role) >= ROLES.indexOf(role); }

// ------------------------------------------------------------------ HTTP
async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && S.session) headers["X-CSRF-Token"] = S.session.csrf;
  const r = await fetch(path, { method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (r.status === 401 && path !== "/api/login") { showLogin(); }
  if (!r.ok) { const err = new Error((data && data.error) || r.statusText); err.status = r.status; throw err; }
  return data;
}

// ------------------------------------------------------------------ language
function applyLang() {
  document.documentElement.lang = S.lang === "zh" ? "zh-CN" : "en";
  for (const e of document.querySelectorAll("[data-i18n]")) e.textContent = t(e.dataset.i18n);
  $("#lang").textContent = t("lang");
  document.title = t("title");
  updateSound();
  if (S.session) { fillSiteFilters(); render(); }
}

// ------------------------------------------------------------------ login and session
function showLogin() {
  S.session = null;
  if (S.source) { S.source.close(); S.source = null; }
  for (const v of document.querySelectorAll(".view")) v.hidden = true;
  $("#login-view").hidden = false;
  $("#nav").hidden = true; $("#logout").hidden = true; $("#sound").hidden = true; $("#who").textContent = "";
  $("#login-user").focus();
}
async function login(ev) {
  ev.preventDefault();
  $("#login-error").textContent = "";
  try {
    S.session = await api("POST", "/api/login", { user: $("#login-user").value, password: $("#login-password").value });
    $("#login-password").value = "";
    await start();
  } catch (e) {
    $("#login-error").textContent = e.status === 401 ? t("wrong_login") : e.message;
  }
}
async function logout() {
  try { await api("POST", "/api/logout", {}); } catch (e) { /* the session is gone either way */ }
  showLogin();
}
async function start() {
  $("#login-view").hidden = true;
  $("#nav").hidden = false; $("#logout").hidden = false; $("#sound").hidden = false;
  $("#who").textContent = `${S.session.user} (${S.session.role})`;
  document.body.dataset.role = S.session.role;
  for (const e of document.querySelectorAll(".op-only")) e.hidden = !allowed("operator");
  const [park, alarms] = await Promise.all([api("GET", "/api/park"), api("GET", "/alarms")]);
  S.park = park;
  ST = park.vocabulary.state;
  S.sensors.clear();
  for (const site of S.park.sites) for (const asset of site.assets) for (const sensor of asset.sensors)
    S.sensors.set(`${site.id}/${asset.id}/${sensor.id}`, { site, asset, sensor });
  fillSiteFilters();
  reconcile(alarms);
  connect();
  // a notification link /alarm/<id> opens that alarm once logged in
  const m = location.pathname.match(/^\/alarm\/(.+)$/);
  if (m && !location.hash) location.hash = `#/alarm/${m[1]}`;
  route();
}

// ------------------------------------------------------------------ the active list
async function loadAlarms() {
  const rows = await api("GET", "/alarms");
  reconcile(rows);
}
function reconcile(rows) {
  const seen = new Set();
  for (const r of rows) {
    seen.add(r.id);
    const old = S.rows.get(r.id);
    S.rows.set(r.id, Object.assign(old || {}, r));
    if (r.state === ST.unacked) S.unacked.add(r.id); else S.unacked.delete(r.id);
  }
  for (const id of [...S.rows.keys()]) if (!seen.has(id)) { S.rows.delete(id); S.unacked.delete(id); }
  renderActive();
  updateCue();
}
function onEvent(ev) {
  S.lastEvent = ev;
  const old = S.rows.get(ev.id);
  if (ev.state === ST.normal) {
    S.rows.delete(ev.id);
  } else {
    const row = Object.assign(old || { since: ev.ts, shelved_until: null }, {
      id: ev.id, site: ev.site, asset: ev.asset, sensor: ev.sensor, rule: ev.rule, priority: ev.priority,
      state: ev.state, limit: ev.limit === null ? (old && old.limit) : ev.limit,
      value: ev.value === null ? (old && old.value) : ev.value, message: ev.message });
    if (ev.event === "raised") { row.since = ev.ts; row.fresh = true; }
    if (ev.operator) { row.by = ev.operator; row.why = ev.message; row.changed = ev.ts; }
    S.rows.set(ev.id, row);
  }
  const wasUnacked = S.unacked.has(ev.id);
  if (ev.state === ST.unacked) S.unacked.add(ev.id); else S.unacked.delete(ev.id);
  if (ev.state === ST.unacked && !wasUnacked && ev.event === "raised") beep();
  renderActiveRow(ev.id);
  updateCounts();
  updateCue();
  if (S.view === "shelved" || S.view === "oos") renderLists();
  if (S.view === "detail" && S.detailId === ev.id) loadDetail();
  // shelving deadlines and other details come from the engine: fetch them shortly after, patching rows only
  clearTimeout(S.reconcileTimer);
  S.reconcileTimer = setTimeout(() => loadAlarms().catch(() => {}), 1500);
}
function visible(row) {
  if (row.state === ST.shelved || row.state === ST.out_of_service) return false;
  const site = $("#f-site").value, prio = $("#f-prio").value;
  return (!site || row.site === site) && (!prio || row.priority === prio);
}
function order(a, b) {
  return (PRIO[a.priority] ?? 3) - (PRIO[b.priority] ?? 3) || (b.since || 0) - (a.since || 0) || (a.id < b.id ? -1 : 1);
}
function actionButtons(row) {
  // the buttons name their action; one listener (onActionClick) finds the alarm from the data-id around them
  const box = el("span", { class: "acts", "data-id": row.id });
  if (allowed("operator") && (row.state === ST.unacked || row.state === ST.returned))
    box.append(el("button", { type: "button", class: "act-ack", "data-act": "ack" }, t("ack")));
  if (allowed("operator") && row.state !== ST.shelved && row.state !== ST.out_of_service)
    box.append(el("button", { type: "button", class: "act-shelve", "data-act": "shelve" }, t("shelve")));
  if (allowed("supervisor") && row.state === ST.shelved)
    box.append(el("button", { type: "button", class: "act-unshelve", "data-act": "unshelve" }, t("unshelve")));
  if (allowed("supervisor") && row.state !== ST.out_of_service)
    box.append(el("button", { type: "button", class: "act-oos", "data-act": "out-of-service" }, t("oos")));
  if (allowed("supervisor") && row.state === ST.out_of_service)
    box.append(el("button", { type: "button", class: "act-ins", "data-act": "in-service" }, t("ins")));
  box.append(el("a", { href: `#/alarm/${row.id}`, class: "act-detail" }, t("detail")));
  return box;
}
function rowElement(row) {
  const tr = el("tr", { "data-id": row.id, class: `pr-${row.priority} ${row.state}${row.fresh ? " new" : ""}` },
    el("td", { class: `pr-${row.priority}` }, t(`p_${row.priority}`)),
    el("td", null, badge(row.state), " ", el("span", { class: "st-text" }, t(`st_${row.state}`))),
    el("td", { class: "num" }, fmtTime(row.since)),
    el("td", null, el("a", { href: `#/alarm/${row.id}` }, alarmLabel(row))),
    el("td", { class: "num value" }, `${fmtNum(row.value)} ${unit(row)}`),
    el("td", { class: "num" }, row.limit === null || row.limit === undefined ? "" : `${fmtNum(row.limit)} ${unit(row)}`),
    el("td", { class: "num dur", "data-since": row.since || "" }, fmtDur(Date.now() - (row.since || Date.now()))),
    el("td", { class: "acts" }, actionButtons(row)));
  row.fresh = false;
  return tr;
}
function signature(r) { return `${r.state}|${r.value}|${r.limit}|${r.since}|${S.lang}|${r.priority}`; }
function renderActive() {
  // patches the list: rows whose content did not change stay the same DOM nodes
  const body = $("#active-table tbody");
  const rows = [...S.rows.values()].filter(visible).sort(order);
  const want = new Set(rows.map((r) => r.id));
  const existing = new Map();
  for (const tr of [...body.children]) {
    if (want.has(tr.dataset.id)) existing.set(tr.dataset.id, tr); else tr.remove();
  }
  if (!existing.size) {  // first render: one fragment, one insertion
    const frag = document.createDocumentFragment();
    for (const r of rows) { const tr = rowElement(r); tr.dataset.sig = signature(r); frag.append(tr); }
    body.append(frag);
  } else {
    let prev = null;
    for (const r of rows) {
      let tr = existing.get(r.id);
      const sig = signature(r);
      if (!tr || tr.dataset.sig !== sig) {
        const fresh = rowElement(r);
        fresh.dataset.sig = sig;
        if (tr) tr.replaceWith(fresh);
        tr = fresh;
      }
      const next = prev ? prev.nextSibling : body.firstChild;
      if (tr !== next) body.insertBefore(tr, next);
      prev = tr;
    }
  }
  $("#active-empty").hidden = rows.length > 0;
  updateCounts();
}
function renderActiveRow(id) {
  // one event: only its row moves or changes (the rest of the page stays as it is)
  const body = $("#active-table tbody");
  const old = body.querySelector(`tr[data-id="${CSS.escape(id)}"]`);
  const row = S.rows.get(id);
  if (old) old.remove();
  if (!row || !visible(row)) { $("#active-empty").hidden = body.children.length > 0; return; }
  const tr = rowElement(row);
  tr.dataset.sig = signature(row);
  let before = null;
  for (const other of body.children) {
    const o = S.rows.get(other.dataset.id);
    if (o && order(row, o) < 0) { before = other; break; }
  }
  body.insertBefore(tr, before);
  $("#active-empty").hidden = true;
}
function updateCounts() {
  const counts = {};
  for (const r of S.rows.values()) counts[r.state] = (counts[r.state] || 0) + 1;
  const box = $("#counts");
  const states = S.park ? S.park.vocabulary.states : [];  // none until the park model has arrived
  box.replaceChildren(...states.filter((s) => s !== ST.normal).map((s) =>
    el("span", { class: `count count-${s}`, "data-state": s }, badge(s), " ", t(`st_${s}`), ": ", counts[s] || 0)));
}
function updateCue() {
  const n = S.unacked.size, cue = $("#unacked-cue");
  cue.hidden = n === 0;
  cue.textContent = `${n} ${t("unacked")}`;
  cue.classList.toggle("flash", n > 0 && !soundSilenced());
}
function fillSiteFilters() {
  for (const sel of [$("#f-site"), $("#h-site")]) {
    const cur = sel.value;
    sel.replaceChildren(el("option", { value: "" }, t("all")),
      ...S.park.sites.map((s) => el("option", { value: s.id }, name(s))));
    sel.value = cur;
  }
}

// ------------------------------------------------------------------ audible cue, silenced per operator
function soundKey() { return `sp-sound-${S.session ? S.session.user : ""}`; }
function soundSilenced() { return localStorage.getItem(soundKey()) !== "on"; }
function updateSound() { $("#sound").textContent = soundSilenced() ? t("sound_off") : t("sound_on"); }
function toggleSound() {
  localStorage.setItem(soundKey(), soundSilenced() ? "on" : "off");
  updateSound(); updateCue();
  if (!soundSilenced()) beep();
}
function beep() {
  if (soundSilenced()) return;
  try {
    S.audio = S.audio || new AudioContext();
    const o = S.audio.createOscillator(), g = S.audio.createGain();
    o.frequency.value = 880; g.gain.value = 0.1;
    o.connect(g); g.connect(S.audio.destination);
    o.start(); o.stop(S.audio.currentTime + 0.25);
  } catch (e) { /* no audio device */ }
}

// ------------------------------------------------------------------ operator actions
let pending = null;
function onActionClick(ev) {
  const b = ev.target.closest("button[data-act]");
  if (!b) return;
  const holder = b.closest("[data-id]");
  const row = holder && (S.rows.get(holder.dataset.id) || { id: holder.dataset.id });
  if (row) act(b.dataset.act, row);
}
function act(action, row) {
  const dlg = $("#act-dialog");
  pending = { action, row };
  $("#act-title").textContent = t({ ack: "ack", shelve: "shelve", unshelve: "unshelve", "out-of-service": "oos",
    "in-service": "ins" }[action]);
  $("#act-alarm").textContent = alarmLabel(row);
  const needsReason = action === "shelve" || action === "out-of-service";
  $("#act-comment-label").textContent = needsReason ? t("reason") : t("comment");
  $("#act-comment").required = needsReason;
  $("#act-comment").value = "";
  $("#act-error").textContent = "";
  $("#act-duration-label").hidden = action !== "shelve";
  const cap = MAX_SHELVE[S.session.role] || 0;
  $("#act-duration").replaceChildren(...SHELVE.filter(([s]) => s <= cap).map(([s, label]) =>
    el("option", { value: s }, label)));
  $("#act-duration").value = "3600";
  dlg.showModal();
  $("#act-comment").focus();
}
async function confirmAct(ev) {
  ev.preventDefault();
  if (!pending) return;
  const { action, row } = pending;
  const comment = $("#act-comment").value;
  const body = { comment: comment || null };
  if (action === "shelve") body.duration_s = Number($("#act-duration").value);
  try {
    if (action === "ack-all") {
      await api("POST", "/api/ack", { ids: row.ids, comment: comment || null });
    } else {
      await api("POST", `/alarms/${row.id.split("/").map(encodeURIComponent).join("/")}/${action}`, body);
    }
    $("#act-dialog").close();
    pending = null;
  } catch (e) {
    $("#act-error").textContent = e.message;
  }
}
function ackAll() {
  const ids = [...S.rows.values()].filter((r) => visible(r) && (r.state === ST.unacked || r.state === ST.returned))
    .map((r) => r.id);
  if (!ids.length) return;
  const site = $("#f-site").value;
  pending = { action: "ack-all", row: { ids } };
  $("#act-title").textContent = t("ack_all_confirm").replace("{n}", ids.length);
  $("#act-alarm").textContent = site ? name(S.park.sites.find((s) => s.id === site)) : t("all");
  $("#act-comment-label").textContent = t("comment");
  $("#act-comment").required = false; $("#act-comment").value = "";
  $("#act-error").textContent = ""; $("#act-duration-label").hidden = true;
  $("#act-dialog").showModal();
}

// ------------------------------------------------------------------ shelved / out of service
function renderLists() {
  for (const [view, state] of [["shelved", ST.shelved], ["oos", ST.out_of_service]]) {
    const body = $(`#${view}-table tbody`);
    const rows = [...S.rows.values()].filter((r) => r.state === state).sort(order);
    body.replaceChildren(...rows.map((r) => el("tr", { "data-id": r.id },
      el("td", null, el("a", { href: `#/alarm/${r.id}` }, alarmLabel(r))),
      el("td", null, badge(r.state)),
      el("td", null, r.by || ""),
      el("td", null, r.why || ""),
      el("td", { class: "num" }, fmtTime(state === ST.shelved ? r.shelved_until : r.changed)),
      el("td", { class: "acts" }, actionButtons(r)))));
  }
  // who and why come from the alarms' latest operator events
  const need = [...S.rows.values()].filter((r) => (r.state === ST.shelved || r.state === ST.out_of_service) && !r.by);
  for (const r of need.slice(0, 50)) {
    api("GET", `/api/alarm?id=${encodeURIComponent(r.id)}`).then((d) => {
      const e = d.events.find((x) => x.event === "shelved" || x.event === "out_of_service");
      if (e) { r.by = e.operator; r.why = e.message; r.changed = e.time; renderListsOnly(); }
    }).catch(() => {});
  }
}
function renderListsOnly() { if (S.view === "shelved" || S.view === "oos") {
  const keep = [...S.rows.values()].filter((r) => (r.state === ST.shelved || r.state === ST.out_of_service) && !r.by);
  if (!keep.length) renderLists(); } }

// ------------------------------------------------------------------ alarm detail with its trend
async function loadDetail() {
  const id = S.detailId;
  const [site, asset, sensor] = id.split("/");
  const hours = $("#d-hours").value;
  const [d, tr] = await Promise.all([api("GET", `/api/alarm?id=${encodeURIComponent(id)}`),
    api("GET", `/api/trend?sensor=${encodeURIComponent(`${site}/${asset}/${sensor}`)}&hours=${hours}`)]);
  if (S.detailId !== id) return;
  const row = d.active || { id, site, asset, sensor, rule: id.split("/")[3], state: ST.normal, priority: "" };
  $("#detail-title").textContent = alarmLabel(row);
  $("#detail-state").replaceChildren(badge(row.state), " ", t(`st_${row.state}`),
    row.value !== undefined && row.value !== null ? ` · ${t("value")} ${fmtNum(row.value)} ${unit(row)}` : "",
    row.limit !== undefined && row.limit !== null ? ` · ${t("limit")} ${fmtNum(row.limit)}` : "");
  $("#detail-actions").replaceChildren(row.state === ST.normal ? "" : actionButtons(row));
  drawTrend(tr, row.rule);
  $("#detail-events tbody").replaceChildren(...d.events.map((e) => el("tr", { class: `ev-${e.event}` },
    el("td", { class: "num" }, fmtTime(e.time)), el("td", null, e.event), el("td", null, badge(e.state || "")),
    el("td", { class: "num" }, fmtNum(e.value)), el("td", { class: "operator" }, e.operator || ""),
    el("td", { class: "message" }, e.message || ""))));
}
function drawTrend(tr, rule) {
  const box = $("#trend");
  const W = 900, H = 300, L = 50, R = 70, Tp = 10, B = 30;
  const pts = tr.points.filter((p) => p[1] !== null);
  const lims = Object.entries(tr.limits || {});
  let lo = Math.min(...pts.map((p) => p[2] ?? p[1]), ...lims.map((l) => Number(l[1])));
  let hi = Math.max(...pts.map((p) => p[3] ?? p[1]), ...lims.map((l) => Number(l[1])));
  if (!isFinite(lo) || !isFinite(hi)) { lo = tr.range[0]; hi = tr.range[1]; }
  if (hi === lo) { hi += 1; lo -= 1; }
  const pad = (hi - lo) * 0.08; lo -= pad; hi += pad;
  const x = (ms) => L + (ms - tr.start) / (tr.end - tr.start) * (W - L - R);
  const y = (v) => Tp + (hi - v) / (hi - lo) * (H - Tp - B);
  const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": tr.sensor });
  for (let i = 0; i <= 4; i++) {
    const v = lo + (hi - lo) * i / 4;
    s.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e3e6ea" }));
    const tx = svg("text", { x: 4, y: y(v) + 4 }); tx.textContent = fmtNum(v); s.append(tx);
  }
  for (let i = 0; i <= 4; i++) {
    const ms = tr.start + (tr.end - tr.start) * i / 4;
    const tx = svg("text", { x: x(ms) - 20, y: H - 8 }); tx.textContent = fmtTime(ms).slice(-8, -3); s.append(tx);
  }
  if (pts.length) {
    const band = pts.map((p) => `${x(p[0])},${y(p[3] ?? p[1])}`).concat(
      pts.slice().reverse().map((p) => `${x(p[0])},${y(p[2] ?? p[1])}`));
    s.append(svg("polygon", { class: "band", points: band.join(" ") }));
    s.append(svg("polyline", { class: "line", points: pts.map((p) => `${x(p[0])},${y(p[1])}`).join(" ") }));
  }
  for (const [name_, v] of lims) {
    const cls = name_.startsWith("reg_") ? "reg" : name_;
    s.append(svg("line", { class: `limit limit-${cls}`, x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    const tx = svg("text", { x: W - R + 4, y: y(v) + 4 }); tx.textContent = `${name_} ${fmtNum(Number(v))}`; s.append(tx);
  }
  for (const e of tr.events) {
    if (rule && e.rule !== rule) continue;
    const mx = x(e.time);
    s.append(svg("line", { class: `mark mark-${e.event}`, x1: mx, x2: mx, y1: Tp, y2: H - B }));
    const title = svg("title"); title.textContent = `${fmtTime(e.time)} ${e.event} ${e.operator || ""}`;
    const dot = svg("circle", { class: `mark mark-${e.event}`, cx: mx, cy: Tp + 4, r: 4, fill: "#fff" });
    dot.append(title); s.append(dot);
  }
  const u = svg("text", { x: 4, y: Tp + 2 }); u.textContent = tr.unit; s.append(u);
  box.replaceChildren(s);
}

// ------------------------------------------------------------------ history
function historyParams() {
  const p = new URLSearchParams();
  for (const k of ["site", "sensor", "event", "operator"]) {
    const v = $(`#h-${k}`).value.trim();
    if (v) p.set(k, v);
  }
  for (const k of ["since", "until"]) {
    const v = $(`#h-${k}`).value;
    if (v) p.set(k, String(new Date(v).getTime()));
  }
  return p;
}
async function loadHistory(ev) {
  if (ev) ev.preventDefault();
  const p = historyParams();
  $("#h-csv").href = `/api/history?${p}&format=csv`;
  const rows = await api("GET", `/api/history?${p}`);
  $("#history-table tbody").replaceChildren(...rows.map((e) => el("tr", null,
    el("td", { class: "num" }, fmtTime(e.time)), el("td", null, el("a", { href: `#/alarm/${e.id}` }, alarmLabel(e))),
    el("td", null, e.event), el("td", null, badge(e.state || "")), el("td", { class: "num" }, fmtNum(e.value)),
    el("td", { class: "operator" }, e.operator || ""), el("td", { class: "message" }, e.message || ""))));
}

// ------------------------------------------------------------------ shift handover
async function loadHandover() {
  const hours = Number($("#ho-hours").value) || 8;
  const h = await api("GET", `/api/handover?hours=${hours}`);
  const k = h.kpis;
  const list = (rows) => el("table", { class: "alarms" }, el("thead", null, el("tr", null,
    el("th", null, t("alarm")), el("th", null, t("state")), el("th", null, t("priority")), el("th", null, t("value")),
    el("th", null, t("since")))), el("tbody", null, ...rows.map((r) => el("tr", null,
    el("td", null, alarmLabel(r)), el("td", null, badge(r.state)), el("td", null, t(`p_${r.priority}`)),
    el("td", { class: "num" }, `${fmtNum(r.value)} ${unit(r)}`), el("td", { class: "num" }, fmtTime(r.since))))));
  const evs = (rows) => el("table", { class: "alarms" }, el("thead", null, el("tr", null,
    el("th", null, t("time")), el("th", null, t("alarm")), el("th", null, t("event")), el("th", null, t("operator")),
    el("th", null, t("message")))), el("tbody", null, ...rows.map((e) => el("tr", null,
    el("td", { class: "num" }, fmtTime(e.time)), el("td", null, alarmLabel(e)), el("td", null, e.event),
    el("td", { class: "operator" }, e.operator || ""), el("td", { class: "message" }, e.message || "")))));
  const kp = [["k_alarms", k.alarms], ["k_avg", k.per_10min_avg], ["k_peak", k.per_10min_peak],
    ["k_flood", k.flood_time_pct], ["k_chat", k.chattering.length], ["k_stale", k.stale.length],
    ["k_actions", k.operator_actions]];
  $("#handover").replaceChildren(
    el("h2", null, `${t("handover_title")} — ${S.park ? name(S.park) : ""}`),
    el("p", null, `${t("period")}: ${fmtTime(h.start)} – ${fmtTime(h.end)} · ${S.session.user}`),
    el("h3", null, t("kpis")),
    el("table", { class: "kpis" }, el("tbody", null, ...kp.map(([key, v]) => el("tr", null, el("td", null, t(key)),
      el("td", { class: "num" }, v))))),
    el("h3", null, `${t("active")} (${h.active.length})`), list(h.active),
    el("h3", null, `${t("shelved")} (${h.shelved.length})`), list(h.shelved),
    el("h3", null, `${t("out_of_service")} (${h.out_of_service.length})`), list(h.out_of_service),
    el("h3", null, `${t("actions")} (${h.actions.length})`), evs(h.actions),
    el("h3", null, `${t("events")} (${h.events.length})`), evs(h.events.slice(-500)));
}

// ------------------------------------------------------------------ park overview
async function loadOverview() {
  const o = await api("GET", "/api/overview");
  const by = new Map(o.sensors.map((s) => [s.key, s]));
  const sites = S.park.sites.map((site) => el("div", { class: "card site", "data-site": site.id },
    el("h3", null, name(site)),
    ...site.assets.map((asset) => el("div", { class: "asset" }, el("h4", null, name(asset)),
      ...asset.sensors.map((sensor) => {
        const key = `${site.id}/${asset.id}/${sensor.id}`, s = by.get(key) || {};
        const lims = Object.entries(sensor.limits).map(([k, v]) => `${k} ${fmtNum(v)}`).join(" · ");
        const cls = `sensor${s.alarms && s.alarms.length ? " alarm" : ""}${s.stale ? " stale" : ""}`;
        return el("div", { class: cls, "data-key": key },
          el("span", null, name(sensor), s.alarms && s.alarms.length ? " " : "",
            ...(s.alarms || []).map((a) => el("a", { href: `#/alarm/${a.id}` }, badge(a.state)))),
          el("span", { class: "num" }, s.value === null || s.value === undefined ? t("no_data")
            : `${fmtNum(s.value)} ${sensor.unit}${s.stale ? ` (${t("stale")})` : ""}`),
          el("span", { class: "lim" }, lims));
      })))));
  $("#overview").replaceChildren(await kpiPanel(), el("div", { class: "sites" }, ...sites));
}

// the three KPIs of smartpark.kpis over the last 24 h, each with its definition (the server's thresholds)
async function kpiPanel() {
  const k = await api("GET", "/api/kpis?hours=24");
  const th = k.thresholds;
  const fill = (key, vars) => Object.entries(vars).reduce((s, [n, v]) => s.replace(`{${n}}`, v), t(key));
  const rows = [
    ["k_flood_n", k.flood_windows, fill("k_flood_def", { n: th.flood_more_than, m: th.flood_window_ms / 60000 }),
      []],
    ["k_chat", k.chattering.length, fill("k_chat_def", { n: th.chatter_raises, s: th.chatter_window_ms / 1000 }),
      k.chattering],
    ["k_stale", k.stale.length, fill("k_stale_def", { h: th.stale_after_ms / 3600000 }), k.stale],
  ];
  return el("div", { class: "card kpis overview-kpis" }, el("h3", null, t("k_24h")),
    el("table", { class: "kpis" }, el("tbody", null, ...rows.map(([key, n, def, ids]) =>
      el("tr", { "data-kpi": key }, el("td", null, t(key)), el("td", { class: "num" }, String(n)),
        el("td", { class: "lim" }, def), el("td", null, ...ids.map((id) =>
          el("a", { href: `#/alarm/${id}` }, `${id} `))))))));
}

// ------------------------------------------------------------------ live events (SSE)
function connect() {
  if (S.source) S.source.close();
  // EventSource reconnects by itself and sends Last-Event-ID: the server replays what was missed; a new
  // EventSource (after the browser gave up) asks for the same through ?last=
  const src = new EventSource(S.lastId ? `/api/events?last=${encodeURIComponent(S.lastId)}` : "/api/events");
  S.source = src;
  src.onopen = () => { $("#live").className = "live on"; $("#live").textContent = t("online"); };
  src.onerror = () => {
    $("#live").className = "live off"; $("#live").textContent = t("offline");
    if (src.readyState === EventSource.CLOSED) setTimeout(() => { if (S.session) { connect(); loadAlarms().catch(() => {}); } }, 2000);
  };
  src.addEventListener("hello", (m) => { S.lastId = m.lastEventId; loadAlarms().catch(() => {}); });
  src.addEventListener("reset", (m) => { S.lastId = m.lastEventId; loadAlarms().catch(() => {}); });
  src.onmessage = (m) => {
    S.lastId = m.lastEventId;
    try { onEvent(JSON.parse(m.data)); } catch (e) { console.error(e); }
  };
}

// ------------------------------------------------------------------ views
function route() {
  if (!S.session) return;
  const h = location.hash.replace(/^#\/?/, "");
  let view = h.split("/")[0] || "active";
  if (view === "alarm") { view = "detail"; S.detailId = decodeURIComponent(h.slice("alarm/".length)); }
  if (!["active", "shelved", "oos", "detail", "overview", "history", "handover"].includes(view)) view = "active";
  S.view = view;
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== `${view}-view`;
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("current", a.dataset.view === view);
  render();
}
function render() {
  const v = S.view;
  if (v === "active") renderActive();
  else if (v === "shelved" || v === "oos") renderLists();
  else if (v === "detail") loadDetail().catch(showError);
  else if (v === "overview") loadOverview().catch(showError);
  else if (v === "history") loadHistory().catch(showError);
  else if (v === "handover") loadHandover().catch(showError);
}
function showError(e) { console.error(e); }
setInterval(() => {  // time in alarm ticks on without re-rendering rows
  for (const td of document.querySelectorAll("#active-table td.dur")) {
    const since = Number(td.dataset.since);
    if (since) td.textContent = fmtDur(Date.now() - since);
  }
}, 1000);

document.addEventListener("DOMContentLoaded", async () => {
  $("#login-form").addEventListener("submit", login);
  document.addEventListener("click", onActionClick);
  $("#logout").addEventListener("click", logout);
  $("#lang").addEventListener("click", () => {
    S.lang = S.lang === "zh" ? "en" : "zh"; localStorage.setItem("sp-lang", S.lang); applyLang(); });
  $("#sound").addEventListener("click", toggleSound);
  $("#f-site").addEventListener("change", renderActive);
  $("#f-prio").addEventListener("change", renderActive);
  $("#ack-all").addEventListener("click", ackAll);
  $("#act-form").addEventListener("submit", confirmAct);
  $("#act-cancel").addEventListener("click", () => { $("#act-dialog").close(); pending = null; });
  $("#d-hours").addEventListener("change", () => loadDetail().catch(showError));
  $("#history-form").addEventListener("submit", (e) => loadHistory(e).catch(showError));
  $("#ho-load").addEventListener("click", () => loadHandover().catch(showError));
  $("#ho-print").addEventListener("click", () => window.print());
  window.addEventListener("hashchange", route);
  applyLang();
  try {
    S.session = await api("GET", "/api/session");
    await start();
  } catch (e) {
    showLogin();
  }
});
