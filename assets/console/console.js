/*
 * kioskd — Advisor console, the browser side (served by the hub with /api and /ws on one origin).
 *  - Session: sign-in (HttpOnly cookie), sign-out; WebSocket close 4001 = expired, 4002 = signed in
 *    elsewhere (take over = reconnect); other drops reconnect after 1, 2, 4 … 10 s.
 *  - Room: state badge, Go available / Close, waiting queue. Offer: ringing banner (WebAudio), countdown.
 *  - Call: WebRTC with the hub as an ICE-lite peer (no STUN/TURN, H.264 42e01f only, one non-trickle
 *    offer); mute, hang up, timer, recording notice, texts with ✓ sent / ✓✓ delivered.
 *  - window.kioskd: the hooks tests drive (the buttons use the same code); video() reads the synthetic
 *    camera's stamp (src/edges/devices/camera/synthetic.rs) from every presented frame, audio() samples
 *    the received audio. Plain ES2020+, no framework; every visible string is in STRINGS.
 */
'use strict';

// ---- Strings: one table per language ---------------------------------------------------
const STRINGS = {
  en: {
    product: 'Advisor console', signOut: 'Sign out', langToggle: '中文', signinTitle: 'Advisor sign-in',
    signinLead: 'Sign in to take customer calls from the branch kiosks.', name: 'Name', password: 'Password',
    signIn: 'Sign in', needBoth: 'Enter your name and password.', retryIn: '{error} Try again in {s} s.',
    unreachable: 'Cannot reach the hub. Check the connection and retry.',
    expired: 'Your session has ended. Please sign in again.', elsewhereTitle: 'Signed in elsewhere',
    elsewhereText: 'Your account was opened in another tab or console, which now receives your calls.',
    takeOver: 'Use this console', connOpen: 'Connected', connClosed: 'Reconnecting…', yourStatus: 'Your status',
    goIdle: 'Go available', goClose: 'Close', state_none: 'OFFLINE', state_close: 'CLOSE', state_idle: 'IDLE',
    state_offered: 'OFFERED', state_busy: 'BUSY', state_wrap_up: 'WRAP-UP', desc_none: 'Connecting to the hub…',
    desc_close: 'You are not taking calls.', desc_idle: 'Waiting for the next customer.',
    desc_offered: 'A customer is calling.', desc_busy: 'In a call.',
    desc_wrap_up: 'Wrap-up: you will be available again shortly.', queueTitle: 'Waiting customers',
    caller: 'Caller', branch: 'Branch', waited: 'Waiting', queueEmpty: 'No customers waiting.',
    incoming: 'Incoming call', waitedFor: 'Waited {t}', answerWithin: 'Answer within {s} s',
    connecting: 'Connecting…', accept: 'Accept', decline: 'Decline', recorded: 'This call is recorded',
    peerLost: "Customer's connection lost, reconnecting…", muteMic: 'Mute microphone',
    unmuteMic: 'Unmute microphone', camOff: 'Turn camera off', camOn: 'Turn camera on', hangUp: 'Hang up',
    messages: 'Messages', noMessages: 'Messages with the customer appear here.', typeMessage: 'Type a message…',
    send: 'Send', noMedia: 'Camera or microphone unavailable: {msg}', mediaFailed: 'Call media failed: {msg}',
    end_kiosk_hung_up: 'The customer ended the call.', end_agent_hung_up: 'You ended the call.',
    end_agent_disconnected: 'The call ended: your connection was lost.',
    end_kiosk_disconnected: "The call ended: the customer's connection was lost.",
    end_hub_shutdown: 'The call ended: the hub is shutting down.', end_unknown: 'The call ended.',
    wd_timeout: 'The call was not answered in time; you are now CLOSE.',
    wd_caller_left: 'The customer left before the call was answered.',
    wd_caller_away: "The customer's connection dropped; they keep their place in the queue.",
  },
  zh: {
    product: '客户经理控制台', signOut: '退出登录', langToggle: 'EN', signinTitle: '客户经理登录',
    signinLead: '登录后即可接听各网点自助终端的客户来电。', name: '用户名', password: '密码', signIn: '登录',
    needBoth: '请输入用户名和密码。', retryIn: '{error} 请在 {s} 秒后重试。',
    unreachable: '无法连接服务器，请检查网络后重试。', expired: '会话已结束，请重新登录。',
    elsewhereTitle: '已在其他位置登录', elsewhereText: '您的账号已在另一个标签页或控制台中打开，来电将转到该处。',
    takeOver: '在此处继续使用', connOpen: '已连接', connClosed: '正在重新连接…', yourStatus: '当前状态',
    goIdle: '开始接听', goClose: '暂停接听', state_none: '离线', state_close: '暂停', state_idle: '空闲',
    state_offered: '来电', state_busy: '通话中', state_wrap_up: '整理中', desc_none: '正在连接服务器…',
    desc_close: '您目前不接听来电。', desc_idle: '正在等待下一位客户。', desc_offered: '有客户来电。',
    desc_busy: '通话中。', desc_wrap_up: '通话后整理中，稍后将自动恢复接听。', queueTitle: '等候中的客户',
    caller: '客户终端', branch: '网点', waited: '已等待', queueEmpty: '暂无客户等候。', incoming: '来电',
    waitedFor: '已等待 {t}', answerWithin: '请在 {s} 秒内接听', connecting: '正在接通…', accept: '接听',
    decline: '拒绝', recorded: '本次通话正在录音录像', peerLost: '客户连接中断，正在重新连接…',
    muteMic: '麦克风静音', unmuteMic: '取消静音', camOff: '关闭摄像头', camOn: '开启摄像头', hangUp: '挂断',
    messages: '消息', noMessages: '与客户的消息将显示在这里。', typeMessage: '输入消息…', send: '发送',
    noMedia: '摄像头或麦克风不可用：{msg}', mediaFailed: '通话媒体启动失败：{msg}',
    end_kiosk_hung_up: '客户已结束通话。', end_agent_hung_up: '您已结束通话。',
    end_agent_disconnected: '通话已结束：您的连接已中断。', end_kiosk_disconnected: '通话已结束：客户的连接已中断。',
    end_hub_shutdown: '通话已结束：服务器正在关闭。', end_unknown: '通话已结束。',
    wd_timeout: '来电未在规定时间内接听，您的状态已切换为暂停。', wd_caller_left: '客户在接听前已离开。',
    wd_caller_away: '客户连接中断，其排队位置将保留。',
  },
};

