// The presence widget's client: one WebSocket per page (protocol v1), live counts,
// the reading timeline and the ranking. Plain ES module, no build, no dependencies; the pure
// parts live in core.js. Configured by the JSON that {% presence_script %} renders.
import {
  backoffDelay, cleanName, colourFor, formatDuration, initialState, pluralise, progressDelay,
  readingPosition, reduce, visibleReaders,
} from "./core.js";

const configEl = document.getElementById("presence-config");
const config = configEl ? JSON.parse(configEl.textContent) : {};
const text = config.text || {};
const lang = config.lang || document.documentElement.lang || "en";
const POLL_MS = 30000;
const SESSION_KEY = "presence.session";
const NAME_KEY = "presence.name";

// -- storage: one session id per browser, shared by its tabs; memory when storage throws ------
const memory = {};
function stored(key, make) {
  try {
    let value = localStorage.getItem(key);
    if (value === null && make) localStorage.setItem(key, (value = make()));
    return value;
  } catch {
    if (!(key in memory) && make) memory[key] = make();
    return memory[key] ?? null;
  }
}
function store(key, value) {
  try { localStorage.setItem(key, value); } catch { memory[key] = value; }
}
function newSession() {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => alphabet[b % 36]).join("");
}
const session = stored(SESSION_KEY, newSession);

// -- the page's widgets --------------------------------------------------------------------
const $$ = (selector) => Array.from(document.querySelectorAll(selector));
const onlineEls = $$("[data-presence-online] [data-presence-text]");
const timeline = document.querySelector("[data-presence-timeline]");
const room = config.room || (timeline && timeline.dataset.presenceRoom) ||
  (document.querySelector("[data-presence-readers]") || {dataset: {}}).dataset.presenceRoom || null;
const readerEls = $$("[data-presence-readers]").filter((el) => el.dataset.presenceRoom === room)
  .map((el) => el.querySelector("[data-presence-text]"));
const track = timeline && timeline.querySelector("[data-presence-track]");
const article = (timeline && (timeline.closest("[data-presence-article]") || timeline.closest("article"))) ||
  document.querySelector("[data-presence-article]") || document.querySelector("article");
const nameInput = timeline && timeline.querySelector("[data-presence-name]");

let state = initialState(room);
let token = config.token || null;

function myName() {
  return config.name || cleanName(stored(NAME_KEY) || "") || null;
}

function renderCounts() {
  if (state.online !== null) for (const el of onlineEls) el.textContent = pluralise(text.online, state.online, lang);
  if (state.count !== null) for (const el of readerEls) el.textContent = pluralise(text.reading, state.count, lang);
}

// -- the timeline ----------------------------------------------------------------------------
const markers = new Map(); // reader id -> element
const format = (template, values) => template.replace(/%\((\w+)\)s/g, (_, k) => values[k]).replace("%%", "%");

function describe(reader) {
  const own = reader.id === state.reader;
  let name = own ? myName() : reader.name;
  name = name || text.anonymous || "Anonymous reader";
  if (own) name += ` (${text.you || "you"})`;
  const percent = Math.round((reader.position || 0) * 100);
  const since = reader.joined_at ? Date.now() + state.offset - reader.joined_at : 0;
  return `${name}, ${format(text.read || "%(percent)s%% read", { percent })}, ` +
    format(text.here || "here for %(time)s", { time: formatDuration(since) });
}

function marker(reader) {
  let el = markers.get(reader.id);
  if (!el) {
    el = document.createElement("div");
    el.className = "presence-marker";
    el.setAttribute("role", "listitem");
    el.tabIndex = 0;
    const tip = document.createElement("span");
    tip.className = "presence-tip";
    el.append(tip);
    el.style.setProperty("--presence-reader-colour", colourFor(reader.id));
    markers.set(reader.id, el);
    track.append(el);
  }
  el.classList.toggle("presence-marker-own", reader.id === state.reader);
  el.dataset.reader = reader.id;
  el.style.setProperty("--presence-position", String(reader.position || 0));
  const label = describe(reader);
  el.setAttribute("aria-label", label);
  el.firstChild.textContent = label; // names are text, never markup
  return el;
}

