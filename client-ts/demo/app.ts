/**
 * The peerd demo page: a room chat through peerd (topics, presence, one-to-one sends), a WebRTC
 * data-channel chat whose offer, answer and ICE candidates travel through peerd's signaling, and
 * RPC in both directions (the page answers `whoami` and `ask`; the RPC box calls the server or
 * another page).
 *
 * Bundled by demo/serve.ts (esbuild) from this file and the client's src/index.ts. Page
 * parameters: `?server=ws://host:port/` (default ws://<this page's host>:7401/), `name=` and
 * `room=` prefill the form, `join=1` joins at once. The browser tests (test/browser-*.test.ts)
 * drive the page through its controls and read what it saw from `window.demo` (see `DemoHooks`).
 */
import { connect, PeerdError, type Peer, type Topic, type PeerEvents, type PresenceEvent, type SignalMessage, type TopicMessageEvent } from '../src/index.js';

// ---------------------------------------------------------------------------------------------
// What the page saw, kept for the tests (and handy in the console).

export interface ChatEntry { from: string; text: string; direct: boolean; mine: boolean; to: string | null; t: number }
export interface RtcEntry { from: string; text: string; mine: boolean; t: number }
export interface PresenceEntry { change: 'join' | 'leave'; peerId: string; t: number }
export interface HandledCall { method: string; from: string | null; params: string; t: number }
export interface RpcOutcome { method: string; peer: string | null; ok: boolean; result: string; code: number; codeName: string }
export interface ConnInfo {
  id: string; remote: string | null; initiator: boolean;
  connectionState: RTCPeerConnectionState; iceConnectionState: RTCIceConnectionState;
  channel: RTCDataChannelState | 'none';
  localCandidates: string[]; remoteCandidates: string[];
}
export interface CandidateInfo { candidateType: string; address: string; port: number; protocol: string }
export interface DemoHooks {
  serverUrl: string;
  peer(): Peer | null;
  me(): string | null;
  room(): string | null;
  members(): string[];
  conns(): ConnInfo[];
  /** The candidate pair ICE selected for the connection to `remote`, from getStats(). */
  selectedPair(remote: string): Promise<{ local: CandidateInfo; remote: CandidateInfo } | null>;
  chat: ChatEntry[];
  rtc: RtcEntry[];
  presence: PresenceEntry[];
  handled: HandledCall[];
  rpc: RpcOutcome[];
  errors: string[];
  log: string[];
}

declare global {
  interface Window { demo: DemoHooks }
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

const enc = new TextEncoder();
const dec = new TextDecoder();

function $<T extends HTMLElement = HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} missing from the page`);
  return el as T;
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, props: Partial<HTMLElementTagNameMap[K]> = {}, ...children: (Node | string)[]): HTMLElementTagNameMap[K] {
  const e = Object.assign(document.createElement(tag), props);
  e.append(...children);
  return e;
}

/** Not crypto.randomUUID: that one needs a secure context, and the demo may be served over plain http to a LAN. */
function randomId(): string {
  return Math.random().toString(36).slice(2, 10) + Date.now().toString(36).slice(-4);
}

function describe(err: unknown): string {
  if (err instanceof PeerdError) return `${err.codeName} (${err.code}): ${err.message}`;
  if (err instanceof Error) return err.message;
  return String(err);
}

function appendLog(list: HTMLElement, li: HTMLElement): void {
  const stick = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
  list.append(li);
  if (stick) list.scrollTop = list.scrollHeight;
}

// ---------------------------------------------------------------------------------------------
// Page state.

const params = new URLSearchParams(location.search);
const serverUrl = params.get('server') ?? `ws://${location.hostname || '127.0.0.1'}:7401/`;

let peer: Peer | null = null;
let topic: Topic | null = null;
let watch: PeerEvents | null = null;
let room: string | null = null;
const members = new Set<string>();

