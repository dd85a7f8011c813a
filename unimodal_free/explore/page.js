// The explorer page. Everything shown that comes from the server (captions, keys, file names, the model card)
// goes into the DOM as textContent, never as HTML: gallery files are hostile.
"use strict";

const state = {info: null, query: null, pages: {}};
const $ = (id) => document.getElementById(id);

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function showError(message) { $("error").textContent = message || ""; }

async function api(method, url, body) {
  const init = {method, headers: {}};
  if (body !== undefined) { init.body = body; init.headers["X-Explore"] = "1"; }
  let response;
  try { response = await fetch(url, init); } catch (e) { throw new Error("the server does not answer (" + e + ")"); }
  let payload;
  try { payload = await response.json(); } catch (e) { throw new Error("HTTP " + response.status + ": not JSON"); }
  if (!response.ok) throw new Error(payload.error || ("HTTP " + response.status));
  return payload;
}

// ---------------------------------------------------------------- the model card and the gallery
function showInfo(info) {
  const card = info.card, g = info.gallery;
  $("model-title").textContent = "model: step " + card.step + ", " + card.which + ", embeddings of " +
    card.embedding_dim + " values, modalities " + card.modalities.join(", ");
  $("model-source").textContent = card.source + (card.card ? " (" + card.card + ")" : "");
  for (const line of card.trained_on) $("trained-on").appendChild(el("li", {}, line));
  if (card.words.length) $("words").textContent = "tokenizer's frequent words: " + card.words.join(", ");
  $("retrieval-note").textContent = card.retrieval_note || (card.retrieval_table ? "" : "no retrieval table on the card");
  $("retrieval-table").textContent = card.retrieval_table;
  const counts = Object.entries(g.counts).map(([m, n]) => m + " " + n).join(", ");
  $("gallery-line").textContent = "gallery: " + g.items + " items (" + counts + "); " + g.status;
}

// ---------------------------------------------------------------- queries
async function runQuery(promise, media) {
  showError("");
  let q;
  try { q = await promise; } catch (e) { showError(e.message); return; }
  state.query = q;
  $("query-label").textContent = q.modality + ": " + q.label;
  const box = $("query-media");
  box.replaceChildren();
  if (media) box.appendChild(media);
  const notes = $("notes");
  notes.replaceChildren();
  for (const n of q.notes || []) notes.appendChild(el("li", {}, n));
  $("results").replaceChildren();
  for (const m of q.results) {
    const section = el("section", {"class": "modality", "data-modality": m});
    section.append(el("h2", {}, m), el("div", {"class": "pager"}), el("div", {"class": "hits"}));
    $("results").appendChild(section);
  }
  await Promise.all(q.results.map((m) => showPage(m, 0)));
  document.body.dataset.query = q.query;  // tests wait for this: every section of this query is shown
}

function mediaOf(file, modality) {
  const url = URL.createObjectURL(file);
  const box = el("div", {"class": "upload"});
  box.append(modality === "image" ? el("img", {src: url, alt: "the query picture"}) : el("audio", {controls: "", src: url}),
             el("div", {"class": "file"}, file.name));
  return box;
}

function uploadModality(file) {
  if (file.type.startsWith("image/")) return "image";
  if (file.type.startsWith("audio/")) return "speech";
  const ext = file.name.split(".").pop().toLowerCase();
  if (["jpg", "jpeg", "png", "webp"].includes(ext)) return "image";
  if (["flac", "wav", "ogg"].includes(ext)) return "speech";
  return null;
}

function upload(file) {
  const modality = uploadModality(file);
  if (modality === null) { showError(file.name + ": not a picture or a recording (jpg png webp, flac wav ogg)"); return; }
  if (file.size > state.info.upload_max_bytes) {
    showError(file.name + ": " + file.size + " bytes is over the cap of " + state.info.upload_max_bytes + " bytes");
    return;
  }
  const media = mediaOf(file, modality);
  runQuery(api("POST", "/api/query/" + modality, file), media);
}

// ---------------------------------------------------------------- results
async function showPage(modality, page) {
  const section = document.querySelector('section.modality[data-modality="' + modality + '"]');
  let r;
  try { r = await api("GET", "/api/results/" + state.query.query + "/" + modality + "/" + page); }
  catch (e) { showError(e.message); return; }
  if (!state.query || r.query !== state.query.query) return;  // an older query's page
  const pager = section.querySelector(".pager");
  pager.replaceChildren();
  const prev = el("button", {"class": "prev", type: "button"}, "← previous");
  const next = el("button", {"class": "next", type: "button"}, "next →");
  prev.disabled = page === 0;
  next.disabled = page + 1 >= r.pages;
  prev.onclick = () => showPage(modality, page - 1);
  next.onclick = () => showPage(modality, page + 1);
  pager.append(prev, el("span", {"class": "page"}, "page " + (page + 1) + " of " + r.pages + " (" + r.total + " items)"), next);
  const hits = section.querySelector(".hits");
  hits.replaceChildren();
  for (const h of r.hits) hits.appendChild(hitCard(h));
  section.dataset.page = String(page);
}