function renderTimeline() {
  if (!track || state.count === null) return;
  timeline.hidden = false;
  const large = state.count > (config.maxMarkers || 50);
  track.classList.toggle("presence-track-histogram", large);
  const keep = new Set();
  if (!large) {
    const readers = visibleReaders(state, config.maxMarkers || 50);
    for (let reader of readers) {
      // Your own marker follows you at once, not a tick later.
      if (reader.id === state.reader && current !== null) reader = { ...reader, position: current };
      marker(reader);
      keep.add(reader.id);
    }
  }
  for (const [id, el] of markers) if (!keep.has(id)) { el.remove(); markers.delete(id); }
  for (const el of track.querySelectorAll(".presence-bucket")) el.remove();
  if (large && state.histogram) {
    const max = Math.max(1, ...state.histogram);
    state.histogram.forEach((count, i) => {
      if (!count) return;
      const bar = document.createElement("div");
      bar.className = "presence-bucket";
      bar.setAttribute("role", "listitem");
      bar.tabIndex = 0;
      bar.style.setProperty("--presence-position", String(i / 20));
      bar.style.setProperty("--presence-share", String(count / max));
      bar.setAttribute("aria-label", format(text.bucket || "%(count)s readers between %(from)s%% and %(to)s%%",
        { count, from: i * 5, to: i * 5 + 5 }));
      track.append(bar);
    });
  }
}

function placeTrack() {
  if (!track || !article) return;
  const rect = article.getBoundingClientRect();
  track.style.left = `${Math.max(4, rect.left - 28)}px`;
}

function render() {
  renderCounts();
  renderTimeline();
}

// -- the socket ------------------------------------------------------------------------------
let socket = null;
let attempts = 0;
let connections = 0;
let pingTimer = null;
let reconnectTimer = null;
let joined = false;
let idle = false;
let idleTimer = null;

function send(frame) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(frame));
}

function socketUrl() {
  const url = new URL(config.url || "/ws/presence/", location.href);
  if (url.protocol === "http:") url.protocol = "ws:";
  if (url.protocol === "https:") url.protocol = "wss:";
  url.searchParams.set("session", session);
  return url.href;
}

function join() {
  if (room && !idle) send({ type: "join", room });
}

function onFrame(event) {
  let frame;
  try { frame = JSON.parse(event.data); } catch { return; }
  const previousReader = state.reader;
  state = reduce(state, frame);
  switch (frame.type) {
    case "hello":
      attempts = 0;
      clearInterval(pingTimer);
      pingTimer = setInterval(() => send({ type: "ping" }), state.heartbeat * 1000);
      if (!joined) join();
      if (previousReader && previousReader !== state.reader) {
        // Re-keyed (signed in): your old reader id is gone; the server sends its `left` too.
        const readers = { ...state.readers };
        delete readers[previousReader];
        state = { ...state, readers };
      }
      break;
    case "room_state":
      if (frame.room === room) { joined = true; lastSent = null; lastSentAt = null; scheduleProgress(); }
      break;
  }
  render();
}

function connect() {
  clearTimeout(reconnectTimer);
  reconnectTimer = null;
  if (!("WebSocket" in window)) return;
  try {
    socket = new WebSocket(socketUrl());
  } catch {
    return retry();
  }
  joined = false;
  const resume = connections++ > 0 || token !== (config.token || null);
  socket.onopen = () => {
    // The handshake knows a signed-in user by cookie; after a reconnect (or a sign-in in another
    // tab since this page loaded) the token re-keys the connection explicitly.
    if (token && resume) send({ type: "identify", token });
  };
  socket.onmessage = onFrame;
  socket.onclose = () => {
    socket = null;
    joined = false;
    clearInterval(pingTimer);
    retry();
  };
}

function retry() {
  if (reconnectTimer || closing) return;
  reconnectTimer = setTimeout(connect, backoffDelay(attempts++));
}

// -- reading position: measured in animation frames, sent at most once a second ----------------
let current = null;
let lastSent = null;
let lastSentAt = null;
let progressTimer = null;
let frameRequested = false;

function measure() {
  frameRequested = false;
  if (!article) return;
  current = readingPosition(article.getBoundingClientRect(), window.innerHeight);
  placeTrack();
  scheduleProgress();
}

function onScroll() {
  if (!frameRequested) { frameRequested = true; requestAnimationFrame(measure); }
}

function scheduleProgress(force = false) {
  if (!joined || current === null || progressTimer) return;
  const wait = force ? 0 : progressDelay(lastSent, lastSentAt, current, Date.now());
  if (wait < 0) return;
  progressTimer = setTimeout(() => {
    progressTimer = null;
    const name = myName();
    send(Object.assign({ type: "progress", room, position: current }, name ? { name } : {}));
    lastSent = current;
    lastSentAt = Date.now();
    renderTimeline();
  }, wait);
}