const hooks: DemoHooks = {
  serverUrl,
  peer: () => peer,
  me: () => peer?.peerId ?? null,
  room: () => room,
  members: () => [...members].sort(),
  conns: () => [...allConns()].map(connInfo),
  selectedPair: async (remote) => {
    const c = conns.get(remote);
    if (!c) return null;
    const stats = new Map<string, Record<string, unknown>>();
    (await c.pc.getStats()).forEach((s: Record<string, unknown>) => stats.set(s.id as string, s));
    const transport = [...stats.values()].find((s) => s.type === 'transport');
    const pair = stats.get(transport?.selectedCandidatePairId as string);
    if (!pair) return null;
    const cand = (id: unknown): CandidateInfo => {
      const s = stats.get(id as string) ?? {};
      return { candidateType: String(s.candidateType), address: String(s.address ?? s.ip), port: Number(s.port), protocol: String(s.protocol) };
    };
    return { local: cand(pair.localCandidateId), remote: cand(pair.remoteCandidateId) };
  },
  chat: [], rtc: [], presence: [], handled: [], rpc: [], errors: [], log: [],
};
window.demo = hooks;

function logEvent(text: string): void {
  const line = `${new Date().toISOString().slice(11, 23)} ${text}`;
  hooks.log.push(line);
  appendLog($('event-log'), el('li', { textContent: line }));
}

function showError(err: unknown, what: string): void {
  const text = `${what}: ${describe(err)}`;
  hooks.errors.push(text);
  $('error').textContent = text;
  logEvent(`error: ${text}`);
}

function clearError(): void {
  $('error').textContent = '';
}

function me(): string {
  return peer?.peerId ?? '?';
}

// ---------------------------------------------------------------------------------------------
// Connection, room, presence.

function renderHeader(): void {
  const state = peer?.state ?? 'idle';
  const s = $('state');
  s.textContent = state;
  s.dataset.state = state;
  $('me').textContent = peer?.peerId ?? '-';
  $('current-room').textContent = room ?? '-';
  const inRoom = room !== null && state === 'active';
  for (const id of ['chat-text', 'chat-send', 'call-room', 'rtc-text', 'rtc-send']) {
    ($(id) as HTMLInputElement | HTMLButtonElement).disabled = !inRoom;
  }
  ($('rpc-call') as HTMLButtonElement).disabled = state !== 'active';
  ($('leave') as HTMLButtonElement).disabled = room === null;
}

function renderMembers(): void {
  const list = $('members');
  list.replaceChildren();
  const to = $<HTMLSelectElement>('chat-to');
  const chosen = to.value;
  to.replaceChildren(el('option', { value: '', textContent: 'everyone' }));
  for (const id of hooks.members()) {
    const mine = id === peer?.peerId;
    const li = el('li', {}, el('span', { className: 'id', textContent: mine ? `${id} (you)` : id, title: id }));
    li.dataset.peer = id;
    if (!mine) {
      li.append(
        el('button', { type: 'button', className: 'secondary msg', textContent: 'Message', title: `send to ${id} only`, onclick: () => { to.value = id; $('chat-text').focus(); } }),
        el('button', { type: 'button', className: 'secondary call', textContent: 'Call', title: `open a data channel to ${id}`, onclick: () => void callPeer(id) }),
      );
      to.append(el('option', { value: id, textContent: id }));
    }
    list.append(li);
  }
  to.value = hooks.members().includes(chosen) ? chosen : '';
}

async function ensurePeer(name: string): Promise<Peer> {
  if (peer && peer.state !== 'closed' && (name === '' || name === peer.peerId)) {
    await peer.whenReady();
    return peer;
  }
  if (peer) {
    leaveRoom();
    peer.disconnect();
  }
  const p = connect(serverUrl, name ? { peerId: name } : {});
  peer = p;
  p.addEventListener('statechange', (e) => {
    const { state, previous } = (e as CustomEvent<{ state: string; previous: string }>).detail;
    logEvent(`connection ${previous} -> ${state}`);
    renderHeader();
  });
  p.addEventListener('close', (e) => {
    const { code, reason } = (e as CustomEvent<{ code: number; reason: string }>).detail;
    logEvent(`connection closed: code ${code}${reason ? ` (${reason})` : ''}`);
  });
  registerHandlers(p);
  p.signaling.on((s) => onSignal(s));
  renderHeader();
  try {
    await p.whenReady();
  } catch (err) {
    if (peer === p) peer = null;
    renderHeader();
    throw err;
  }
  logEvent(`connected to ${serverUrl} as ${p.peerId}`);
  return p;
}