let lang = 'en';
try { lang = localStorage.getItem('kioskd.lang') === 'zh' ? 'zh' : 'en'; } catch { /* storage blocked */ }

/** The string `key` in the current language, {name} placeholders filled from `vars`. */
const t = (key, vars = {}) =>
  (STRINGS[lang][key] ?? key).replace(/\{(\w+)\}/g, (_, k) => String(vars[k] ?? ''));

// ---- State ----------------------------------------------------------------------------------
const S = {
  booted: false, signedIn: false, agent: null, room: null, takenOver: false, ws: 'closed',
  callId: null, peer: null, recorded: false, connected: false, peerPresent: true, callStartedAt: 0,
  offer: null,               // {callId, kiosk, waitedMs, receivedAt, deadline, accepting}
  texts: [],                 // {from: 'me'|'peer', id, body, delivered, at}
  queue: [], queueAt: 0,     // rows as received, and when (performance.now())
  lastError: null, errorShown: false, notice: null, // notice: a string key (why a call/offer ended)
  signinError: null, retryUntil: 0, mic: true, camera: true,
};

const $ = (id) => document.getElementById(id);
const log = (...a) => console.log('[kioskd]', ...a);
const two = (n) => String(n).padStart(2, '0');
const mmss = (ms) => {
  const s = Math.max(0, Math.floor(ms / 1000)), h = Math.floor(s / 3600);
  return `${h ? `${h}:` : ''}${two(Math.floor(s / 60) % 60)}:${two(s % 60)}`;
};

const el = (tag, className, text) => Object.assign(document.createElement(tag), { className, textContent: text });
function showError(message) {
  Object.assign(S, { lastError: String(message), errorShown: true });
  log('error:', S.lastError); render();
}

// ---- Session (HTTP) -------------------------------------------------------------------------
async function api(method, path, body) {
  const res = await fetch(path, { method, credentials: 'same-origin', cache: 'no-store',
    headers: body ? { 'Content-Type': 'application/json' } : {}, body: body ? JSON.stringify(body) : undefined });
  let data = null;
  try { data = await res.json(); } catch { /* 204 or not JSON */ }
  return { status: res.status, data };
}

/** The signed-in agent's name; false when not signed in; null when the hub is unreachable. */
async function fetchMe() {
  try {
    const r = await api('GET', '/api/me');
    return r.status === 200 && r.data?.agent ? String(r.data.agent) : r.status === 401 ? false : null;
  } catch { return null; }
}

async function signIn(name, password) {
  name = String(name ?? '').trim(); password = String(password ?? '');
  if (!name || !password) { S.signinError = t('needBoth'); render(); return false; }
  if (performance.now() < S.retryUntil) return false;
  S.signinError = null;
  let r = null;
  try { r = await api('POST', '/api/signin', { name, password }); } catch { /* unreachable */ }
  if (r?.status === 200) {
    Object.assign(S, { signedIn: true, agent: String(r.data?.agent ?? name), takenOver: false });
    $('signin-password').value = '';
    connectWs(); render();
    return true;
  }
  if (r?.status === 429) {
    S.retryUntil = performance.now() + Math.max(1, Math.ceil(Number(r.data?.retry_after_s) || 1)) * 1000;
    S.signinError = { error: r.data?.error ?? '' }; // shown with the seconds left
  } else S.signinError = r ? r.data?.error ?? `HTTP ${r.status}` : t('unreachable');
  render();
  return false;
}

