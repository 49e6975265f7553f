// Unit tests of the widget's pure parts: `node --test tests/js/` (run by `make test`).
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  backoffDelay,
  cleanName,
  colourFor,
  format,
  formatDuration,
  forRoom,
  histogramOf,
  hueFor,
  initialState,
  ownId,
  pluralise,
  progressDelay,
  readingPosition,
  reduce,
  scrollTargetFor,
  trackBox,
  visibleReaders,
} from "../../presence/static/presence/core.js";

test("position: fraction of the article scrolled through, clamped", () => {
  // A 3000 px article in an 800 px viewport: 0 at its top, 1 when its bottom reaches the viewport's.
  assert.equal(readingPosition({ top: 100, height: 3000 }, 800), 0);
  assert.equal(readingPosition({ top: 0, height: 3000 }, 800), 0);
  assert.equal(readingPosition({ top: -1100, height: 3000 }, 800), 0.5);
  assert.equal(readingPosition({ top: -2200, height: 3000 }, 800), 1);
  assert.equal(readingPosition({ top: -9000, height: 3000 }, 800), 1);
  assert.equal(readingPosition({ top: -733, height: 3000 }, 800), 0.333);
});

test("position: short articles count as read once fully visible", () => {
  assert.equal(readingPosition({ top: 100, height: 400 }, 800), 1);
  assert.equal(readingPosition({ top: 600, height: 400 }, 800), 0.5);
  assert.equal(readingPosition({ top: 900, height: 400 }, 800), 0);
  assert.equal(readingPosition({ top: 0, height: 800 }, 800), 1);
});

test("position: degenerate rects and viewports give 0", () => {
  assert.equal(readingPosition({ top: 0, height: 0 }, 800), 0);
  assert.equal(readingPosition({ top: NaN, height: 100 }, 800), 0);
  assert.equal(readingPosition({ top: 0, height: 100 }, 0), 0);
  assert.equal(readingPosition(null, 800), 0);
});

test("progress: at most once a second, only when moved by >= 0.01", () => {
  assert.equal(progressDelay(null, null, 0.5, 1000), 0);
  assert.equal(progressDelay(0.5, 1000, 0.505, 5000), -1);
  assert.equal(progressDelay(0.5, 1000, 0.51, 5000), 0);
  assert.equal(progressDelay(0.5, 1000, 0.6, 1400), 600);
  assert.equal(progressDelay(0.5, 1000, 0.4, 2000), 0);
});

test("backoff: grows exponentially, full jitter, capped at 30 s", () => {
  const top = () => 0.999999;
  assert.equal(backoffDelay(0, {}, top), 999);
  assert.equal(backoffDelay(1, {}, top), 1999);
  assert.equal(backoffDelay(3, {}, top), 7999);
  assert.equal(backoffDelay(10, {}, top), 29999);
  assert.equal(backoffDelay(60, {}, top), 29999);
  assert.equal(backoffDelay(5, {}, () => 0), 0);
  const seen = new Set();
  for (let i = 0; i < 200; i++) {
    const delay = backoffDelay(4);
    assert.ok(delay >= 0 && delay < 16000);
    seen.add(delay);
  }
  assert.ok(seen.size > 100, "jitter spreads the delays");
});

test("colour: stable per reader id, differs between ids", () => {
  assert.equal(colourFor("abc123"), colourFor("abc123"));
  assert.equal(hueFor("abc123"), hueFor("abc123"));
  assert.match(colourFor("abc123"), /^hsl\(\d{1,3} 70% 45%\)$/);
  const hues = new Set(["a", "b", "c", "d", "e", "f", "g", "h"].map(hueFor));
  assert.ok(hues.size >= 6);
  for (const hue of hues) assert.ok(hue >= 0 && hue < 360);
});

test("names: trimmed, control and format characters removed, at most 40 characters", () => {
  assert.equal(cleanName("  Ada \u0000\u200b "), "Ada");
  assert.equal(cleanName("é".repeat(50)).length, 40);
  assert.equal(cleanName(42), "");
  assert.equal(cleanName("<img src=x onerror=alert(1)>"), "<img src=x onerror=alert(1)>");
});