async function joinRoom(name: string, roomName: string): Promise<void> {
  clearError();
  const p = await ensurePeer(name);
  if (room !== null) leaveRoom();
  room = roomName;
  const t = p.join(roomName);
  const w = p.watch(roomName);
  topic = t;
  watch = w;
  t.addEventListener('message', (e) => onTopicMessage(e));
  w.addEventListener('join', (e) => onPresence('join', e));
  w.addEventListener('leave', (e) => onPresence('leave', e));
  renderHeader();
  try {
    await Promise.all([t.ready, w.ready]);
  } catch (err) {
    leaveRoom();
    throw err;
  }
  logEvent(`joined room ${roomName}`);
}

function leaveRoom(): void {
  if (room === null) return;
  for (const c of [...allConns()]) closeConn(c, true);
  topic?.close();
  watch?.close();
  logEvent(`left room ${room}`);
  topic = null;
  watch = null;
  room = null;
  members.clear();
  renderMembers();
  renderHeader();
}

function onPresence(change: 'join' | 'leave', e: PresenceEvent): void {
  if (e.topic !== null && e.topic !== room) return;
  hooks.presence.push({ change, peerId: e.peerId, t: Date.now() });
  if (change === 'join') members.add(e.peerId);
  else {
    members.delete(e.peerId);
    const c = conns.get(e.peerId);
    if (c) closeConn(c, false);
  }
  logEvent(`${e.peerId} ${change === 'join' ? 'joined' : 'left'}`);
  renderMembers();
}

// ---------------------------------------------------------------------------------------------
// Room chat through peerd: Topic.publish (everyone) and Topic.send (one peer).

function addChat(entry: ChatEntry): void {
  hooks.chat.push(entry);
  const li = el('li');
  if (entry.mine) {
    li.className = 'mine';
    li.append(`you${entry.to ? ` → ${entry.to}` : ''}: ${entry.text}`);
  } else {
    li.append(el('span', { className: 'from', textContent: entry.from }), `: ${entry.text}`);
    if (entry.direct) li.append(el('span', { className: 'tag direct', textContent: 'to you' }));
  }
  appendLog($('chat-log'), li);
}

function onTopicMessage(e: TopicMessageEvent): void {
  if (e.topic !== room) return;
  addChat({ from: e.peerId, text: e.text(), direct: e.direct, mine: false, to: null, t: Date.now() });
}

async function sendChat(text: string, to: string): Promise<void> {
  if (!topic) throw new Error('join a room first');
  if (to) await topic.send(to, text);
  else await topic.publish(text);
  addChat({ from: me(), text, direct: to !== '', mine: true, to: to || null, t: Date.now() });
}

// ---------------------------------------------------------------------------------------------
// WebRTC data channels, signaled through peerd.
//
// Payloads (JSON): offer/answer {id, sdp}, candidate {id, candidate, sdpMid, sdpMLineIndex,
// usernameFragment}, bye {id}. `id` names one RTCPeerConnection on both sides, so an answer or
// candidate always reaches the connection it belongs to.
//
// "Call the room" sends one offer to every other member (Signal with no target). The first
// answer takes that connection; a later answer to the same offer gets a fresh offer of its own
// (an SDP offer can be answered once). "Call" on a member sends a directed offer.
// Two offers crossing between the same pair (glare): the peer whose id sorts first ignores the
// other's offer and keeps its own, the other one gives way and answers.

interface Conn {
  id: string;
  remote: string | null;
  initiator: boolean;
  pc: RTCPeerConnection;
  dc: RTCDataChannel | null;
  outbox: RTCIceCandidateInit[];      // local candidates gathered before we know who answers
  sentTo: Set<string>;                // a room offer: the members it went to
  localCandidates: string[];
  remoteCandidates: string[];
  closed: boolean;
}

const conns = new Map<string, Conn>(); // by remote peer id
let roomCall: Conn | null = null;      // our room offer, until its first answer
const myRoomOffers = new Set<string>();
let signalChain: Promise<void> = Promise.resolve();

function* allConns(): Iterable<Conn> {
  yield* conns.values();
  if (roomCall) yield roomCall;
}

function connInfo(c: Conn): ConnInfo {
  return {
    id: c.id, remote: c.remote, initiator: c.initiator,
    connectionState: c.pc.connectionState, iceConnectionState: c.pc.iceConnectionState,
    channel: c.dc?.readyState ?? 'none',
    localCandidates: [...c.localCandidates], remoteCandidates: [...c.remoteCandidates],
  };
}

