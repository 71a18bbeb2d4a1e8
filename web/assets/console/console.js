// custody console: the session player (asciinema-player, compiled into the gateway), seeking
// links, and the keyboard shortcuts of `custody play`. No framework, no inline script: the CSP
// allows scripts from the gateway only.

const SPEEDS = [0.5, 1, 2, 4, 8, 16];
const SHORT_SEEK = 5;
const LONG_SEEK = 60;

// As `custody play` does: a quiet stretch plays as one second when idle time is skipped.
const IDLE_LIMIT = 1;

// The absolute times (seconds) of an asciicast v3 recording's events, as the player reads them.
function eventTimes(text) {
  const times = [];
  let t = 0;
  const lines = text.split('\n');
  for (let i = 1; i < lines.length; i += 1) {
    const line = lines[i].trim();
    if (!line.startsWith('[')) continue;
    try { t += Number(JSON.parse(line)[0]) || 0; } catch (_) { continue; }
    times.push(t);
  }
  return times;
}

// Skipping idle time moves every later moment earlier, exactly as the player does it (each gap
// longer than the limit shrinks to the limit). Links, `?t=` and the keys speak recording time;
// the player speaks its own, so every seek goes through these two.
function idleMap(times, limit) {
  const shifted = [];
  let cut = 0;
  let previous = 0;
  for (const t of times) {
    const gap = t - previous;
    if (gap > limit) cut += gap - limit;
    previous = t;
    shifted.push([t, t - cut]);
  }
  const toPlayer = (real) => {
    let at = [0, 0];
    for (const pair of shifted) { if (pair[0] <= real) at = pair; else break; }
    return at[1] + Math.min(real - at[0], limit);
  };
  const toReal = (played) => {
    let at = [0, 0];
    for (const pair of shifted) { if (pair[1] <= played) at = pair; else break; }
    return at[0] + (played - at[1]);
  };
  return { toPlayer, toReal };
}

const identity = { toPlayer: (t) => t, toReal: (t) => t };