test("hello sets reader, online, heartbeat and the server clock offset", () => {
  const state = reduce(initialState("article:1"), {
    type: "hello", reader: "r1", online: 3, server_time: 10_500, heartbeat: 15,
  }, 10_000);
  assert.deepEqual([state.reader, state.online, state.heartbeat, state.offset], ["r1", 3, 15, 500]);
  assert.equal(reduce(state, { type: "online", count: 4 }).online, 4);
  assert.equal(reduce(state, { type: "online", count: "x" }).online, 3);
  assert.equal(reduce(state, { type: "pong", server_time: 20_000 }, 19_000).offset, 1000);
});

test("room_state replaces readers; room merges updates newest-wins and drops left", () => {
  let state = initialState("article:1");
  state = reduce(state, {
    type: "room_state", room: "article:1", count: 2, histogram: new Array(20).fill(0),
    readers: [
      { id: "a", name: null, position: 0.2, joined_at: 1, updated_at: 10 },
      { id: "b", name: "Bo", position: 0.9, joined_at: 1, updated_at: 20 },
    ],
  });
  assert.equal(state.count, 2);
  assert.deepEqual(Object.keys(state.readers).sort(), ["a", "b"]);

  // An older update of `a` loses against what we have; a newer one of `b` wins; `c` joins.
  state = reduce(state, {
    type: "room", room: "article:1", count: 3, left: [],
    updates: [
      { id: "a", name: null, position: 0.1, joined_at: 1, updated_at: 5 },
      { id: "b", name: "Bo", position: 0.95, joined_at: 1, updated_at: 30 },
      { id: "c", name: null, position: null, joined_at: 25, updated_at: 25 },
    ],
  });
  assert.equal(state.readers.a.position, 0.2);
  assert.equal(state.readers.b.position, 0.95);
  assert.equal(state.readers.c.position, null);
  assert.equal(state.count, 3);
  assert.equal(state.histogram[4], 1);
  assert.equal(state.histogram[19], 1);
  assert.equal(state.histogram[0], 1);

  state = reduce(state, { type: "room", room: "article:1", count: 2, updates: [], left: ["c"] });
  assert.deepEqual(Object.keys(state.readers).sort(), ["a", "b"]);

  // Frames of other rooms change nothing.
  assert.equal(reduce(state, { type: "room", room: "article:2", count: 9, updates: [], left: ["a"] }), state);
  assert.equal(reduce(state, { type: "bogus" }), state);
});

test("a crowded room's frame brings the histogram of everyone, not of the few readers it lists", () => {
  const histogram = new Array(20).fill(0);
  histogram[0] = 150;
  histogram[10] = 50;
  let state = reduce(initialState("article:1"), {
    type: "room_state", room: "article:1", count: 200, histogram: new Array(20).fill(10), readers: [],
  });
  state = reduce(state, {
    type: "room", room: "article:1", count: 200, left: [], histogram,
    updates: [{ id: "a", name: null, position: 0.9, joined_at: 1, updated_at: 5 }],
  });
  assert.deepEqual(state.histogram, histogram);
  // Without one (an older server), the last histogram known stays: one reader is not the room.
  state = reduce(state, { type: "room", room: "article:1", count: 200, left: [], updates: [] });
  assert.deepEqual(state.histogram, histogram);
});

test("room_state keeps the newest of duplicate readers; visible readers put yours first", () => {
  let state = { ...initialState("article:1"), reader: "me" };
  state = reduce(state, {
    type: "room_state", room: "article:1", count: 3, histogram: [],
    readers: [
      { id: "x", position: 0.5, updated_at: 9 },
      { id: "x", position: 0.4, updated_at: 3 },
      { id: "me", position: 0.1, updated_at: 1 },
      { id: "y", position: 0.7, updated_at: 5 },
    ],
  });
  assert.equal(state.readers.x.position, 0.5);
  assert.deepEqual(visibleReaders(state).map((r) => r.id), ["me", "x", "y"]);
  assert.deepEqual(visibleReaders(state, 2).map((r) => r.id), ["me", "x"]);
});

