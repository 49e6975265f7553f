// The presence widget's client: one WebSocket per page life (protocol v1.1 and the live-ranking
// extension, docs/protocol.md), live counts, the reading timeline and the ranking. Plain ES
// module, no build, no dependencies; the pure parts live in core.js. Configured by the JSON that
// {% presence_script %} renders, read again after every page swap (HTMX, Turbo, pjax, or
// window.presence.refresh()): docs/widget.md.
import {
  backoffDelay, cleanName, colourFor, forRoom, format, formatDuration, initialState, ownId, pluralise,
  progressDelay, readingPosition, reduce, scrollTargetFor, trackBox, visibleReaders,
} from "./core.js";

const POLL_MS = 30000;
const RANKING_MAX = 50; // the most rooms a ranking subscription may ask for (docs/protocol.md, "Live ranking")
const REFRESH_MS = 15000;
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

// -- the page: everything a page swap replaces ---------------------------------------------
// Configs by URL: a swap that leaves the <head> alone (HTMX's boosted links and its history
// cache) brings no new #presence-config element, so the one of a page seen before is reused.
const configs = new Map();
const here = () => location.href.split("#")[0];
const CONFIG_RE = /<script[^>]*\bid="presence-config"[^>]*>([\s\S]*?)<\/script>/;

function configElement() {
  const all = document.querySelectorAll("script#presence-config");
  return all.length ? all[all.length - 1] : null;
}

function parseConfig(text) {
  try { return JSON.parse(text); } catch { return null; }
}

// The page's config: a #presence-config element new since the last read, else the one in the
// swap's response (`html`), else the one last seen at this URL; `stale` when none of these is
// known and the old one (left in the <head>) cannot tell the new page's room.
function readConfig(html) {
  const el = configElement();
  let config = null;
  if (el && (!page || el !== page.configEl)) config = parseConfig(el.textContent);
  if (!config && html) {
    const match = CONFIG_RE.exec(html);
    if (match) config = parseConfig(match[1]);
  }
  if (config) {
    configs.set(here(), config);
    return { config, el, stale: false };
  }
  if (configs.has(here())) return { config: configs.get(here()), el, stale: false };
  const config_ = page ? page.config : (el && parseConfig(el.textContent)) || {};
  // Still the same element in the document's body: the page was not swapped under it.
  return { config: config_, el, stale: !!page && !(el && document.body.contains(el) && el === page.configEl) };
}

function readPage(html) {
  const { config, el, stale } = readConfig(html);
  const $$ = (selector) => Array.from(document.querySelectorAll(selector));
  const timeline = document.querySelector("[data-presence-timeline]");
  const readers = $$("[data-presence-readers]");
  // The page's room: its config's, else its timeline's. The counts of a list page name rooms
  // too, but reading a list is reading none of them; only a config that says nothing (swapped
  // away from, see readConfig) lets the count of a page about one article tell its room.
  const counted = new Set(readers.map((e) => e.dataset.presenceRoom));
  const room = (!stale && config.room) || (timeline && timeline.dataset.presenceRoom) ||
    (stale && counted.size === 1 ? [...counted][0] : null) || null;
  const article = (timeline && (timeline.closest("[data-presence-article]") || timeline.closest("article"))) ||
    document.querySelector("[data-presence-article]") || document.querySelector("article");
  const ranking = document.querySelector("[data-presence-ranking]");
  const rankingLimit = ranking ? Number(ranking.dataset.limit) || 5 : 0;
  const otherEls = readers.filter((e) => e.dataset.presenceRoom !== room);
  return {
    config, configEl: el, room, timeline, article, ranking,
    text: config.text || {},
    // The language the server rendered the text in (never the page's lang: the text may be a fallback).
    lang: config.lang || "en",
    onlineEls: $$("[data-presence-online] [data-presence-text]"),
    readerEls: readers.filter((e) => e.dataset.presenceRoom === room).map((e) => e.querySelector("[data-presence-text]")),
    otherEls, // counts of other rooms (a list page's): they follow the ranking (renderOtherCounts)
    track: timeline && timeline.querySelector("[data-presence-track]"),
    title: article && article.querySelector("[data-presence-title], h1, h2"),
    nameInput: timeline && timeline.querySelector("[data-presence-name]"),
    rankingLimit,
    // The ranking this page subscribes to: the ranking's rooms, or as many as the protocol allows
    // when other rooms' counts follow it.
    rankingWanted: otherEls.length ? RANKING_MAX : rankingLimit,
    max: config.maxMarkers || 50,
  };
}