function renderConns(): void {
  const list = $('conns');
  list.replaceChildren();
  for (const c of allConns()) {
    const open = c.dc?.readyState === 'open';
    const st = el('span', { className: 'st', textContent: open ? 'data channel open' : `${c.pc.connectionState}${c.remote ? '' : ', waiting for an answer'}` });
    st.dataset.open = String(open);
    const li = el('li', {}, c.remote ?? 'the room', st,
      el('button', { type: 'button', className: 'secondary hangup', textContent: 'Hang up', onclick: () => closeConn(c, true) }));
    li.dataset.peer = c.remote ?? '';
    list.append(li);
  }
}

function newConn(id: string, remote: string | null, initiator: boolean): Conn {
  // Host candidates only: no STUN or TURN server, so nothing leaves the machines' own addresses.
  const pc = new RTCPeerConnection({ iceServers: [] });
  const c: Conn = { id, remote, initiator, pc, dc: null, outbox: [], sentTo: new Set(), localCandidates: [], remoteCandidates: [], closed: false };
  pc.onicecandidate = (e) => {
    if (!e.candidate || !e.candidate.candidate) return; // end of candidates
    c.localCandidates.push(e.candidate.candidate);
    const init = e.candidate.toJSON();
    if (c.remote) sendCandidate(c, init);
    else c.outbox.push(init);
  };
  pc.onconnectionstatechange = () => {
    if (c.closed) return;
    logEvent(`webrtc ${c.remote ?? 'room'}: ${pc.connectionState}`);
    renderConns();
  };
  pc.ondatachannel = (e) => attachChannel(c, e.channel);
  if (initiator) attachChannel(c, pc.createDataChannel('chat'));
  return c;
}

function attachChannel(c: Conn, ch: RTCDataChannel): void {
  c.dc = ch;
  ch.onopen = () => { logEvent(`data channel open with ${c.remote}`); addRtc({ from: c.remote ?? '?', text: 'data channel open', mine: false, t: Date.now() }, true); renderConns(); };
  ch.onclose = () => { if (!c.closed) logEvent(`data channel closed with ${c.remote}`); renderConns(); };
  ch.onmessage = (e) => addRtc({ from: c.remote ?? '?', text: typeof e.data === 'string' ? e.data : dec.decode(e.data as ArrayBuffer), mine: false, t: Date.now() });
}

function addRtc(entry: RtcEntry, system = false): void {
  if (!system) hooks.rtc.push(entry);
  const li = el('li');
  if (system) {
    li.className = 'sys';
    li.textContent = `${entry.from}: ${entry.text}`;
  } else if (entry.mine) {
    li.className = 'mine';
    li.textContent = `you: ${entry.text}`;
  } else {
    li.append(el('span', { className: 'from', textContent: entry.from }), `: ${entry.text}`, el('span', { className: 'tag dc', textContent: 'data channel' }));
  }
  appendLog($('rtc-log'), li);
}

function sendCandidate(c: Conn, init: RTCIceCandidateInit): void {
  if (!peer || !room || !c.remote) return;
  peer.signaling.candidate(room, c.remote, JSON.stringify({ id: c.id, ...init }))
    .catch((err) => showError(err, `candidate to ${c.remote}`));
}

function bind(c: Conn, remote: string): void {
  const old = conns.get(remote);
  if (old && old !== c) closeConn(old, false);
  c.remote = remote;
  conns.set(remote, c);
  for (const init of c.outbox.splice(0)) sendCandidate(c, init);
}

function closeConn(c: Conn, sayBye: boolean): void {
  if (c.closed) return;
  c.closed = true;
  if (sayBye && c.remote && peer && room && peer.state === 'active') {
    peer.signaling.bye(room, c.remote, JSON.stringify({ id: c.id })).catch(() => { /* it may be gone already */ });
  }
  c.dc?.close();
  c.pc.close();
  if (c.remote && conns.get(c.remote) === c) conns.delete(c.remote);
  if (roomCall === c) roomCall = null;
  logEvent(`webrtc ${c.remote ?? 'room'}: closed`);
  renderConns();
}