// -- identity: a sign-in in another tab re-keys this page's connection ----------------------
const channel = "BroadcastChannel" in window ? new BroadcastChannel("presence") : null;

function useToken(next) {
  if (next === token) return;
  token = next;
  if (next) send({ type: "identify", token: next });
  else send({ type: "identify", session });
}

async function checkToken() {
  if (!config.api || !config.api.token) return;
  try {
    const response = await fetch(config.api.token, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (response.ok) useToken((await response.json()).token);
    else if (response.status === 403 || response.status === 401) useToken(null);
  } catch { /* offline: try again on the next focus */ }
}

if (channel) {
  channel.onmessage = (event) => {
    if (event.data && "token" in event.data) { useToken(event.data.token); config.name = event.data.name || null; }
  };
  if (token) channel.postMessage({ token, name: config.name });
}

// -- leaving: closing the tab, hiding it for long ---------------------------------------------
let closing = false;

addEventListener("pagehide", () => {
  closing = true;
  if (room && joined) send({ type: "leave", room });
  if (room && current !== null && config.api && config.api.beacon && navigator.sendBeacon) {
    navigator.sendBeacon(config.api.beacon, JSON.stringify({ session, room, position: current }));
  }
  if (socket) socket.close(1000);
});

addEventListener("pageshow", (event) => {
  if (event.persisted) { closing = false; connect(); }
});

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "hidden") {
    if (config.idleAfter !== null && config.idleAfter !== undefined && room) {
      idleTimer = setTimeout(() => {
        idle = true;
        if (joined) send({ type: "leave", room });
        joined = false;
      }, config.idleAfter * 1000);
    }
  } else {
    clearTimeout(idleTimer);
    if (idle) { idle = false; join(); }
    checkToken();
  }
});
addEventListener("focus", checkToken);

// -- REST fallbacks: no WebSocket (or none yet) keeps counts fresh; the ranking polls ----------
async function getJSON(url) {
  const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(String(response.status));
  return response.json();
}

async function poll() {
  if (socket && socket.readyState === WebSocket.OPEN) return;
  try {
    if (onlineEls.length && config.api.online) state = reduce(state, { type: "online", count: (await getJSON(config.api.online)).online });
    if (room && config.api.rooms && readerEls.length) {
      const detail = await getJSON(`${config.api.rooms}${encodeURIComponent(room)}/`);
      state = { ...state, count: detail.count };
    }
    renderCounts();
  } catch { /* keep the numbers shown */ }
}

const ranking = document.querySelector("[data-presence-ranking]");
function safeHref(url) {
  try {
    const parsed = new URL(url, location.href);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch { return null; }
}
async function pollRanking() {
  if (!ranking || !config.api || !config.api.rooms || document.visibilityState === "hidden") return;
  let entries;
  try { entries = await getJSON(`${config.api.rooms}?limit=${Number(ranking.dataset.limit) || 5}`); } catch { return; }
  const list = ranking.querySelector("[data-presence-ranking-list]");
  const items = entries.map((entry) => {
    const li = document.createElement("li");
    const href = entry.url && safeHref(entry.url);
    const title = document.createElement(href ? "a" : "span");
    if (href) title.href = href;
    title.textContent = entry.title;
    const count = document.createElement("span");
    count.className = "presence-ranking-count";
    count.textContent = pluralise(text.ranked, entry.count, lang);
    li.append(title, " ", count);
    return li;
  });
  list.replaceChildren(...items);
  const empty = ranking.querySelector("[data-presence-ranking-empty]");
  empty.textContent = text.nobody || "";
  empty.hidden = items.length > 0;
}

// -- start -----------------------------------------------------------------------------------
if (nameInput) {
  nameInput.value = cleanName(stored(NAME_KEY) || "");
  nameInput.form.addEventListener("submit", (event) => event.preventDefault());
  nameInput.addEventListener("change", () => {
    store(NAME_KEY, cleanName(nameInput.value));
    nameInput.value = cleanName(nameInput.value);
    lastSent = null;
    scheduleProgress(true);
  });
}
if (article && room) {
  addEventListener("scroll", onScroll, { passive: true });
  addEventListener("resize", onScroll, { passive: true });
  onScroll();
}
setInterval(poll, POLL_MS);
setInterval(pollRanking, POLL_MS);
setInterval(() => { renderTimeline(); if (state.count > (config.maxMarkers || 50)) { joined = false; join(); } }, 15000);
connect();