async function signOut() {
  await api('POST', '/api/signout').catch(() => {}); // signed out here anyway
  signedOutLocally(null);
  return true;
}

/** Back to the sign-in card: the session is gone (sign-out or expiry). */
function signedOutLocally(reasonKey) {
  closeWs(); teardownCall(); dropOffer();
  Object.assign(S, { signedIn: false, agent: null, room: null, takenOver: false, queue: [], notice: null,
    signinError: reasonKey && t(reasonKey) });
  render();
}

// ---- WebSocket ------------------------------------------------------------------------------
let ws = null, wsTimer = null, wsBackoff = 1, wsOpenedAt = null;

function connectWs() {
  if (ws || !S.signedIn) return;
  clearTimeout(wsTimer);
  const sock = new WebSocket(`${location.protocol === 'http:' ? 'ws' : 'wss'}://${location.host}/ws`);
  ws = sock; wsOpenedAt = null;
  sock.onopen = () => { if (ws === sock) { S.ws = 'open'; wsOpenedAt = performance.now(); render(); } };
  sock.onclose = (ev) => { if (ws === sock) { ws = null; onWsClosed(ev.code); } };
  sock.onmessage = (ev) => {
    let msg = null;
    try { msg = JSON.parse(ev.data); } catch { /* not JSON: ignored */ }
    if (ws !== sock || !msg || !Object.hasOwn(HANDLERS, msg.type)) return;
    try { HANDLERS[msg.type](msg); } catch (e) { log('handler failed', msg.type, e); }
    render();
  };
}

/** Closes the socket on purpose: no reconnect. */
function closeWs() {
  clearTimeout(wsTimer);
  const sock = ws;
  ws = null; S.ws = 'closed';
  try { sock?.close(1000); } catch { /* already closing */ }
}

function onWsClosed(code) {
  Object.assign(S, { ws: 'closed', room: null });
  dropOffer();
  if (S.connected) { teardownCall(); S.notice = 'end_agent_disconnected'; }
  if (code === 4001) return signedOutLocally('expired');
  if (code === 4002) S.takenOver = true;
  else if (S.signedIn) {
    if (wsOpenedAt !== null && performance.now() - wsOpenedAt > 10000) wsBackoff = 1; // it was up a while
    const delay = wsBackoff;
    wsBackoff = Math.min(wsBackoff * 2, 10);
    log(`connection closed (${code}); reconnecting in ${delay} s`);
    wsTimer = setTimeout(async () => {
      const me = await fetchMe(); // a refused upgrade has no close code: are we still signed in?
      if (me === false) signedOutLocally('expired'); else connectWs();
    }, delay * 1000);
  }
  render();
}

/** Sends a message to the hub: false when the socket is not open. */
const send = (msg) => ws?.readyState === WebSocket.OPEN && (ws.send(JSON.stringify(msg)), true);

// ---- Hub messages ---------------------------------------------------------------------------
const HANDLERS = {
  welcome(m) { if (m.id) S.agent = String(m.id); },
  room(m) { S.room = String(m.state); },
  offer(m) {
    const now = performance.now();
    S.offer = { callId: m.call_id, kiosk: String(m.kiosk ?? ''), waitedMs: Number(m.waited_ms) || 0,
      receivedAt: now, deadline: now + (Number(m.timeout_ms) || 0), accepting: false };
    S.notice = null;
    startRing();
  },
  offer_withdrawn(m) {
    if (S.offer?.callId !== m.call_id) return;
    dropOffer();
    S.notice = `wd_${m.reason}` in STRINGS.en ? `wd_${m.reason}` : null;
  },
  connected(m) { startCall(m); },
  peer_presence(m) { if (m.call_id === S.callId) S.peerPresent = !!m.present; },
  call_ended(m) {
    if (m.call_id !== S.callId) return;
    teardownCall();
    S.notice = `end_${m.reason}` in STRINGS.en ? `end_${m.reason}` : 'end_unknown';
  },
  text(m) {
    if (m.call_id !== S.callId || typeof m.body !== 'string') return;
    if (!S.texts.some((x) => x.from === 'peer' && x.id === m.id)) {
      S.texts.push({ from: 'peer', id: m.id, body: m.body, delivered: true, at: new Date() });
      render(); // shown first, then acknowledged
    }
    send({ type: 'text_ack', call_id: m.call_id, id: m.id });
  },
  text_ack(m) {
    const mine = S.texts.find((x) => x.from === 'me' && x.id === m.id);
    if (mine && m.call_id === S.callId) mine.delivered = true;
  },
  queue(m) {
    S.queue = (Array.isArray(m.waiting) ? m.waiting : []).map((w) => ({ kiosk: String(w.kiosk ?? ''),
      branch: String(w.branch ?? w.kiosk ?? ''), waited_ms: Number(w.waited_ms) || 0 }));
    S.queueAt = performance.now();
    renderQueue();
  },
  sdp_answer(m) {
    pc?.setRemoteDescription({ type: 'answer', sdp: String(m.sdp) })
      .catch((e) => showError(t('mediaFailed', { msg: e.message || e })));
  },
  error(m) { showError(m.message ?? 'error'); },
};