async function callRoom(): Promise<void> {
  if (!peer || !room) throw new Error('join a room first');
  if (roomCall) closeConn(roomCall, false);
  const c = newConn(randomId(), null, true);
  for (const m of members) if (m !== peer.peerId) c.sentTo.add(m);
  roomCall = c;
  myRoomOffers.add(c.id);
  renderConns();
  await c.pc.setLocalDescription();
  await peer.signaling.offer(room, JSON.stringify({ id: c.id, sdp: c.pc.localDescription?.sdp }));
  logEvent(`offered a data channel to the room (${c.sentTo.size} other member${c.sentTo.size === 1 ? '' : 's'})`);
}

async function callPeer(remote: string): Promise<void> {
  if (!peer || !room) throw new Error('join a room first');
  const old = conns.get(remote);
  if (old) closeConn(old, false); // the new offer replaces it on the other side too
  const c = newConn(randomId(), remote, true);
  conns.set(remote, c);
  renderConns();
  await c.pc.setLocalDescription();
  await peer.signaling.offer(room, JSON.stringify({ id: c.id, sdp: c.pc.localDescription?.sdp }), { to: remote });
  logEvent(`offered a data channel to ${remote}`);
}

function onSignal(s: SignalMessage): void {
  // One at a time, in arrival order: an answer must not overtake the offer handling before it.
  signalChain = signalChain.then(() => handleSignal(s)).catch((err) => showError(err, `${s.kind} from ${s.from}`));
}

interface SignalPayload { id?: string; sdp?: string; candidate?: string; sdpMid?: string | null; sdpMLineIndex?: number | null; usernameFragment?: string | null }

async function handleSignal(s: SignalMessage): Promise<void> {
  if (!peer || s.room !== room) return;
  const from = s.from;
  let body: SignalPayload = {};
  try { body = s.kind === 'bye' && s.payload.length === 0 ? {} : s.json<SignalPayload>(); } catch { /* not ours */ }
  const mine = conns.get(from);
  const yieldsToThem = (peer.peerId ?? '') > from; // the id sorting first keeps its own offer
  switch (s.kind) {
    case 'offer': {
      if (!body.id || !body.sdp) return;
      if (mine && !mine.closed && mine.pc.signalingState === 'have-local-offer' && !yieldsToThem) {
        logEvent(`ignored ${from}'s offer: ours crossed it and wins`);
        return;
      }
      if (!mine && roomCall && roomCall.pc.signalingState === 'have-local-offer' && roomCall.sentTo.has(from) && !yieldsToThem) {
        logEvent(`ignored ${from}'s offer: they got our room offer and will answer it`);
        return;
      }
      if (mine) closeConn(mine, false);
      const c = newConn(body.id, from, false);
      conns.set(from, c);
      renderConns();
      await c.pc.setRemoteDescription({ type: 'offer', sdp: body.sdp });
      await c.pc.setLocalDescription();
      await peer.signaling.answer(s.room, from, JSON.stringify({ id: c.id, sdp: c.pc.localDescription?.sdp }));
      logEvent(`answered ${from}'s offer`);
      return;
    }
    case 'answer': {
      if (!body.id || !body.sdp) return;
      if (mine && mine.id === body.id && mine.pc.signalingState === 'have-local-offer') {
        await mine.pc.setRemoteDescription({ type: 'answer', sdp: body.sdp });
      } else if (roomCall && roomCall.id === body.id && roomCall.pc.signalingState === 'have-local-offer') {
        const c = roomCall;
        roomCall = null;
        bind(c, from);
        await c.pc.setRemoteDescription({ type: 'answer', sdp: body.sdp });
      } else if (myRoomOffers.has(body.id) && !(mine && !mine.closed)) {
        logEvent(`${from} answered a room offer already taken: offering them their own`);
        await callPeer(from);
        return;
      } else {
        return;
      }
      logEvent(`${from} answered`);
      renderConns();
      return;
    }
    case 'candidate': {
      if (!mine || mine.id !== body.id || !body.candidate) return;
      mine.remoteCandidates.push(body.candidate);
      await mine.pc.addIceCandidate({ candidate: body.candidate, sdpMid: body.sdpMid ?? null, sdpMLineIndex: body.sdpMLineIndex ?? null, usernameFragment: body.usernameFragment ?? null });
      return;
    }
    case 'bye': {
      if (!mine || (body.id && body.id !== mine.id)) return;
      logEvent(`${from} hung up`);
      closeConn(mine, false);
      return;
    }
  }
}