async function setupPlayer(el) {
  const speedSelect = document.getElementById('speed');
  const skipIdle = document.getElementById('skip-idle');
  let text;
  try {
    const response = await fetch(el.dataset.src, { credentials: 'same-origin' });
    if (!response.ok) throw new Error(`the recording could not be loaded (${response.status})`);
    text = await response.text();
  } catch (error) {
    el.textContent = String(error.message || error);
    return;
  }
  const times = eventTimes(text);
  let player = null;
  let playing = false;
  let map = identity;

  function create(real, autoPlay) {
    const speed = Number(speedSelect ? speedSelect.value : 1) || 1;
    const skipping = !skipIdle || skipIdle.checked;
    map = skipping ? idleMap(times, IDLE_LIMIT) : identity;
    const options = {
      autoPlay,
      preload: true,
      speed,
      fit: 'width',
      terminalFontFamily: 'ui-monospace, "DejaVu Sans Mono", monospace',
      idleTimeLimit: skipping ? IDLE_LIMIT : 1e9,
    };
    if (player) player.dispose();
    el.replaceChildren();
    player = window.AsciinemaPlayer.create({ data: text }, el, options);
    playing = false;
    player.addEventListener('playing', () => { playing = true; });
    player.addEventListener('pause', () => { playing = false; });
    player.addEventListener('ended', () => { playing = false; });
    if (real > 0) player.seek(map.toPlayer(real));
    return player;
  }

  // The position in recording time.
  function position() {
    return player ? map.toReal(Number(player.getCurrentTime()) || 0) : 0;
  }

  async function seek(real) {
    const t = Math.max(0, real);
    await player.seek(map.toPlayer(t));
    const url = new URL(window.location.href);
    url.searchParams.set('t', t.toFixed(3));
    window.history.replaceState(null, '', url);
  }

  // For people and tests: seek to a moment in recording time, read the position.
  window.custodyPlayer = {
    seek,
    position,
    player: () => player,
  };

  function recreate() {
    create(position(), false);
  }

  create(Number(el.dataset.start) || 0, false);
  if (speedSelect) speedSelect.addEventListener('change', recreate);
  if (skipIdle) skipIdle.addEventListener('change', recreate);

  for (const link of document.querySelectorAll('[data-seek]')) {
    link.addEventListener('click', (event) => {
      event.preventDefault();
      seek(Number(link.dataset.seek) || 0);
      el.scrollIntoView({ block: 'nearest' });
    });
  }

  const commandTimes = [...document.querySelectorAll('.timeline .command')]
    .map((c) => Number(c.closest('a').dataset.seek))
    .filter((t) => Number.isFinite(t));
  const markerTimes = [...document.querySelectorAll('.timeline .marker')]
    .map((c) => Number(c.closest('a').dataset.seek))
    .filter((t) => Number.isFinite(t));
  const hitTimes = [...document.querySelectorAll('ol.hits a[data-seek]')]
    .map((a) => Number(a.dataset.seek))
    .filter((t) => Number.isFinite(t));
  const end = times.length ? times[times.length - 1] : 0;

  function neighbour(list, now, forward) {
    const sorted = [...list].sort((a, b) => a - b);
    return forward
      ? sorted.find((t) => t > now + 0.01)
      : sorted.reverse().find((t) => t < now - 0.01);
  }

  function setSpeed(step) {
    if (!speedSelect) return;
    const i = SPEEDS.indexOf(Number(speedSelect.value));
    const next = SPEEDS[Math.min(SPEEDS.length - 1, Math.max(0, (i < 0 ? 1 : i) + step))];
    speedSelect.value = String(next);
    recreate();
  }

  async function togglePlay() {
    if (playing) await player.pause(); else await player.play();
  }

  document.addEventListener('keydown', async (event) => {
    const target = event.target;
    if (target && ['INPUT', 'SELECT', 'TEXTAREA', 'BUTTON'].includes(target.tagName)) return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const now = position();
    let handled = true;
    switch (event.key) {
      case ' ': await togglePlay(); break;
      case 'ArrowLeft': await seek(now - (event.shiftKey ? LONG_SEEK : SHORT_SEEK)); break;
      case 'ArrowRight': await seek(now + (event.shiftKey ? LONG_SEEK : SHORT_SEEK)); break;
      case '+': case '=': setSpeed(1); break;
      case '-': case '_': setSpeed(-1); break;
      case 'g': case 'Home': await seek(0); break;
      case 'G': case 'End': await seek(end); break;
      case 'n': { const t = neighbour(commandTimes, now, true); if (t !== undefined) await seek(t); break; }
      case 'N': { const t = neighbour(commandTimes, now, false); if (t !== undefined) await seek(t); break; }
      case ']': { const t = neighbour(markerTimes, now, true); if (t !== undefined) await seek(t); break; }
      case '[': { const t = neighbour(markerTimes, now, false); if (t !== undefined) await seek(t); break; }
      case '/': { const q = document.querySelector('.search-in input'); if (q) q.focus(); break; }
      case 's': if (skipIdle) { skipIdle.checked = !skipIdle.checked; recreate(); } break;
      case 'Enter': { const t = neighbour(hitTimes, now, true) ?? hitTimes[0]; if (t !== undefined) await seek(t); break; }
      case '?': { const help = document.getElementById('keys'); if (help) help.open = !help.open; break; }
      default: handled = false;
    }
    if (handled) event.preventDefault();
  });
}

const playerElement = document.getElementById('player');
if (playerElement && window.AsciinemaPlayer) setupPlayer(playerElement);

// Times are shown in UTC by the server; the title shows the reader's local time too.
for (const time of document.querySelectorAll('time[datetime]')) {
  const t = new Date(time.getAttribute('datetime'));
  if (!Number.isNaN(t.getTime())) time.title = t.toLocaleString();
}

// Watching a live session: the player reads the gateway's WebSocket (asciicast v2 stream).
const liveElement = document.getElementById('live');
if (liveElement && window.AsciinemaPlayer) {
  const url = new URL(liveElement.dataset.ws, window.location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  const state = document.getElementById('live-state');
  const player = window.AsciinemaPlayer.create(
    { driver: 'websocket', url: url.toString(), reconnectDelay: () => 2000 },
    liveElement,
    { autoPlay: true, fit: 'width', terminalFontFamily: 'ui-monospace, "DejaVu Sans Mono", monospace' },
  );
  window.custodyLive = player;
  player.addEventListener('playing', () => { if (state) state.textContent = 'Live.'; });
  player.addEventListener('ended', () => { if (state) state.textContent = 'The session ended.'; });
}