// ---- Actions: the buttons and window.kioskd -------------------------------------------------
function setPresence(presence) {
  return (presence === 'idle' || presence === 'close') && send({ type: 'set_presence', presence });
}

/** Answers the offer, `type` 'accept' (the banner stays, "Connecting…", until `connected`) or 'decline'. */
function answer(type) {
  const o = S.offer;
  if (!o || o.accepting || !send({ type, call_id: o.callId })) return false;
  if (type === 'accept') { o.accepting = true; stopRing(); } else dropOffer();
  render();
  return true;
}
const accept = () => answer('accept'), decline = () => answer('decline');

function hangUp() {
  if (!S.connected || !send({ type: 'hang_up', call_id: S.callId })) return false;
  teardownCall();
  S.notice = 'end_agent_hung_up';
  render();
  return true;
}

let textSeq = 0;
/** Sends a text in the call: returns its id (1, 2, … per call), or false. */
function sendText(body) {
  if (!S.connected || typeof body !== 'string') return false;
  body = body.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g, '').trim(); // no control characters
  if (!body || [...body].length > 1000) return false;
  if (!send({ type: 'text', call_id: S.callId, id: textSeq + 1, body })) return false;
  S.texts.push({ from: 'me', id: ++textSeq, body, delivered: false, at: new Date() });
  render();
  return textSeq;
}

/** Mic or camera on/off: track.enabled, and the hub is told. */
function setMedia(kind, on) {
  if (!S.connected) return false;
  S[kind] = !!on;
  const tracks = kind === 'mic' ? localStream?.getAudioTracks() : localStream?.getVideoTracks();
  tracks?.forEach((tr) => { tr.enabled = !!on; });
  send({ type: 'media_state', mic: S.mic, camera: S.camera });
  render();
  return true;
}

function takeOver() {
  if (!S.signedIn || ws) return false;
  S.takenOver = false; wsBackoff = 1;
  connectWs(); render();
  return true;
}

function dropOffer() { S.offer = null; stopRing(); }

// ---- Sound: one AudioContext for the ring and the analyser ----------------------------------
let actx = null, ringTimer = null, ringOut = null;
function audioCtx() {
  try { actx ??= new AudioContext(); } catch { return null; }
  if (actx.state === 'suspended') actx.resume().catch(() => {});
  return actx;
}

/** A soft two-note chime (880 Hz, 660 Hz) every two seconds while an offer waits. */
function startRing() {
  const ctx = audioCtx();
  if (ringTimer || !ctx) return;
  const out = (ringOut = ctx.createGain()); // disconnected to stop at once
  out.connect(ctx.destination);
  const chime = () => [[880, 0], [660, 0.35]].forEach(([hz, dt]) => {
    const at = ctx.currentTime + 0.02 + dt, osc = ctx.createOscillator(), gain = ctx.createGain();
    osc.frequency.value = hz;
    gain.gain.setValueAtTime(0.0001, at);
    gain.gain.exponentialRampToValueAtTime(0.25, at + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, at + 0.3);
    osc.connect(gain).connect(out);
    osc.start(at); osc.stop(at + 0.32);
  });
  chime();
  ringTimer = setInterval(chime, 2000);
}

function stopRing() {
  clearInterval(ringTimer);
  ringOut?.disconnect();
  ringTimer = ringOut = null;
}

// ---- The call: WebRTC -----------------------------------------------------------------------
let pc = null, localStream = null, remoteTracks = [], callGen = 0; // callGen: stale async work stops

async function getLocalStream() {
  if (localStream?.getTracks().some((tr) => tr.readyState === 'live')) return localStream; // reused
  const md = navigator.mediaDevices;
  try {
    localStream = await md.getUserMedia({ audio: true, video: { width: 640, height: 480, frameRate: 30 } });
  } catch (e) {
    showError(t('noMedia', { msg: e.message || e.name }));
    localStream = await md.getUserMedia({ audio: true }).catch(() => null);
  }
  return localStream;
}

