// Live readership for the demo blog: a minimal client of /ws/presence/ (protocol v1).
// A stand-in until the presence app ships its own widget; no build step, no dependencies.
(function () {
  "use strict";

  var SESSION_KEY = "presence.session";
  var PROGRESS_INTERVAL_MS = 1000;  // at most one `progress` frame per second
  var PROGRESS_MIN_DELTA = 0.01;    // ...and only when it moved by at least 1 %
  var BACKOFF_MIN_MS = 1000;
  var BACKOFF_MAX_MS = 30000;

  var memorySession = null;

  function newSessionId() {
    var alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
    var bytes = new Uint8Array(16);
    if (window.crypto && window.crypto.getRandomValues) {
      window.crypto.getRandomValues(bytes);
    } else {
      for (var i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
    }
    var id = "";
    for (var j = 0; j < bytes.length; j++) id += alphabet[bytes[j] % alphabet.length];
    return id;
  }

  // One id per browser, shared by its tabs (localStorage), so tabs count once.
  function sessionId() {
    try {
      var stored = window.localStorage.getItem(SESSION_KEY);
      if (stored && /^[a-z0-9]{16}$/.test(stored)) return stored;
      stored = newSessionId();
      window.localStorage.setItem(SESSION_KEY, stored);
      return stored;
    } catch (e) {
      // Storage disabled (private mode, blocked cookies): keep one id for this page.
      if (!memorySession) memorySession = newSessionId();
      return memorySession;
    }
  }

  var onlineBox = document.getElementById("presence-online");
  var onlineCount = onlineBox && onlineBox.querySelector("[data-presence-online-count]");
  var readingBox = document.getElementById("presence-reading");
  var readingCount = readingBox && readingBox.querySelector("[data-presence-room-count]");
  var articleEl = document.querySelector("[data-presence-room]");
  var room = articleEl ? articleEl.getAttribute("data-presence-room") : null;

  function show(box, countEl, value) {
    if (!box || !countEl || typeof value !== "number") return;
    countEl.textContent = String(value);
    box.hidden = false;
  }

  // How far down the article the reader is: the share of the article element that the
  // bottom of the viewport has passed, in [0, 1].
  function readingPosition() {
    var rect = articleEl.getBoundingClientRect();
    if (rect.height <= 0) return 0;
    var seen = (window.innerHeight || document.documentElement.clientHeight) - rect.top;
    return Math.min(1, Math.max(0, seen / rect.height));
  }

  var socket = null;
  var pingTimer = null;
  var progressTimer = null;
  var reconnectTimer = null;
  var backoff = BACKOFF_MIN_MS;
  var lastSentPosition = null;
  var joined = false;

  function send(frame) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(frame));
  }

  function sendProgress() {
    if (!joined) return;
    var position = readingPosition();
    if (lastSentPosition !== null && Math.abs(position - lastSentPosition) < PROGRESS_MIN_DELTA) return;
    lastSentPosition = position;
    send({ type: "progress", room: room, position: Math.round(position * 1000) / 1000 });
  }

  function stopTimers() {
    clearInterval(pingTimer);
    clearInterval(progressTimer);
    pingTimer = progressTimer = null;
  }

  function onMessage(event) {
    var frame;
    try {
      frame = JSON.parse(event.data);
    } catch (e) {
      return;
    }
    switch (frame.type) {
      case "hello":
        backoff = BACKOFF_MIN_MS;
        show(onlineBox, onlineCount, frame.online);
        clearInterval(pingTimer);
        var heartbeat = Number(frame.heartbeat) > 0 ? Number(frame.heartbeat) : 20;
        pingTimer = setInterval(function () { send({ type: "ping" }); }, heartbeat * 1000);
        if (room && !joined) send({ type: "join", room: room });
        break;
      case "online":
        show(onlineBox, onlineCount, frame.count);
        break;
      case "room_state":
        if (frame.room !== room) break;
        joined = true;
        show(readingBox, readingCount, frame.count);
        sendProgress();
        break;
      case "room":
        if (frame.room === room) show(readingBox, readingCount, frame.count);
        break;
      case "error":
        if (window.console) console.debug("presence:", frame.code, frame.message);
        break;
    }
  }

  function scheduleReconnect() {
    if (reconnectTimer) return;
    // Exponential backoff with jitter, so a restarted server is not hit by every tab at once.
    var delay = backoff / 2 + Math.random() * (backoff / 2);
    backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
    reconnectTimer = setTimeout(function () {
      reconnectTimer = null;
      connect();
    }, delay);
  }

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var url = scheme + window.location.host + "/ws/presence/?session=" + encodeURIComponent(sessionId());
    try {
      socket = new WebSocket(url);
    } catch (e) {
      scheduleReconnect();
      return;
    }
    joined = false;
    lastSentPosition = null;
    socket.onmessage = onMessage;
    socket.onclose = function () {
      stopTimers();
      joined = false;
      socket = null;
      scheduleReconnect();
    };
    if (room) progressTimer = setInterval(sendProgress, PROGRESS_INTERVAL_MS);
  }

  if (!("WebSocket" in window)) return;
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", connect);
  } else {
    connect();
  }
})();
