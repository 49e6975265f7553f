// Pure parts of the presence widget: no DOM, no timers, no globals, so that Node's
// test runner can check them (tests/js/core.test.mjs). presence.js wires them to the page.

export const BUCKETS = 20;

const clamp01 = (x) => (x <= 0 ? 0 : x > 1 ? 1 : x);

// How far through the ARTICLE element the reader is, in [0, 1] (3 decimals), from the article's
// bounding rect ({top, height}) and the viewport height. 0 while the article's top is at or
// below the top of the viewport, 1 once its bottom has reached the bottom of the viewport.
// A short article (no taller than the viewport) counts as read once it is entirely visible.
export function readingPosition(rect, viewportHeight) {
  const height = Number(rect && rect.height);
  const top = Number(rect && rect.top);
  const vh = Number(viewportHeight);
  if (!(height > 0) || !Number.isFinite(top) || !(vh > 0)) return 0;
  const position = height <= vh ? (vh - top) / height : -top / (height - vh);
  return Math.round(clamp01(position) * 1000) / 1000;
}

// Send a position only when it moved by at least `minDelta` and at most once per `interval` ms.
// Returns 0 to send now, -1 for "nothing to send", or the ms to wait before sending.
export function progressDelay(last, lastAt, position, now, { interval = 1000, minDelta = 0.01 } = {}) {
  if (last !== null && last !== undefined && Math.abs(position - last) < minDelta - 1e-9) return -1;
  if (lastAt === null || lastAt === undefined) return 0;
  const wait = lastAt + interval - now;
  return wait > 0 ? wait : 0;
}

// Reconnect delay after `attempt` failures: exponential backoff with full jitter, capped.
export function backoffDelay(attempt, { base = 1000, cap = 30000 } = {}, random = Math.random) {
  const ceiling = Math.min(cap, base * 2 ** Math.max(0, attempt));
  return Math.floor(random() * ceiling);
}

// A stable hue (0-359) for a reader id (FNV-1a), so a reader keeps its colour everywhere.
export function hueFor(id) {
  let hash = 0x811c9dc5;
  const text = String(id);
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash % 360;
}

export function colourFor(id) {
  return `hsl(${hueFor(id)} 70% 45%)`;
}

// A display name as the server will keep it: trimmed, no control/format characters, <= 40 chars.
export function cleanName(name, max = 40) {
  if (typeof name !== "string") return "";
  const cleaned = name.replace(/[\p{Cc}\p{Cf}]/gu, "").trim();
  return Array.from(cleaned).slice(0, max).join("").trim();
}

export function histogramOf(readers, buckets = BUCKETS) {
  const histogram = new Array(buckets).fill(0);
  for (const reader of readers) {
    const p = typeof reader.position === "number" ? reader.position : 0;
    histogram[Math.min(buckets - 1, Math.max(0, Math.floor(p * buckets)))] += 1;
  }
  return histogram;
}

// Pick the translated phrase for `count` from the server's ngettext samples ([[n, text], ...],
// text holding "%(count)s"): the first sample of the same CLDR plural category.
export function pluralise(samples, count, lang = "en") {
  if (!Array.isArray(samples) || samples.length === 0) return String(count);
  let rules = null;
  try {
    rules = new Intl.PluralRules(lang || "en");
  } catch {
    rules = new Intl.PluralRules("en");
  }
  const category = rules.select(count);
  const sample = samples.find(([n]) => rules.select(n) === category) || samples[samples.length - 1];
  return sample[1].replace("%(count)s", String(count));
}

// Fill "%(name)s" placeholders (the server's gettext templates) and "%%".
export function format(template, values) {
  return String(template).replace(/%\((\w+)\)s|%%/g, (match, key) => (key ? String(values[key]) : "%"));
}

// A duration in the server's language: `text` holds its "seconds", "minutes" and "hours" templates.
export function formatDuration(ms, text = {}) {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  if (seconds < 60) return format(text.seconds || "%(seconds)s s", { seconds });
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return format(text.minutes || "%(minutes)s min", { minutes });
  return format(text.hours || "%(hours)s h %(minutes)s min", { hours: Math.floor(minutes / 60), minutes: minutes % 60 });
}