/** Only H.264 constrained baseline with packetization-mode 1 (no VP8, rtx, red, ulpfec). */
function preferH264(transceiver) {
  try {
    const codecs = RTCRtpReceiver.getCapabilities('video')?.codecs ?? [];
    const h264 = (re) => codecs.filter((c) => /^video\/h264$/i.test(c.mimeType)
      && re.test(c.sdpFmtpLine ?? '') && /packetization-mode=1/.test(c.sdpFmtpLine ?? ''));
    const chosen = [h264(/profile-level-id=42e01f/i), h264(/profile-level-id=42e0[0-9a-f]{2}/i)].find((l) => l.length);
    if (chosen) transceiver.setCodecPreferences(chosen);
    else log('no H.264 42e0xx packetization-mode=1 codec: default codecs kept');
  } catch (e) { log('setCodecPreferences failed', e); }
}

const iceGathered = (conn, ms) => new Promise((resolve) => {
  if (conn.iceGatheringState === 'complete') return resolve();
  setTimeout(resolve, ms);
  conn.addEventListener('icegatheringstatechange', () => conn.iceGatheringState === 'complete' && resolve());
});

async function startCall(m) {
  if (S.connected && S.callId === m.call_id) { S.recorded = !!m.recorded; return; }
  teardownCall(); dropOffer(); resetMeasurements();
  Object.assign(S, { callId: m.call_id, peer: String(m.peer ?? ''), recorded: !!m.recorded, connected: true,
    peerPresent: true, texts: [], notice: null, mic: true, camera: true, callStartedAt: performance.now() });
  textSeq = 0;
  const gen = ++callGen;
  render();
  try {
    const stream = await getLocalStream();
    if (gen !== callGen) return;
    stream?.getTracks().forEach((tr) => { tr.enabled = true; });
    $('local').srcObject = stream;
    const conn = (pc = new RTCPeerConnection({ iceServers: [] })), streams = stream ? [stream] : [];
    const video = conn.addTransceiver(stream?.getVideoTracks()[0] ?? 'video', { direction: 'sendrecv', streams });
    // A sharp face matters more than motion: under a narrow link, fewer pictures, not smaller ones.
    const params = video.sender.getParameters();
    params.degradationPreference = 'maintain-resolution';
    video.sender.setParameters(params).catch((e) => log('degradation preference:', e.message));
    conn.addTransceiver(stream?.getAudioTracks()[0] ?? 'audio', { direction: 'sendrecv', streams });
    preferH264(video);
    conn.ontrack = (ev) => onRemoteTrack(ev.track, gen);
    conn.onconnectionstatechange = () => log('peer connection', conn.connectionState);
    await conn.setLocalDescription(await conn.createOffer());
    await iceGathered(conn, 2000);
    if (gen === callGen) send({ type: 'sdp_offer', sdp: conn.localDescription.sdp });
  } catch (e) {
    if (gen === callGen) showError(t('mediaFailed', { msg: e.message || e }));
  }
}

function onRemoteTrack(track, gen) {
  if (gen !== callGen) return;
  if (!remoteTracks.includes(track)) remoteTracks.push(track);
  const el = $('remote');
  el.muted = false;
  el.srcObject = new MediaStream(remoteTracks); // the audio plays through the video element
  el.play().catch((e) => e.name !== 'AbortError' && log('remote play:', e.message)); // Abort: a newer srcObject
  if (track.kind === 'video') startVideoProbe(gen); else startAudioProbe(track, gen);
}

/** Ends the call here: peer connection, probes, remote video. The camera stream is kept. */
function teardownCall() {
  callGen++;
  pc?.close(); pc = null;
  stopAudioProbe();
  remoteTracks = [];
  $('remote').srcObject = null;
  Object.assign(S, { connected: false, callId: null, peer: null, recorded: false, peerPresent: true });
}

// ---- Measurements: the video stamp ----------------------------------------------------------
const STAMP_ROW = 16, STAMP_BITS = 32, STAMP_HEIGHT = 3 * STAMP_ROW, U32 = 2 ** 32, MAX_SAMPLES = 10000;
let V, A; // figures of the current (or last) call
function resetMeasurements() {
  V = { presented: 0, verified: 0, out_of_order: 0, repeated: 0, first_frame_no: null, last_frame_no: null, latencies_ms: [] };
  A = { hz: [], dbfs: [] };
}
resetMeasurements();

/** read_stamp (synthetic.rs) on RGBA pixels of the top 48 rows: 3 rows of 32 blocks (frame_no, capture ms,
 *  !frame_no; MSB first), the centre half of each block averaged in luma, thresholded at mid grey.
 *  {frameNo, ms}, or null when the check row does not match. */