function hitCard(h) {
  const card = el("div", {"class": "hit", "data-id": String(h.id), "data-score": String(h.score),
                          title: "click: make this the query"});
  const head = el("div");
  head.append(el("span", {"class": "rank"}, "#" + h.rank + " "), el("span", {"class": "score"}, h.score.toFixed(4)));
  card.appendChild(head);
  if (h.media && h.modality === "image") card.appendChild(el("img", {src: h.media, alt: h.key}));
  if (h.media && h.modality === "speech") {
    const audio = el("audio", {controls: "", src: h.media});
    audio.addEventListener("click", (e) => e.stopPropagation());
    card.appendChild(audio);
  }
  if (h.note) card.appendChild(el("div", {"class": "note"}, "(" + h.note + ")"));
  card.append(el("div", {"class": "caption"}, h.caption), el("div", {"class": "key"}, h.key),
              el("div", {"class": "file"}, h.file));
  card.addEventListener("click", () => runQuery(api("GET", "/api/query/item/" + h.id), mediaFromCard(h)));
  return card;
}

function mediaFromCard(h) {
  if (!h.media) return null;
  return h.modality === "image" ? el("img", {src: h.media, alt: h.key}) : el("audio", {controls: "", src: h.media});
}

// ---------------------------------------------------------------- recording: PCM from Web Audio, sent as WAV
// (MediaRecorder's webm/opus is not a format the shard decoder reads.)
function encodeWav(samples, rate) {
  const buffer = new ArrayBuffer(44 + samples.length * 2);
  const v = new DataView(buffer);
  const text = (offset, s) => { for (let i = 0; i < s.length; i++) v.setUint8(offset + i, s.charCodeAt(i)); };
  text(0, "RIFF"); v.setUint32(4, 36 + samples.length * 2, true); text(8, "WAVE");
  text(12, "fmt "); v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, 1, true);
  v.setUint32(24, rate, true); v.setUint32(28, rate * 2, true); v.setUint16(32, 2, true); v.setUint16(34, 16, true);
  text(36, "data"); v.setUint32(40, samples.length * 2, true);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    v.setInt16(44 + i * 2, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  }
  return buffer;
}

const recorder = {ctx: null, stream: null, node: null, chunks: [], timer: null};

async function startRecording() {
  showError("");
  if (!navigator.mediaDevices) {  // browsers offer the microphone only to https:// and localhost pages
    showError("recording needs the page opened as http://localhost:PORT/ (from another machine: an ssh tunnel)");
    return;
  }
  try { recorder.stream = await navigator.mediaDevices.getUserMedia({audio: true}); }
  catch (e) { showError("no microphone: " + e.message); return; }
  recorder.ctx = new AudioContext();
  const source = recorder.ctx.createMediaStreamSource(recorder.stream);
  recorder.node = recorder.ctx.createScriptProcessor(4096, 1, 1);
  recorder.chunks = [];
  recorder.node.onaudioprocess = (e) => recorder.chunks.push(new Float32Array(e.inputBuffer.getChannelData(0)));
  source.connect(recorder.node);
  recorder.node.connect(recorder.ctx.destination);
  $("record").classList.add("on");
  $("record").textContent = "■ Stop";
  const seconds = state.info.max_speech_seconds;
  $("recording-state").textContent = "recording (the model hears the first " + seconds + " s)";
  recorder.timer = setTimeout(stopRecording, seconds * 1000);
}

async function stopRecording() {
  if (!recorder.ctx) return;
  clearTimeout(recorder.timer);
  recorder.node.disconnect();
  recorder.stream.getTracks().forEach((t) => t.stop());
  const rate = recorder.ctx.sampleRate;
  await recorder.ctx.close();
  recorder.ctx = null;
  $("record").classList.remove("on");
  $("record").textContent = "● Record";
  const n = recorder.chunks.reduce((a, c) => a + c.length, 0);
  const samples = new Float32Array(n);
  let at = 0;
  for (const c of recorder.chunks) { samples.set(c, at); at += c.length; }
  $("recording-state").textContent = "recorded " + (n / rate).toFixed(1) + " s";
  const wav = new Blob([encodeWav(samples, rate)], {type: "audio/wav"});
  runQuery(api("POST", "/api/query/speech", wav), el("audio", {controls: "", src: URL.createObjectURL(wav)}));
}

// ---------------------------------------------------------------- start
async function start() {
  try { state.info = await api("GET", "/api/info"); } catch (e) { showError(e.message); return; }
  showInfo(state.info);
  $("text-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("text-input").value;
    if (!text.trim()) { showError("type a caption first"); return; }
    runQuery(api("POST", "/api/query/text", new Blob([text], {type: "text/plain;charset=utf-8"})), null);
  });
  $("file-input").addEventListener("change", (e) => { if (e.target.files.length) upload(e.target.files[0]); e.target.value = ""; });
  $("record").addEventListener("click", () => (recorder.ctx ? stopRecording() : startRecording()));
  document.body.dataset.ready = "1";
}

start();