test("histogram: 20 buckets, 1.0 in the last, no position in the first", () => {
  const h = histogramOf([{ position: 1 }, { position: null }, { position: 0.05 }, { position: 0.049 }]);
  assert.equal(h.length, 20);
  assert.deepEqual([h[0], h[1], h[19]], [2, 1, 1]);
});

test("plurals: the sample of the same CLDR category is used", () => {
  const en = [[1, "%(count)s person reading now"], [2, "%(count)s people reading now"]];
  assert.equal(pluralise(en, 1, "en"), "1 person reading now");
  assert.equal(pluralise(en, 0, "en"), "0 people reading now");
  assert.equal(pluralise(en, 7, "en"), "7 people reading now");
  const pl = [[1, "%(count)s osoba"], [2, "%(count)s osoby"], [5, "%(count)s osób"]];
  assert.equal(pluralise(pl, 22, "pl"), "22 osoby");
  assert.equal(pluralise(pl, 25, "pl"), "25 osób");
  assert.equal(pluralise([], 3), "3");
});

test("plurals in the language the server rendered: Chinese text, Chinese rules; English fallback, English rules", () => {
  const zh = [[0, "%(count)s 人正在阅读"]];
  assert.equal(pluralise(zh, 1, "zh-hans"), "1 人正在阅读");
  assert.equal(pluralise(zh, 7, "zh-hans"), "7 人正在阅读");
  // The server rendered English (no catalogue for the page's language) and says so: "en".
  const en = [[0, "%(count)s people reading now"], [1, "%(count)s person reading now"]];
  assert.equal(pluralise(en, 1, "en"), "1 person reading now");
  assert.equal(pluralise(en, 0, "en"), "0 people reading now");
  const fr = [[0, "%(count)s personne lit"], [2, "%(count)s personnes lisent"]];
  assert.equal(pluralise(fr, 1, "fr"), "1 personne lit");
  assert.equal(pluralise(fr, 0, "fr"), "0 personne lit");
  assert.equal(pluralise(fr, 2, "fr"), "2 personnes lisent");
});

test("format fills the server's templates; durations in the server's language", () => {
  assert.equal(format("%(percent)s%% read", { percent: 40 }), "40% read");
  assert.equal(format("已读 %(percent)s%%", { percent: 40 }), "已读 40%");
  assert.equal(format("%(a)s and %(a)s", { a: "<b>" }), "<b> and <b>");
  assert.equal(formatDuration(42_000), "42 s");
  assert.equal(formatDuration(3_720_000), "1 h 2 min");
  const zh = { seconds: "%(seconds)s 秒", minutes: "%(minutes)s 分钟", hours: "%(hours)s 小时 %(minutes)s 分钟" };
  assert.equal(formatDuration(42_000, zh), "42 秒");
  assert.equal(formatDuration(300_000, zh), "5 分钟");
  assert.equal(formatDuration(3_720_000, zh), "1 小时 2 分钟");
  assert.equal(formatDuration(-5, zh), "0 秒");
});

test("track: beside the article's visible part, below its title, inside the viewport", () => {
  const viewport = { width: 1100, height: 800 };
  // Wide screen: in the gutter left of the article; from below the title to the viewport's bottom.
  assert.deepEqual(trackBox({ top: 100, bottom: 3000, left: 300 }, viewport, 180), { left: 280, top: 198, height: 584 });
  // Scrolled into the article: the whole viewport height, minus the insets.
  assert.deepEqual(trackBox({ top: -900, bottom: 2000, left: 300 }, viewport, -800), { left: 280, top: 18, height: 764 });
  // The article ends on screen: the track ends with it (clear of the footer).
  assert.deepEqual(trackBox({ top: -2400, bottom: 500, left: 300 }, viewport, null), { left: 280, top: 18, height: 464 });
  // Narrow screen (390 px, the article at 20 px): never closer than 20 px to the viewport's edge.
  assert.equal(trackBox({ top: 0, bottom: 3000, left: 20 }, { width: 390, height: 800 }, 100).left, 20);
  assert.equal(trackBox({ top: 0, bottom: 3000, left: 500 }, { width: 390, height: 800 }).left, 370);
  // Too little of the article on screen (or none): no track.
  assert.equal(trackBox({ top: 700, bottom: 3000, left: 300 }, viewport, 760), null);
  assert.equal(trackBox({ top: -3000, bottom: -10, left: 300 }, viewport), null);
  assert.equal(trackBox(null, viewport), null);
});