function readStamp(px, width) {
  const block = Math.floor(width / STAMP_BITS), xm = Math.floor(block / 4), ym = STAMP_ROW / 4;
  if (block < 2) return null;
  const rows = [0, 1, 2].map((row) => {
    let value = 0;
    for (let bit = 0; bit < STAMP_BITS; bit++) {
      const x0 = bit * block + xm, x1 = (bit + 1) * block - xm, y0 = row * STAMP_ROW + ym, y1 = y0 + STAMP_ROW / 2;
      let sum = 0;
      for (let y = y0; y < y1; y++) {
        for (let i = (y * width + x0) * 4; i < (y * width + x1) * 4; i += 4) {
          sum += 0.299 * px[i] + 0.587 * px[i + 1] + 0.114 * px[i + 2];
        }
      }
      value = value * 2 + (sum / ((x1 - x0) * (y1 - y0)) > 127.5 ? 1 : 0);
    }
    return value;
  });
  return rows[2] === U32 - 1 - rows[0] ? { frameNo: rows[0], ms: rows[1] } : null;
}

let probeCtx = null, videoProbeGen = -1;
function startVideoProbe(gen) {
  const el = $('remote');
  if (videoProbeGen === gen) return;
  if (typeof el.requestVideoFrameCallback !== 'function') return log('requestVideoFrameCallback unsupported');
  videoProbeGen = gen;
  const onFrame = (now, meta) => {
    if (gen !== callGen) return;
    try { measureFrame(el, now, meta); } catch (e) { log('frame probe', e); }
    el.requestVideoFrameCallback(onFrame);
  };
  el.requestVideoFrameCallback(onFrame);
}

function measureFrame(el, now, meta) {
  V.presented++;
  const w = meta.width || el.videoWidth, h = meta.height || el.videoHeight;
  if (w < 64 || h < STAMP_HEIGHT) return;
  probeCtx ??= document.createElement('canvas').getContext('2d', { willReadFrequently: true });
  const canvas = probeCtx.canvas; // only the top 48 rows: the frame is drawn at its intrinsic size, clipped
  if (canvas.width !== w || canvas.height !== STAMP_HEIGHT) Object.assign(canvas, { width: w, height: STAMP_HEIGHT });
  probeCtx.drawImage(el, 0, 0, w, h);
  const stamp = readStamp(probeCtx.getImageData(0, 0, w, STAMP_HEIGHT).data, w);
  if (!stamp) return;
  // The same picture presented again (the compositor repeats one when the next is late) is
  // not a new one; an older one after a newer one is out of order.
  if (V.last_frame_no !== null && stamp.frameNo === V.last_frame_no) { V.repeated++; return; }
  V.verified++;
  V.first_frame_no ??= stamp.frameNo;
  if (V.last_frame_no !== null && stamp.frameNo < V.last_frame_no) V.out_of_order++;
  else V.last_frame_no = stamp.frameNo;
  // Presentation time in Unix ms (low 32 bits) minus capture ms, modulo 2^32: the wrap is harmless. The
  // wall clock read in the callback (the frame's rendering step), not a vsync estimate: never before it.
  const shownMs = Math.max(Date.now(), Math.floor(performance.timeOrigin + (meta.expectedDisplayTime ?? now)));
  const latency = (((shownMs % U32) - stamp.ms) % U32 + U32) % U32;
  V.latencies_ms.push(latency >= U32 / 2 ? latency - U32 : latency); // negative: sender's clock ahead
  if (V.latencies_ms.length > MAX_SAMPLES) V.latencies_ms.shift();
}

// ---- Measurements: the audio ----------------------------------------------------------------
let audioProbe = null;
function startAudioProbe(track, gen) {
  stopAudioProbe();
  const ctx = audioCtx();
  if (!ctx) return;
  const source = ctx.createMediaStreamSource(new MediaStream([track])), analyser = ctx.createAnalyser();
  const sink = ctx.createGain(); // silent: keeps the graph pulled (the element plays the sound)
  Object.assign(analyser, { fftSize: 4096, smoothingTimeConstant: 0 });
  sink.gain.value = 0;
  source.connect(analyser).connect(sink).connect(ctx.destination);
  const freq = new Float32Array(analyser.frequencyBinCount), time = new Float32Array(analyser.fftSize);
  const timer = setInterval(() => {
    if (gen === callGen) sampleAudio(analyser, ctx.sampleRate, freq, time); else stopAudioProbe();
  }, 100);
  audioProbe = { nodes: [source, analyser, sink], timer };
}

