// custody console: the session player (asciinema-player, compiled into the gateway), seeking
// links, and the keyboard shortcuts of `custody play`. No framework, no inline script: the CSP
// allows scripts from the gateway only.

const SPEEDS = [0.5, 1, 2, 4, 8, 16];
const SHORT_SEEK = 5;
const LONG_SEEK = 30;

function setupPlayer(el) {
  const src = el.dataset.src;
  let markers = [];
  try { markers = JSON.parse(el.dataset.markers || '[]'); } catch (_) { markers = []; }
  const speedSelect = document.getElementById('speed');
  const skipIdle = document.getElementById('skip-idle');
  let player = null;

  function create(startAt, autoPlay) {
    const speed = Number(speedSelect ? speedSelect.value : 1) || 1;
    const options = {
      startAt,
      autoPlay,
      preload: true,
      speed,
      fit: 'width',
      terminalFontFamily: 'ui-monospace, "DejaVu Sans Mono", monospace',
    };
    if (!skipIdle || skipIdle.checked) options.idleTimeLimit = 2;
    if (player) player.dispose();
    el.replaceChildren();
    player = window.AsciinemaPlayer.create(src, el, options);
    window.custodyPlayer = player;
    return player;
  }

  async function position() {
    return player ? Number(await player.getCurrentTime()) || 0 : 0;
  }

  async function seek(seconds) {
    const t = Math.max(0, seconds);
    await player.seek(t);
    const url = new URL(window.location.href);
    url.searchParams.set('t', t.toFixed(3));
    window.history.replaceState(null, '', url);
  }

  async function recreate() {
    const t = await position();
    create(t, false);
  }

  const start = Number(el.dataset.start) || 0;
  create(start, false);
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
  const markerTimes = markers.map((m) => Number(m[0]));

  function neighbour(times, now, forward) {
    const sorted = [...times].sort((a, b) => a - b);
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

  document.addEventListener('keydown', async (event) => {
    const target = event.target;
    if (target && ['INPUT', 'SELECT', 'TEXTAREA', 'BUTTON'].includes(target.tagName)) return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const now = await position();
    let handled = true;
    switch (event.key) {
      case ' ': await player.togglePlay(); break;
      case 'ArrowLeft': await seek(now - (event.shiftKey ? LONG_SEEK : SHORT_SEEK)); break;
      case 'ArrowRight': await seek(now + (event.shiftKey ? LONG_SEEK : SHORT_SEEK)); break;
      case '+': case '=': setSpeed(1); break;
      case '-': case '_': setSpeed(-1); break;
      case 'g': case 'Home': await seek(0); break;
      case 'G': case 'End': await seek(Number(await player.getDuration()) || now); break;
      case 'n': { const t = neighbour(commandTimes, now, true); if (t !== undefined) await seek(t); break; }
      case 'N': { const t = neighbour(commandTimes, now, false); if (t !== undefined) await seek(t); break; }
      case ']': { const t = neighbour(markerTimes, now, true); if (t !== undefined) await seek(t); break; }
      case '[': { const t = neighbour(markerTimes, now, false); if (t !== undefined) await seek(t); break; }
      case '/': { const q = document.querySelector('.search-in input'); if (q) q.focus(); break; }
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
  window.custodyPlayer = player;
  player.addEventListener('playing', () => { if (state) state.textContent = 'Live.'; });
  player.addEventListener('ended', () => { if (state) state.textContent = 'The session ended.'; });
}
