// AI Orchestra playground: watch a team of agents work, live. Plain ES module, no build step, no CDN:
// the SDK's own module files are served by the app under /playground/sdk/.

import { AIOrchestra, NotFoundError } from './sdk/index.js';
import { openConnection } from './sdk/websocket.js';

const KEY_STORAGE = 'orchestra.playground.key';
const SESSION_STORAGE = 'orchestra.playground.session';
const PATTERN_HINTS = {
  debate: 'Debate: each debater has a lane; their rounds line up side by side. The judge’s verdict comes last.',
  review_loop: 'Review loop: planner, coder and reviewer lanes show the iterations in order.',
  fan_out_reduce: 'Fan-out: the workers run in parallel, each in its lane; the synthesizer merges them.',
  pipeline: 'Pipeline: ideators in parallel, then the critic, then the writer.',
};

const $ = (id) => document.getElementById(id);
const ui = {
  keyForm: $('key-form'),
  key: $('api-key'),
  forget: $('forget-key'),
  status: $('conn-status'),
  error: $('error'),
  chatForm: $('chat-form'),
  team: $('team'),
  teamInfo: $('team-info'),
  mode: $('mode'),
  message: $('message'),
  send: $('send'),
  cancel: $('cancel'),
  sessionId: $('session-id'),
  newSession: $('new-session'),
  runState: $('run-state'),
  patternHint: $('pattern-hint'),
  lanes: $('lanes'),
  answer: $('answer'),
  score: $('score'),
  execTime: $('exec-time'),
  execMode: $('exec-mode'),
  tokensTotal: $('tokens-total'),
  response: $('response'),
  chart: $('token-chart'),
  history: $('history'),
  historyEmpty: $('history-empty'),
};

const state = { client: undefined, teams: [], stream: undefined, reconnecting: false };

// -- the key: from the link's fragment (never sent to the server) into this tab's sessionStorage --------

function takeKeyFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const key = params.get('key');
  if (key) {
    sessionStorage.setItem(KEY_STORAGE, key);
    history.replaceState(null, '', location.pathname + location.search); // clear the fragment
  }
  return key;
}