function sendRtc(text: string): void {
  const open = [...conns.values()].filter((c) => c.dc?.readyState === 'open');
  if (open.length === 0) throw new Error('no open data channel: call someone first');
  for (const c of open) c.dc!.send(text);
  addRtc({ from: me(), text, mine: true, t: Date.now() });
}

// ---------------------------------------------------------------------------------------------
// RPC: what this page answers, and the RPC box.

function registerHandlers(p: Peer): void {
  p.rpc.handle('whoami', (bytes, ctx) => {
    hooks.handled.push({ method: ctx.method, from: ctx.from, params: dec.decode(bytes), t: Date.now() });
    logEvent(`answered whoami for ${ctx.from ?? 'the server'}`);
    return enc.encode(JSON.stringify({ peerId: p.peerId, room, members: hooks.members(), userAgent: navigator.userAgent }));
  });
  p.rpc.handle('ask', (bytes, ctx) => {
    const question = dec.decode(bytes);
    hooks.handled.push({ method: ctx.method, from: ctx.from, params: question, t: Date.now() });
    logEvent(`${ctx.from ?? 'the server'} asked: ${question}`);
    return enc.encode(`${p.peerId} heard: ${question}`);
  });
}

async function callRpc(method: string, paramsText: string, on: string): Promise<RpcOutcome> {
  if (!peer) throw new Error('not connected: join a room first');
  const out = $('rpc-result');
  try {
    const result = await peer.rpc.call(method, enc.encode(paramsText), on ? { peer: on } : {});
    const outcome: RpcOutcome = { method, peer: on || null, ok: true, result: dec.decode(result), code: 0, codeName: 'ok' };
    hooks.rpc.push(outcome);
    out.textContent = `${method} on ${on || 'the server'} -> ${outcome.result}`;
    out.dataset.ok = 'true';
    return outcome;
  } catch (err) {
    const code = err instanceof PeerdError ? err.code : -1;
    const codeName = err instanceof PeerdError ? err.codeName : 'error';
    const outcome: RpcOutcome = { method, peer: on || null, ok: false, result: describe(err), code, codeName };
    hooks.rpc.push(outcome);
    out.textContent = `${method} on ${on || 'the server'} failed: ${outcome.result}`;
    out.dataset.ok = 'false';
    return outcome;
  }
}

// ---------------------------------------------------------------------------------------------
// Wiring.

$('server-url').textContent = serverUrl;
const nameInput = $<HTMLInputElement>('name');
const roomInput = $<HTMLInputElement>('room');
nameInput.value = params.get('name') ?? '';
roomInput.value = params.get('room') ?? roomInput.value;

$('connect').addEventListener('submit', (e) => {
  e.preventDefault();
  const roomName = roomInput.value.trim();
  if (!roomName) return showError(new Error('a room name is needed'), 'join');
  joinRoom(nameInput.value.trim(), roomName).catch((err) => showError(err, 'join'));
});
$('leave').addEventListener('click', () => leaveRoom());

$('chat-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const input = $<HTMLInputElement>('chat-text');
  const text = input.value;
  if (!text) return;
  input.value = '';
  sendChat(text, $<HTMLSelectElement>('chat-to').value).catch((err) => showError(err, 'send'));
});

$('call-room').addEventListener('click', () => { callRoom().catch((err) => showError(err, 'call the room')); });
$('rtc-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const input = $<HTMLInputElement>('rtc-text');
  const text = input.value;
  if (!text) return;
  try {
    sendRtc(text);
    input.value = '';
  } catch (err) {
    showError(err, 'data channel');
  }
});

$('rpc-form').addEventListener('submit', (e) => {
  e.preventDefault();
  void callRpc($<HTMLInputElement>('rpc-method').value.trim(), $<HTMLInputElement>('rpc-params').value, $<HTMLInputElement>('rpc-peer').value.trim());
});

// Leaving the page: say goodbye (Close{normal}) rather than let the socket just drop.
addEventListener('pagehide', () => peer?.disconnect());
addEventListener('pageshow', (e) => { if (e.persisted) location.reload(); });

renderHeader();
renderMembers();
if (params.get('join') === '1') {
  joinRoom(nameInput.value.trim(), roomInput.value.trim()).catch((err) => showError(err, 'join'));
}
document.body.dataset.ready = 'true';