/** One sample: the dominant frequency (peak bin, parabolic interpolation) and RMS level in dBFS. */
function sampleAudio(analyser, rate, freq, time) {
  analyser.getFloatTimeDomainData(time);
  const power = time.reduce((p, x) => p + x * x, 0) / time.length;
  const dbfs = power > 1e-12 ? Math.max(-120, 10 * Math.log10(power)) : -120;
  analyser.getFloatFrequencyData(freq);
  let k = 1;
  for (let i = 2; i < freq.length - 1; i++) if (freq[i] > freq[k]) k = i;
  const [a, b, c] = [freq[k - 1], freq[k], freq[k + 1]], den = a - 2 * b + c;
  const delta = Number.isFinite(den) && den !== 0 ? Math.max(-0.5, Math.min(0.5, (0.5 * (a - c)) / den)) : 0;
  A.hz.push(dbfs > -100 && Number.isFinite(b) ? ((k + delta) * rate) / analyser.fftSize : 0); // 0: silence
  A.dbfs.push(dbfs);
  if (A.hz.length > MAX_SAMPLES) { A.hz.shift(); A.dbfs.shift(); }
}

function stopAudioProbe() {
  clearInterval(audioProbe?.timer);
  audioProbe?.nodes.forEach((n) => n.disconnect());
  audioProbe = null;
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b), mid = s.length >> 1;
  return !s.length ? null : s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
};

// ---- Rendering ------------------------------------------------------------------------------
function currentView() {
  if (!S.booted) return 'loading';
  if (!S.signedIn) return 'signin';
  if (S.takenOver) return 'elsewhere';
  return S.connected ? 'call' : S.offer ? 'offer' : 'room';
}

const queueNow = () => {
  const dt = S.queueAt ? performance.now() - S.queueAt : 0;
  return S.queue.map((q) => ({ ...q, waited_ms: Math.round(q.waited_ms + dt) }));
};

/** Static strings, from the data-i18n and data-i18n-placeholder attributes. */
function applyLang() {
  document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
  document.body.dataset.lang = lang;
  document.querySelectorAll('[data-i18n]').forEach((e) => { e.textContent = t(e.dataset.i18n); });
  document.querySelectorAll('[data-i18n-placeholder]').forEach((e) => { e.placeholder = t(e.dataset.i18nPlaceholder); });
  document.title = `kioskd — ${t('product')}`;
  shownTexts = '';
  renderQueue(); render();
}

function render() {
  const room = S.room ?? 'none', open = S.ws === 'open', o = S.offer;
  Object.assign(document.body.dataset, { view: currentView(), room, ws: S.ws });
  $('agent-name').textContent = S.agent ?? '';
  $('conn').dataset.state = S.ws;
  $('conn-text').textContent = t(open ? 'connOpen' : 'connClosed');
  $('error-text').textContent = S.lastError ?? '';
  $('error-line').hidden = !(S.errorShown && S.lastError);
  $('room-state').textContent = t(`state_${room}`);
  $('room-state').dataset.state = room;
  $('room-desc').textContent = t(`desc_${room}`);
  $('go-idle').disabled = !open || !['close', 'wrap_up'].includes(room);
  $('go-close').disabled = !open || !['idle', 'offered', 'wrap_up'].includes(room);
  $('room-notice').textContent = S.notice ? t(S.notice) : '';
  $('room-notice').hidden = !S.notice;
  $('offer-kiosk').textContent = o?.kiosk ?? '';
  $('offer-accept').disabled = $('offer-decline').disabled = !o || o.accepting || !open;
  $('call-peer').textContent = S.peer ?? '';
  $('recorded').hidden = !S.recorded;
  $('peer-lost').hidden = S.peerPresent;
  for (const [id, on, label] of [['mute-mic', S.mic, S.mic ? 'muteMic' : 'unmuteMic'],
    ['mute-camera', S.camera, S.camera ? 'camOff' : 'camOn']]) {
    Object.assign($(id), { textContent: t(label) }).setAttribute('aria-pressed', String(!on));
  }
  $('local-box').dataset.camera = String(S.camera);
  renderTexts();
  tick();
}

let shownTexts = '';
function renderTexts() {
  const key = JSON.stringify(S.texts.map((x) => [x.from, x.id, x.delivered]));
  if (key === shownTexts) return;
  shownTexts = key;
  const list = $('text-list');
  list.replaceChildren(...S.texts.map((x) => {
    const li = el('li', `msg msg-${x.from}`), meta = el('div', 'msg-meta', `${two(x.at.getHours())}:${two(x.at.getMinutes())}`);
    if (x.from === 'me') meta.append(el('span', x.delivered ? 'mark delivered' : 'mark', x.delivered ? ' ✓✓' : ' ✓'));
    li.append(el('div', 'bubble', x.body), meta);
    return li;
  }));
  $('text-empty').hidden = S.texts.length > 0;
  list.scrollTop = list.scrollHeight;
}