let page = null;
let state = initialState(null);
let token = null;
const session = stored(SESSION_KEY, newSession);

function myName() {
  return page.config.name || cleanName(stored(NAME_KEY) || "") || null;
}

function renderCounts() {
  const { text, lang } = page;
  if (state.online !== null) for (const el of page.onlineEls) el.textContent = pluralise(text.online, state.online, lang);
  if (state.count !== null) for (const el of page.readerEls) el.textContent = pluralise(text.reading, state.count, lang);
}

// -- the timeline ----------------------------------------------------------------------------
const markers = new Map(); // reader id -> list item

function describe(reader) {
  const { text } = page;
  const own = reader.id === ownId(state);
  let name = (own ? myName() : reader.name) || text.anonymous || "Anonymous reader";
  if (own) name += ` (${text.you || "you"})`;
  const percent = Math.round((reader.position || 0) * 100);
  const since = reader.joined_at ? Date.now() + state.offset - reader.joined_at : 0;
  return `${name}, ${format(text.read || "%(percent)s%% read", { percent })}, ` +
    format(text.here || "here for %(time)s", { time: formatDuration(since, text) });
}

function jumpTo(id) {
  const reader = state.readers[id];
  if (!reader || id === ownId(state) || !page.article) return;
  const rect = page.article.getBoundingClientRect();
  const top = scrollTargetFor(reader.position || 0, rect.top + window.scrollY, rect.height, window.innerHeight);
  const still = window.matchMedia && matchMedia("(prefers-reduced-motion: reduce)").matches;
  window.scrollTo({ top, behavior: still ? "instant" : "smooth" });
}

function marker(reader) {
  let item = markers.get(reader.id);
  if (!item) {
    item = document.createElement("div");
    item.className = "presence-marker";
    item.setAttribute("role", "listitem");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "presence-marker-button";
    const tip = document.createElement("span");
    tip.className = "presence-tip";
    tip.setAttribute("aria-hidden", "true");
    button.append(tip);
    button.addEventListener("click", () => jumpTo(item.dataset.reader));
    item.append(button);
    item.style.setProperty("--presence-reader-colour", colourFor(reader.id));
    markers.set(reader.id, item);
    page.track.append(item);
  }
  const own = reader.id === ownId(state);
  const button = item.firstChild;
  item.classList.toggle("presence-marker-own", own);
  item.classList.toggle("presence-marker-low", (reader.position || 0) > 0.5);
  item.dataset.reader = reader.id;
  item.style.setProperty("--presence-position", String(reader.position || 0));
  const label = describe(reader);
  button.setAttribute("aria-label", label);
  if (own) button.removeAttribute("aria-describedby");
  else button.setAttribute("aria-describedby", "presence-timeline-hint");
  button.firstChild.textContent = label; // names are text, never markup
  return item;
}

function clearMarkers() {
  for (const item of markers.values()) item.remove();
  markers.clear();
}

function renderTimeline() {
  const { track, timeline } = page;
  if (!track || state.count === null) return;
  timeline.hidden = false;
  const large = state.count > page.max;
  track.classList.toggle("presence-track-histogram", large);
  const keep = new Set();
  if (!large) {
    for (let reader of visibleReaders(state, page.max)) {
      // Your own marker follows you at once, not a tick later.
      if (reader.id === ownId(state) && current !== null) reader = { ...reader, position: current };
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
      bar.setAttribute("aria-label", format(page.text.bucket || "%(count)s readers between %(from)s%% and %(to)s%%",
        { count, from: i * 5, to: i * 5 + 5 }));
      track.append(bar);
    });
  }
  placeTrack();
}

// The track runs beside the part of the article on screen, below its title, inside the viewport.
function placeTrack() {
  const { track, article, title } = page;
  if (!track || !article) return;
  const titleRect = title && title.getBoundingClientRect();
  const box = trackBox(article.getBoundingClientRect(), { width: document.documentElement.clientWidth, height: window.innerHeight },
    titleRect && titleRect.height ? titleRect.bottom : null);
  track.classList.toggle("presence-track-off", !box);
  if (!box) return;
  track.style.left = `${box.left}px`;
  track.style.top = `${box.top}px`;
  track.style.height = `${box.height}px`;
}