function randomId(prefix) {
  const bytes = crypto.getRandomValues(new Uint8Array(6));
  return `${prefix}-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

// -- messages -------------------------------------------------------------------------------------------

function showError(text, { info = false } = {}) {
  ui.error.textContent = text;
  ui.error.classList.toggle('info', info);
  ui.error.hidden = false;
}

function clearError() {
  ui.error.hidden = true;
  ui.error.textContent = '';
}

function setStatus(text) {
  ui.status.textContent = text;
}

function setRunState(text, kind = '') {
  ui.runState.textContent = text;
  ui.runState.className = `badge ${kind}`;
}

/** A plain sentence for every error the SDK can raise. */
function describe(error) {
  const code = error?.code;
  const retry = error?.retryAfter ?? error?.details?.retry_after;
  switch (code) {
    case 'AUTHENTICATION_ERROR':
      return 'The API key was refused (unknown, revoked or mistyped). Check it and connect again.';
    case 'RATE_LIMIT_ERROR': {
      if (retry === undefined || retry === null) return 'Rate limit reached: wait a few seconds, then retry.';
      const at = new Date(Date.now() + Number(retry) * 1000).toLocaleTimeString();
      return `Rate limit reached: retry in ${Math.ceil(Number(retry))} s (at ${at}).`;
    }
    case 'TIMEOUT_ERROR':
      return error.statusCode === undefined
        ? 'Timeout: no answer within the client’s time limit.'
        : 'Timeout: the run exceeded its mode’s deadline and was stopped on the server.';
    case 'CANCELLED':
      return 'Cancelled: the run was stopped on the server; no more model calls are made. The session goes on.';
    case 'STREAM_INTERRUPTED':
      return (
        'The connection dropped during the run, so this run is lost: the server does not support ' +
        'resuming a run yet. Send the message again; the session keeps its earlier turns.'
      );
    case 'CONNECTION_ERROR':
      return `Could not reach the server: ${error.message}`;
    case 'SERVICE_UNAVAILABLE':
      return `The service is busy or unavailable${retry ? `: retry in ${Math.ceil(retry)} s` : ''}.`;
    case 'VALIDATION_ERROR':
      return `Refused: ${error.message}`;
    default:
      return code ? `${code}: ${error.message}` : String(error?.message ?? error);
  }
}

// -- connecting: check the key and read the teams with the WebSocket `swarms` command --------------------

async function probe(key) {
  const url = `${location.origin.replace(/^http/, 'ws')}/chat/ws/playground/${randomId('probe')}`;
  const conn = await openConnection({
    url,
    apiKey: key,
    WebSocket: globalThis.WebSocket,
    timeoutMs: 15_000,
    idleTimeoutMs: 15_000,
  });
  try {
    return await conn.command('swarms');
  } finally {
    conn.close(1000, 'done');
  }
}

let connectGeneration = 0;

async function connect(key) {
  const generation = ++connectGeneration; // a newer connect (another key, a #key= link) wins
  clearError();
  ui.send.disabled = true;
  setStatus('Connecting…');
  state.client?.close();
  state.client = undefined;
  try {
    const { teams } = await probe(key);
    if (generation !== connectGeneration) return;
    state.teams = teams;
    fillTeams(teams);
    state.client = new AIOrchestra({ apiKey: key, baseUrl: location.origin });
    setStatus('Connected');
    ui.send.disabled = false;
    await refreshHistory();
  } catch (error) {
    if (generation !== connectGeneration) return;
    setStatus('Not connected');
    showError(describe(error));
  }
}

function fillTeams(teams) {
  const chosen = ui.team.value;
  ui.team.replaceChildren(new Option('Let the router choose', ''));
  for (const t of teams) ui.team.append(new Option(`${t.swarm_type} (${t.pattern})`, t.swarm_type));
  ui.team.value = teams.some((t) => t.swarm_type === chosen) ? chosen : 'coding-debate';
  if (ui.team.selectedIndex < 0) ui.team.value = '';
  describeTeam();
}

function teamOf(name) {
  return state.teams.find((t) => t.swarm_type === name);
}

function describeTeam() {
  const team = teamOf(ui.team.value);
  const mode = team?.modes?.[ui.mode.value];
  if (!team) {
    ui.teamInfo.textContent = 'The router picks a team from the message.';
    return;
  }
  const shape = mode ? ` In ${ui.mode.value}: ${describeShape(mode)}.` : '';
  ui.teamInfo.textContent = `${team.description}${shape}`;
}

function describeShape(mode) {
  const agents = Object.entries(mode.agents ?? {})
    .map(([name, n]) => `${n} × ${name}`)
    .join(', ');
  return `${agents}; ${mode.rounds} round(s)${mode.judge ? '; a judge' : ''}; deadline ${mode.deadline_s} s`;
}

/** After a dropped socket: try again with backoff until the server answers, then say so. */
async function reconnect() {
  if (state.reconnecting) return;
  state.reconnecting = true;
  const key = sessionStorage.getItem(KEY_STORAGE);
  try {
    for (let attempt = 0; key && state.client; attempt++) {
      setStatus(`Reconnecting… (attempt ${attempt + 1})`);
      try {
        await probe(key);
        setStatus('Connected (reconnected)');
        return;
      } catch (error) {
        if (error?.code === 'AUTHENTICATION_ERROR') {
          setStatus('Not connected');
          showError(describe(error));
          return;
        }
        await new Promise((r) => setTimeout(r, Math.min(1000 * 2 ** attempt, 15_000)));
      }
    }
  } finally {
    state.reconnecting = false;
  }
}

// -- a run: one lane per agent, its turns streaming in --------------------------------------------------

function resetLanes(team) {
  ui.lanes.replaceChildren();
  ui.patternHint.textContent = PATTERN_HINTS[team?.pattern] ?? '';
  ui.answer.hidden = true;
}

function lane(event) {
  let el = ui.lanes.querySelector(`[data-agent="${CSS.escape(event.agent)}"]`);
  if (el) return el;
  const judge = event.role === 'judge';
  el = document.createElement('article');
  el.className = `lane${judge ? ' judge' : ''}`;
  el.dataset.agent = event.agent;
  el.dataset.role = event.role;
  el.setAttribute('aria-label', `${event.agent} (${event.role})`);
  const h = document.createElement('h3');
  const name = document.createElement('span');
  name.textContent = event.agent;
  const role = document.createElement('span');
  role.className = 'role';
  role.textContent = event.role;
  h.append(name, role);
  el.append(h);
  // Lanes in a stable order (coder-1, coder-2, ...) whenever they appear; the judge's lane stays last.
  const rank = (lane) => [lane.dataset.role === 'judge' ? 1 : 0, lane.dataset.agent];
  const [r, a] = rank(el);
  const next = [...ui.lanes.children].find((other) => {
    const [or, oa] = rank(other);
    return or > r || (or === r && oa.localeCompare(a, undefined, { numeric: true }) > 0);
  });
  ui.lanes.insertBefore(el, next ?? null);
  return el;
}

function turnText(event, pattern) {
  const el = lane(event);
  let turn = el.querySelector(`[data-round="${event.round}"]`);
  if (!turn) {
    turn = document.createElement('section');
    turn.className = 'turn';
    turn.dataset.round = String(event.round);
    const label = document.createElement('div');
    label.className = 'label';
    const word = pattern === 'review_loop' ? 'iteration' : 'round';
    label.textContent = event.role === 'judge' ? 'verdict' : `${word} ${event.round}`;
    const text = document.createElement('p');
    text.className = 'text';
    turn.append(label, text);
    el.append(turn);
  }
  return turn.querySelector('.text');
}

function onEvent(event, pattern) {
  if (event.type === 'turn_start') {
    turnText(event, pattern);
    lane(event).classList.add('active');
  } else if (event.type === 'token') {
    const text = turnText(event, pattern);
    text.append(event.token);
    text.scrollTop = text.scrollHeight;
  } else if (event.type === 'turn_end') {
    const el = lane(event);
    el.classList.remove('active');
    const turn = el.querySelector(`[data-round="${event.round}"] .label`);
    if (turn && event.step) {
      turn.textContent += ` · ${event.step.completionTokens} tokens · ${event.step.latencyS.toFixed(2)} s`;
    }
  }
}

function showAnswer(result) {
  ui.response.textContent = result.response;
  ui.score.textContent = Number(result.qualityScore).toFixed(2);
  ui.execTime.textContent = `${Number(result.executionTime).toFixed(2)} s`;
  ui.execMode.textContent = result.executionMode;
  ui.tokensTotal.textContent = String(result.metadata?.tokensUsed ?? '');
  const perAgent = new Map();
  for (const s of result.metadata?.processingSteps ?? []) {
    const t = perAgent.get(s.agent) ?? { role: s.role, total: 0, completion: 0 };
    t.total += s.promptTokens + s.completionTokens;
    t.completion += s.completionTokens;
    perAgent.set(s.agent, t);
  }
  const max = Math.max(1, ...[...perAgent.values()].map((t) => t.total));
  ui.chart.replaceChildren();
  for (const [agent, t] of perAgent) {
    const li = document.createElement('li');
    if (t.role === 'judge') li.className = 'judge';
    const name = document.createElement('span');
    name.textContent = agent;
    const bar = document.createElement('span');
    bar.className = 'bar';
    bar.setAttribute('aria-hidden', 'true');
    const fill = document.createElement('span');
    fill.className = 'fill';
    fill.style.display = 'block';
    fill.style.width = `${(100 * t.total) / max}%`;
    bar.append(fill);
    const num = document.createElement('span');
    num.className = 'num';
    num.textContent = String(t.total);
    num.title = `${t.completion} completion tokens`;
    li.append(name, bar, num);
    ui.chart.append(li);
  }
  ui.answer.hidden = false;
}

async function refreshHistory() {
  const sessionId = ui.sessionId.value;
  if (!state.client || !sessionId) return;
  let turns = [];
  try {
    turns = (await state.client.getSession(sessionId)).turns;
  } catch (error) {
    if (!(error instanceof NotFoundError)) return; // the history is extra: a failure here is not the run's
  }
  ui.history.replaceChildren();
  for (const t of turns) {
    const li = document.createElement('li');
    const q = document.createElement('div');
    q.className = 'q';
    q.textContent = t.message;
    const meta = document.createElement('div');
    meta.className = 'hint';
    meta.textContent = `${t.swarmType} · ${t.optimizationMode} · ${new Date(t.createdAt).toLocaleTimeString()}`;
    const a = document.createElement('div');
    a.className = 'a';
    a.textContent = t.response;
    li.append(q, meta, a);
    ui.history.append(li);
  }
  ui.historyEmpty.hidden = turns.length > 0;
}

async function run() {
  if (!state.client || state.stream) return;
  clearError();
  const team = teamOf(ui.team.value);
  resetLanes(team);
  const params = {
    message: ui.message.value,
    sessionId: ui.sessionId.value,
    optimizationMode: ui.mode.value,
  };
  if (ui.team.value) params.swarmType = ui.team.value;
  const stream = state.client.streamChat(params);
  state.stream = stream;
  ui.send.disabled = true;
  ui.cancel.disabled = false;
  setRunState('running', 'running');
  try {
    for await (const event of stream) onEvent(event, team?.pattern);
    showAnswer(await stream);
    setRunState('done', 'done');
  } catch (error) {
    const cancelled = error?.code === 'CANCELLED';
    setRunState(cancelled ? 'cancelled' : 'failed', 'failed');
    showError(describe(error), { info: cancelled });
    if (error?.code === 'STREAM_INTERRUPTED' || error?.code === 'CONNECTION_ERROR') reconnect();
  } finally {
    for (const el of ui.lanes.querySelectorAll('.lane.active')) el.classList.remove('active');
    state.stream = undefined;
    ui.cancel.disabled = true;
    ui.send.disabled = !state.client;
    await refreshHistory();
  }
}

// -- wiring ---------------------------------------------------------------------------------------------

function setSession(id) {
  ui.sessionId.value = id;
  sessionStorage.setItem(SESSION_STORAGE, id);
}

ui.keyForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const key = ui.key.value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY_STORAGE, key);
  connect(key);
});
ui.forget.addEventListener('click', () => {
  sessionStorage.removeItem(KEY_STORAGE);
  ui.key.value = '';
  state.client?.close();
  state.client = undefined;
  ui.send.disabled = true;
  setStatus('Not connected');
  ui.key.focus();
});
ui.chatForm.addEventListener('submit', (e) => {
  e.preventDefault();
  run();
});
ui.message.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) ui.chatForm.requestSubmit();
});
ui.cancel.addEventListener('click', async () => {
  const stream = state.stream;
  if (!stream) return;
  ui.cancel.disabled = true;
  setRunState('cancelling…', 'running');
  await stream.cancel().catch(() => false);
});
ui.newSession.addEventListener('click', () => {
  setSession(randomId('pg'));
  ui.history.replaceChildren();
  ui.historyEmpty.hidden = false;
  resetLanes(teamOf(ui.team.value));
  setRunState('idle');
});
ui.sessionId.addEventListener('change', () => {
  setSession(ui.sessionId.value.trim() || randomId('pg'));
  refreshHistory();
});
ui.team.addEventListener('change', describeTeam);
ui.mode.addEventListener('change', describeTeam);

// A #key= link opened in a tab already showing the page changes only the fragment: connect with it too.
window.addEventListener('hashchange', () => {
  const key = takeKeyFromFragment();
  if (key) {
    ui.key.value = key;
    connect(key);
  }
});

takeKeyFromFragment();
setSession(sessionStorage.getItem(SESSION_STORAGE) || randomId('pg'));
const saved = sessionStorage.getItem(KEY_STORAGE);
if (saved) {
  ui.key.value = saved;
  connect(saved);
}