test("jump: the scroll offset at which the reading position is the reader's", () => {
  // A 3000 px article 500 px down the document, 800 px viewport.
  for (const p of [0, 0.25, 0.5, 1]) {
    const y = scrollTargetFor(p, 500, 3000, 800);
    assert.equal(readingPosition({ top: 500 - y, height: 3000 }, 800), p);
  }
  assert.equal(scrollTargetFor(2, 500, 3000, 800), 2700);
  assert.equal(scrollTargetFor(null, 500, 3000, 800), 500);
  // A short article: fully visible at 1, its top edge at the viewport's bottom at 0; never above 0.
  assert.equal(readingPosition({ top: 300 - scrollTargetFor(1, 300, 400, 800), height: 400 }, 800), 1);
  assert.equal(scrollTargetFor(0.5, 300, 400, 800), 0);
});

test("own marker: room_state.you, else hello.reader (a server without per-room ids)", () => {
  let state = reduce(initialState("article:1"), { type: "hello", reader: "site-id", online: 1 });
  assert.equal(ownId(state), "site-id");
  state = reduce(state, { type: "room_state", room: "article:1", count: 1, you: "room-id",
    readers: [{ id: "room-id", position: 0.2, updated_at: 1 }], histogram: [] });
  assert.equal(ownId(state), "room-id");
  assert.deepEqual(visibleReaders(state).map((r) => r.id), ["room-id"]);
  // Re-keyed by `identify`: the new hello keeps the room's `you` until the new room_state names it.
  state = reduce(state, { type: "hello", reader: "site-id-2", online: 1 });
  assert.equal(ownId(state), "room-id");
  assert.ok("room-id" in state.readers);
  state = reduce(state, { type: "room_state", room: "article:1", count: 1, you: "room-id-2",
    readers: [{ id: "room-id-2", position: 0.2, updated_at: 2 }], histogram: [] });
  assert.equal(ownId(state), "room-id-2");
  // Without `you`, a re-key drops the old own marker at once (its `left` follows from the server).
  let old = reduce(initialState("article:1"), { type: "hello", reader: "a", online: 1 });
  old = reduce(old, { type: "room_state", room: "article:1", count: 1, readers: [{ id: "a", updated_at: 1 }], histogram: [] });
  old = reduce(old, { type: "hello", reader: "b", online: 1 });
  assert.equal(ownId(old), "b");
  assert.ok(!("a" in old.readers));
});

test("ranking frames and a page swap: the room's state goes, the connection's stays", () => {
  let state = reduce(initialState("article:1"), { type: "hello", reader: "me", online: 4, server_time: 5000, heartbeat: 15 }, 4000);
  const rooms = [{ room: "article:2", count: 2, title: "T", url: "/t/" }];
  state = reduce(state, { type: "ranking", rooms });
  assert.deepEqual(state.ranking, rooms);
  assert.equal(reduce(state, { type: "ranking", rooms: "nope" }), state);
  state = reduce(state, { type: "room_state", room: "article:1", count: 3, you: "me1", readers: [{ id: "me1" }], histogram: [] });
  const swapped = forRoom(state, "article:2");
  assert.deepEqual([swapped.room, swapped.count, swapped.you, swapped.readers, swapped.histogram], ["article:2", null, null, {}, null]);
  assert.deepEqual([swapped.reader, swapped.online, swapped.offset, swapped.heartbeat, swapped.ranking], ["me", 4, 1000, 15, rooms]);
  // The old room's frames, still in flight, change nothing any more.
  assert.equal(reduce(swapped, { type: "room", room: "article:1", count: 9, updates: [], left: [] }), swapped);
});