// Where the track goes, in viewport pixels: beside the article (`rect`: its bounding rect), only
// over the part of it on screen and below its title (`titleBottom`, null without one), inside the
// viewport. `gutter`: how far left of the article's edge the track's centre sits when there is
// room; `reach`: the least distance of that centre from either viewport edge (half the own marker
// with its focus ring); `inset`: room kept at both ends for the end markers. Null: nothing to show.
export function trackBox(rect, viewport, titleBottom = null, { gutter = 20, reach = 20, inset = 18, least = 96 } = {}) {
  if (!rect || !viewport) return null;
  const top = Math.max(rect.top, titleBottom ?? -Infinity, 0) + inset;
  const bottom = Math.min(rect.bottom, viewport.height) - inset;
  if (!(bottom - top >= least)) return null;
  const left = Math.min(Math.max(reach, rect.left - gutter), viewport.width - reach);
  return { left: Math.round(left), top: Math.round(top), height: Math.round(bottom - top) };
}

// The scroll offset (window.scrollY) at which `readingPosition` is `position`: the inverse of it,
// for an article whose top is `top` px from the top of the document.
export function scrollTargetFor(position, top, height, viewportHeight) {
  const p = clamp01(Number(position) || 0);
  const y = height <= viewportHeight ? top - viewportHeight + p * height : top + p * (height - viewportHeight);
  return Math.max(0, Math.round(y));
}

// -- the client's state, updated by server frames ---------------------------------------

export function initialState(room = null) {
  return {
    reader: null, you: null, online: null, offset: 0, heartbeat: 20, room, count: null, readers: {}, histogram: null,
    ranking: null,
  };
}

// The same connection on a new page (a page swap): what the connection knows stays, the room's goes.
export function forRoom(state, room) {
  return { ...initialState(room), reader: state.reader, online: state.online, offset: state.offset, heartbeat: state.heartbeat, ranking: state.ranking };
}

// Your own reader id in the room: `room_state.you` (protocol 1.1: ids are per room), else the
// site-wide `hello.reader` of a server that sends no `you`.
export function ownId(state) {
  return state.you || state.reader;
}

function newer(a, b) {
  // true when reader object `a` is at least as new as `b` (newest update wins)
  return !b || (Number(a.updated_at) || 0) >= (Number(b.updated_at) || 0);
}

// The next state after a server frame (a new object; `state` is not changed). `now` is the
// client clock in ms, used to compute the server clock offset from hello.server_time.
export function reduce(state, frame, now = Date.now()) {
  if (!frame || typeof frame !== "object") return state;
  switch (frame.type) {
    case "hello": {
      const heartbeat = Number(frame.heartbeat) > 0 ? Number(frame.heartbeat) : state.heartbeat;
      const offset = Number.isFinite(frame.server_time) ? frame.server_time - now : state.offset;
      const reader = frame.reader ?? state.reader;
      let readers = state.readers;
      if (state.reader && reader !== state.reader && !state.you && state.reader in readers) {
        // Re-keyed (signed in) by a server without per-room ids: your old marker is gone.
        readers = { ...readers };
        delete readers[state.reader];
      }
      return { ...state, reader, readers, online: frame.online ?? state.online, heartbeat, offset };
    }
    case "online":
      return Number.isInteger(frame.count) ? { ...state, online: frame.count } : state;
    case "pong":
      return Number.isFinite(frame.server_time) ? { ...state, offset: frame.server_time - now } : state;
    case "room_state": {
      if (frame.room !== state.room) return state;
      const readers = {};
      for (const r of frame.readers || []) if (r && r.id && newer(r, readers[r.id])) readers[r.id] = r;
      const you = typeof frame.you === "string" ? frame.you : null;
      return { ...state, you, count: frame.count, readers, histogram: frame.histogram || histogramOf(Object.values(readers)) };
    }
    case "ranking":
      return Array.isArray(frame.rooms) ? { ...state, ranking: frame.rooms } : state;
    case "room": {
      if (frame.room !== state.room) return state;
      const readers = { ...state.readers };
      for (const r of frame.updates || []) if (r && r.id && newer(r, readers[r.id])) readers[r.id] = r;
      for (const id of frame.left || []) delete readers[id];
      const all = Object.keys(readers).length >= frame.count;
      // A crowded room's frames carry the histogram; otherwise every reader is known: derive it.
      const histogram = frame.histogram || (all ? histogramOf(Object.values(readers)) : state.histogram);
      return { ...state, count: frame.count, readers, histogram };
    }
    default:
      return state;
  }
}

// Readers to draw, own first then most recently updated, at most `max`.
export function visibleReaders(state, max = 50) {
  return Object.values(state.readers)
    .sort((a, b) => (b.id === ownId(state)) - (a.id === ownId(state)) || (b.updated_at || 0) - (a.updated_at || 0))
    .slice(0, max);
}