let queueCells = [];
function renderQueue() {
  const rows = queueNow();
  queueCells = [];
  $('queue-body').replaceChildren(...rows.map((q) => {
    const tr = document.createElement('tr');
    for (const text of [q.kiosk, q.branch, mmss(q.waited_ms)]) tr.insertCell().textContent = text;
    queueCells.push(tr.lastChild);
    return tr;
  }));
  $('queue-count').textContent = String(rows.length);
  $('queue-empty').hidden = rows.length > 0;
}

/** The clocks (4 times a second): call timer, offer countdown, queue waits, sign-in retry. */
function tick() {
  const now = performance.now(), o = S.offer;
  if (S.connected) $('call-timer').textContent = mmss(now - S.callStartedAt);
  if (o) {
    const left = Math.max(0, o.deadline - now), total = Math.max(1, o.deadline - o.receivedAt);
    $('offer-countdown').textContent = o.accepting ? t('connecting') : t('answerWithin', { s: Math.ceil(left / 1000) });
    $('offer-waited').textContent = t('waitedFor', { t: mmss(o.waitedMs + now - o.receivedAt) });
    $('offer-progress').style.width = `${((100 * left) / total).toFixed(1)}%`;
  }
  queueNow().forEach((q, i) => { if (queueCells[i]) queueCells[i].textContent = mmss(q.waited_ms); });
  const err = S.signinError, waitS = Math.ceil((S.retryUntil - now) / 1000);
  $('signin-error').textContent =
    typeof err === 'object' && err ? (waitS > 0 ? t('retryIn', { error: err.error, s: waitS }) : err.error) : err ?? '';
  $('signin-error').hidden = !err;
  $('signin-submit').disabled = waitS > 0;
}

// ---- window.kioskd and the wiring -----------------------------------------------------------
window.kioskd = Object.freeze({
  state: () => ({
    signedIn: S.signedIn, agent: S.agent, room: S.room, callId: S.callId,
    offer: S.offer && { callId: S.offer.callId, kiosk: S.offer.kiosk }, connected: S.connected, recorded: S.recorded,
    texts: S.texts.map(({ from, id, body, delivered }) => ({ from, id, body, delivered })),
    queue: queueNow(), ws: S.ws, lastError: S.lastError,
  }),
  video: () => ({ ...V, latencies_ms: [...V.latencies_ms] }),
  audio: () => ({ samples: A.hz.length, dominant_hz_median: median(A.hz), level_dbfs_median: median(A.dbfs),
    dominant_hz: [...A.hz], level_dbfs: [...A.dbfs] }),
  signIn, signOut, setPresence, accept, decline, hangUp, sendText, takeOver,
  setMic: (on) => setMedia('mic', on), setCamera: (on) => setMedia('camera', on),
});

document.addEventListener('DOMContentLoaded', async () => {
  const on = (id, ev, fn) => $(id).addEventListener(ev, (e) => { if (ev === 'submit') e.preventDefault(); fn(); });
  on('signin-form', 'submit', () => { audioCtx(); signIn($('signin-name').value, $('signin-password').value); });
  on('signout', 'click', signOut);
  on('lang-toggle', 'click', () => {
    lang = lang === 'en' ? 'zh' : 'en';
    try { localStorage.setItem('kioskd.lang', lang); } catch { /* storage blocked */ }
    applyLang();
  });
  on('take-over', 'click', takeOver);
  on('go-idle', 'click', () => setPresence('idle'));
  on('go-close', 'click', () => setPresence('close'));
  on('offer-accept', 'click', accept);
  on('offer-decline', 'click', decline);
  on('hangup', 'click', hangUp);
  on('mute-mic', 'click', () => setMedia('mic', !S.mic));
  on('mute-camera', 'click', () => setMedia('camera', !S.camera));
  on('error-dismiss', 'click', () => { S.errorShown = false; render(); });
  on('text-form', 'submit', () => { if (sendText($('text-input').value)) $('text-input').value = ''; });
  document.addEventListener('pointerdown', () => audioCtx(), { once: true }); // sound needs a gesture
  $('local').muted = true;
  // The CJK font (console.css) before any text is shaped: Chromium keeps text shaped without it.
  const font = document.fonts?.load('16px "kioskd CJK"', '中文').catch(() => {});
  const [me] = await Promise.all([fetchMe(), Promise.race([font, new Promise((ok) => setTimeout(ok, 1500))])]);
  applyLang();
  setInterval(tick, 250);
  S.booted = true;
  if (me) Object.assign(S, { signedIn: true, agent: me });
  else if (me === null) S.signinError = t('unreachable');
  connectWs(); render();
});