// -- the ranking -------------------------------------------------------------------------------
function safeHref(url) {
  try {
    const parsed = new URL(url, location.href);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch { return null; }
}

let rankingShown = null; // JSON of what the ranking element shows, so that only changes touch it

function renderRanking(entries) {
  const { ranking, text, lang } = page;
  if (!ranking || !Array.isArray(entries)) return;
  entries = entries.slice(0, page.rankingLimit);
  const shown = JSON.stringify([entries, lang]);
  if (shown === rankingShown && ranking.dataset.presenceShown) return;
  rankingShown = shown;
  ranking.dataset.presenceShown = "1";
  const items = entries.map((entry) => {
    const li = document.createElement("li");
    li.className = "presence-ranking-item";
    const href = entry.url && safeHref(entry.url);
    const title = document.createElement(href ? "a" : "span");
    title.className = "presence-ranking-link";
    if (href) title.href = href;
    title.textContent = entry.title;
    const count = document.createElement("span");
    count.className = "presence-ranking-count";
    count.textContent = pluralise(text.ranked, entry.count, lang);
    li.append(title, " ", count);
    return li;
  });
  ranking.querySelector("[data-presence-ranking-list]").replaceChildren(...items);
  const empty = ranking.querySelector("[data-presence-ranking-empty]");
  empty.textContent = text.nobody || "";
  empty.hidden = items.length > 0;
}

// Other rooms' counts (a list page's "N people reading now") from a ranking of up to `limit`
// rooms: a room in it has its count; a room not in it has none when the ranking is shorter than
// asked for (it holds every room with readers), else its count is unknown and stays as shown.
function renderOtherCounts(entries, limit) {
  const { otherEls, text, lang } = page;
  if (!otherEls.length || !Array.isArray(entries)) return;
  const counts = new Map(entries.map((entry) => [entry.room, entry.count]));
  for (const el of otherEls) {
    const count = counts.get(el.dataset.presenceRoom) ?? (entries.length < limit ? 0 : null);
    const target = el.querySelector("[data-presence-text]");
    if (count !== null && target) target.textContent = pluralise(text.reading, count, lang);
  }
}

// -- the socket ------------------------------------------------------------------------------
let socket = null;
let attempts = 0; // connections in a row that failed: the reconnect delay grows with them (core.js backoffDelay)
let attemptsBeforeHello = 0;
const CLOSE_TOO_MANY_READERS = 4029; // the address has no room for the reader (docs/protocol.md)
let connections = 0;
let pingTimer = null;
let reconnectTimer = null;
let joined = false;
let idle = false;
let idleTimer = null;
let rankingLimit = 0; // the limit of this connection's ranking subscription (0: none)
let closing = false;

const isOpen = () => socket !== null && socket.readyState === WebSocket.OPEN;

function send(frame) {
  if (isOpen()) socket.send(JSON.stringify(frame));
}

function socketUrl() {
  const url = new URL(page.config.url || "/ws/presence/", location.href);
  if (url.protocol === "http:") url.protocol = "ws:";
  if (url.protocol === "https:") url.protocol = "wss:";
  url.searchParams.set("session", session);
  return url.href;
}

let joining = null; // the room of a `join` sent and not yet answered

function join() {
  if (page.room && !idle && isOpen()) {
    joining = page.room;
    send({ type: "join", room: page.room });
  }
}

function subscribeRanking() {
  if (page.rankingWanted > rankingLimit && isOpen()) {
    rankingLimit = page.rankingWanted;
    send({ type: "ranking", limit: rankingLimit });
  }
}

function onFrame(event) {
  let frame;
  try { frame = JSON.parse(event.data); } catch { return; }
  state = reduce(state, frame);
  switch (frame.type) {
    case "hello":
      attemptsBeforeHello = attempts;
      attempts = 0;
      clearInterval(pingTimer);
      pingTimer = setInterval(() => send({ type: "ping" }), state.heartbeat * 1000);
      if (!joined) join();
      subscribeRanking();
      break;
    case "room_state":
      if (frame.room === page.room) { joined = true; joining = null; lastSent = null; lastSentAt = null; scheduleProgress(); }
      break;
    case "ranking":
      renderRanking(state.ranking);
      renderOtherCounts(state.ranking, rankingLimit);
      return;
  }
  renderCounts();
  renderTimeline();
}

function connect() {
  clearTimeout(reconnectTimer);
  reconnectTimer = null;
  if (!("WebSocket" in window) || socket) return;
  try {
    socket = new WebSocket(socketUrl());
  } catch {
    socket = null;
    return retry();
  }
  joined = false;
  rankingLimit = 0;
  const resume = connections++ > 0 || token !== (page.config.token || null);
  socket.onopen = () => {
    // The handshake knows a signed-in user by cookie; after a reconnect (or a sign-in in another
    // tab since this page loaded) the token re-keys the connection explicitly.
    if (token && resume) send({ type: "identify", token });
  };
  socket.onmessage = onFrame;
  socket.onclose = (event) => {
    // Refused after its `hello` (an `identify` beyond the per-address cap): a refusal like a refused
    // handshake's, so the backoff goes on growing rather than starting over at once.
    if (event.code === CLOSE_TOO_MANY_READERS) attempts = attemptsBeforeHello + 1;
    socket = null;
    joined = false;
    joining = null;
    rankingLimit = 0;
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
  // A swap in progress may have detached the article: its last position stands.
  if (!page.article || !page.article.isConnected) return;
  current = page.room ? readingPosition(page.article.getBoundingClientRect(), window.innerHeight) : null;
  placeTrack();
  scheduleProgress();
}

function onScroll() {
  if (!frameRequested) { frameRequested = true; requestAnimationFrame(measure); }
}

function sendProgress() {
  const name = myName();
  send(Object.assign({ type: "progress", room: page.room, position: current }, name ? { name } : {}));
  lastSent = current;
  lastSentAt = Date.now();
}

function scheduleProgress(force = false) {
  if (!joined || current === null || progressTimer) return;
  const wait = force ? 0 : progressDelay(lastSent, lastSentAt, current, Date.now());
  if (wait < 0) return;
  progressTimer = setTimeout(() => {
    progressTimer = null;
    if (!joined || current === null) return;
    sendProgress();
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
  const api = page.config.api;
  if (!api || !api.token) return;
  try {
    const response = await fetch(api.token, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (response.ok) useToken((await response.json()).token);
    else if (response.status === 403 || response.status === 401) useToken(null);
  } catch { /* offline: try again on the next focus */ }
}

// -- leaving a room: a page swap, closing the tab, hiding it for long ----------------------------
function beacon() {
  const api = page.config.api;
  if (page.room && current !== null && api && api.beacon && navigator.sendBeacon) {
    navigator.sendBeacon(api.beacon, JSON.stringify({ session, room: page.room, position: current }));
  }
}

// Leave the page's room for good: its last position first, so that the reading session the
// server records ends where the reader stopped.
function leaveRoom() {
  clearTimeout(progressTimer);
  progressTimer = null;
  if (page.room && joined && current !== null && current !== lastSent) sendProgress();
  // Also a room whose `join` is still on its way: the server handles frames in order.
  if (page.room && (joined || joining === page.room)) send({ type: "leave", room: page.room });
  beacon();
  joined = false;
  joining = null;
}

// -- page swaps: HTMX, Turbo, pjax, history, or window.presence.refresh() -----------------------
const wired = new WeakSet();

function wire() {
  const input = page.nameInput;
  if (!input || wired.has(input)) return;
  wired.add(input);
  input.value = cleanName(stored(NAME_KEY) || "");
  if (input.form) input.form.addEventListener("submit", (event) => event.preventDefault());
  input.addEventListener("change", () => {
    store(NAME_KEY, cleanName(input.value));
    input.value = cleanName(input.value);
    lastSent = null;
    scheduleProgress(true);
  });
}

function start() {
  wire();
  renderCounts();
  if (state.ranking) { renderRanking(state.ranking); renderOtherCounts(state.ranking, rankingLimit); }
  renderTimeline();
  onScroll();
  subscribeRanking();
  poll();
}

// Read the page again after its content was swapped. Another room: leave the old one (with its
// last position and beacon) and join the new one on the same socket. The same room (a partial
// swap, a repeated event): keep the reading session, only pick up the new elements.
function refresh(html) {
  if (!page) return;
  const next = readPage(typeof html === "string" ? html : null);
  if (next.room !== page.room) {
    leaveRoom();
    clearMarkers();
    state = forRoom(state, next.room);
    current = null;
    lastSent = null;
    lastSentAt = null;
    page = next;
    join();
  } else {
    if (next.track !== page.track) clearMarkers();
    page = next;
  }
  // A restored page (HTMX's history cache) may bring back the markers of its snapshot.
  if (page.track) for (const el of page.track.querySelectorAll(".presence-marker, .presence-bucket")) {
    if (markers.get(el.dataset.reader) !== el) el.remove();
  }
  rankingShown = null;
  if ((page.config.token || null) !== token && page.config.token) useToken(page.config.token);
  start();
}

let refreshTimer = null;
function refreshSoon(html) {
  // After the swap's own work in this task (pjax and history listeners run alongside ours).
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => refresh(html), 0);
}

function responseOf(event) {
  const detail = event.detail || {};
  const xhr = detail.xhr;
  if (detail.serverResponse) return detail.serverResponse;
  // A whole page swapped in (a boosted link), not a fragment picked from another page.
  const whole = detail.boosted || detail.target === document.body;
  return whole && xhr && typeof xhr.responseText === "string" ? xhr.responseText : null;
}

// -- REST fallbacks: without a socket (no WebSocket, or between reconnects) the counts and the
// ranking are read at once and then every 30 s -------------------------------------------------
async function getJSON(url) {
  const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(String(response.status));
  return response.json();
}

async function poll() {
  const api = page.config.api;
  if (socket || !api || document.visibilityState === "hidden") return;
  try {
    if (page.onlineEls.length && api.online) {
      const online = (await getJSON(api.online)).online;
      state = reduce(state, { type: "online", count: online });
    }
    if (page.room && api.rooms && page.readerEls.length) {
      const room = page.room;
      const detail = await getJSON(`${api.rooms}${encodeURIComponent(room)}/`);
      if (room === page.room && !socket) state = { ...state, count: detail.count };
    }
    renderCounts();
    if (page.rankingWanted && api.rooms) {
      const limit = page.rankingWanted;
      const entries = await getJSON(`${api.rooms}?limit=${limit}`);
      if (!isOpen()) { renderRanking(entries); renderOtherCounts(entries, limit); }
    }
  } catch { /* keep the numbers shown */ }
}

// -- start: once per page life; every listener and timer below exists once --------------------
function init() {
  page = readPage(null);
  configs.set(here(), page.config);
  state = initialState(page.room);
  token = page.config.token || null;

  if (channel) {
    channel.onmessage = (event) => {
      if (event.data && "token" in event.data) { useToken(event.data.token); page.config.name = event.data.name || null; }
    };
    if (token) channel.postMessage({ token, name: page.config.name });
  }
  addEventListener("scroll", onScroll, { passive: true });
  addEventListener("resize", onScroll, { passive: true });
  addEventListener("pagehide", () => {
    closing = true;
    leaveRoom();
    if (socket) socket.close(1000);
  });
  addEventListener("pageshow", (event) => {
    if (event.persisted) { closing = false; connect(); }
  });
  document.addEventListener("visibilitychange", () => {
    const after = page.config.idleAfter;
    if (document.visibilityState === "hidden") {
      if (after !== null && after !== undefined && page.room) {
        clearTimeout(idleTimer);
        idleTimer = setTimeout(() => {
          idle = true;
          if (joined) send({ type: "leave", room: page.room });
          joined = false;
        }, after * 1000);
      }
    } else {
      clearTimeout(idleTimer);
      if (idle) { idle = false; join(); }
      checkToken();
    }
  });
  addEventListener("focus", checkToken);
  // Page swaps. HTMX: after a swap settled (boosted links, history restores: afterSettle fires on
  // the swapped element; the response carries the new page's config when the <head> stays).
  document.addEventListener("htmx:afterSettle", (event) => refreshSoon(responseOf(event)));
  document.addEventListener("htmx:historyRestore", (event) => refreshSoon(responseOf(event)));
  document.addEventListener("turbo:load", () => refreshSoon());
  document.addEventListener("pjax:end", () => refreshSoon());
  document.addEventListener("pjax:complete", () => refreshSoon());
  addEventListener("popstate", () => refreshSoon());

  setInterval(poll, POLL_MS);
  setInterval(() => {
    renderTimeline();
    if (state.count > page.max) { joined = false; join(); }
  }, REFRESH_MS);
  window.presence = Object.freeze({ refresh: () => refresh() });
  connect();
  start();
}

// A second copy of the module (another URL, e.g. a new static hash after a deploy) must not open a
// second socket: it hands over to the first.
if (window.presence && typeof window.presence.refresh === "function") window.presence.refresh();
else init();
