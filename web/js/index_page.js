// The generate page: choose a model, stream a continuation, save/restore the conversation.
// All engine work happens in the Worker (py_engine/app/generate_session.py); this file keeps
// the transcript (the person's prompts and the model's continuations, shown as one document),
// checks the form, and shows every failure as one sentence (web/js/errors.js).
import { bootShell } from "/static/js/shell.js";
import { clearError, showError } from "/static/js/errors.js";
import { readSampling } from "/static/js/sampling_form.js";

const $ = (id) => document.getElementById(id);
const S = "from py_engine.app import generate_session as s\n";
let engine = null;
let loaded = null;
let busy = false;
// [{prompt, text}]: each turn of the current conversation, oldest first. "Continue the
// conversation" appends a turn; otherwise a generation starts a new transcript.
let turns = [];
// What Regenerate repeats: {prompt, keep, snapshot (state bytes before the turn or null), before}.
let last = null;

function setBusy(on) {
  busy = on;
  $("generate-btn").disabled = on || !loaded;
  $("regenerate-btn").disabled = on || !loaded || !last;
  $("stop-btn").disabled = !on;
  $("load-btn").disabled = on;
  $("save-state-btn").disabled = on || !loaded;
  $("restore-state-btn").disabled = on || !loaded;
}

// ---- the document view ---------------------------------------------------------------------
function nearBottom(el) { return el.scrollHeight - el.scrollTop - el.clientHeight < 40; }

function renderTranscript() {
  const out = $("output");
  const follow = nearBottom(out);
  out.textContent = "";
  for (const t of turns) {
    const p = document.createElement("span");
    p.className = "turn-prompt";
    p.textContent = t.prompt;
    const c = document.createElement("span");
    c.className = "turn-text";
    c.textContent = t.text;
    out.append(p, c);
  }
  if (follow) out.scrollTop = out.scrollHeight;
}

function setLastText(text) {
  if (!turns.length) return;
  turns[turns.length - 1].text = text;
  const out = $("output");
  const follow = nearBottom(out);
  const spans = out.querySelectorAll(".turn-text");
  if (spans.length === turns.length) spans[spans.length - 1].textContent = text;
  else renderTranscript();
  if (follow) out.scrollTop = out.scrollHeight;
}

// A continuation of only spaces/newlines looks like nothing happened: say what came out.
function whitespaceNote(text, n) {
  const note = $("output-note");
  note.hidden = true;
  if (text === null || text === undefined || !n || text.trim() !== "") return;
  const count = (re) => (text.match(re) || []).length;
  const parts = [[count(/ /g), "space"], [count(/\n/g), "newline"], [count(/\t/g), "tab"]]
    .filter(([k]) => k).map(([k, w]) => `${k} ${w}${k > 1 ? "s" : ""}`);
  note.textContent = `The model produced only whitespace (${parts.join(", ") || "invisible characters"}) ` +
    `in ${n} token${n > 1 ? "s" : ""}: try another prompt, sampling instead of greedy, or a trained model.`;
  note.hidden = false;
}

// ---- models --------------------------------------------------------------------------------
async function listModels() {
  const models = await (await fetch("/api/models")).json();
  const sel = $("model-select");
  sel.innerHTML = "";
  for (const m of models) {
    const opt = document.createElement("option");
    opt.value = m.name;
    const size = m.param_count ? ` · ${(m.param_count / 1e6).toFixed(2)}M params` : "";
    opt.textContent = `${m.name} (${m.model_type || m.format}${size}${m.supported === false ? " · unsupported" : ""})`;
    opt.disabled = m.supported === false;
    opt.dataset.files = JSON.stringify(m.files || []);
    sel.append(opt);
  }
  const def = models.find((m) => m.name === "default");
  if (def) sel.value = "default";
  return models;
}

function describeModel(m, where) {
  return `${m.name}${where}: ${m.model_type}, ${m.layers} layers × d_model ${m.d_model}, ` +
    `vocab ${m.vocab_size.toLocaleString("en-US")}, ${(m.params / 1e6).toFixed(2)}M parameters, ` +
    `tokenizer: ${m.tokenizer || "none (token ids only)"}, loaded in ${m.load_s} s`;
}

// After a failed load nothing is loaded (the engine drops its model too), and the page says so.
async function forgetModel() {
  loaded = null;
  last = null;
  turns = [];
  renderTranscript();
  delete document.body.dataset.model;
  $("model-info").textContent = "No model loaded.";
  try { await engine.run(S + "s.unload()"); } catch (err) { /* already gone */ }
}

async function openModel(what, run) {
  clearError($("model-error"));
  $("load-progress").hidden = false;
  setBusy(true);
  try {
    loaded = await run();
    turns = [];
    last = null;
    renderTranscript();
    return true;
  } catch (err) {
    await forgetModel();
    showError($("model-error"), `Could not load ${what}`, err);
    return false;
  } finally {
    $("load-progress").hidden = true;
    setBusy(false);
  }
}

async function loadModel() {
  const sel = $("model-select");
  const name = sel.value;
  if (!name || !sel.selectedOptions[0].dataset.files) {
    showError($("model-error"), "Choose a served model in the list first, or open the folder again to reload a local one");
    return;
  }
  const url = new URL(`/weights/${encodeURIComponent(name)}/`, location.href).href;
  const files = JSON.parse(sel.selectedOptions[0].dataset.files);
  const ok = await openModel(name, () => engine.run(
    S + "result = await s.load(args['url'], args['name'], args['files'])", { url, name, files }));
  if (!ok) return;
  $("model-info").textContent = describeModel(loaded, "");
  sel.querySelector("option[data-local]")?.remove();
  document.body.dataset.model = name;
}

// A model folder from this computer: the Files go to the Worker's registry and are read
// there (File.slice -> GPU); nothing is uploaded.
async function loadLocal(fileList) {
  const list = Array.from(fileList).map((file) => ({
    file, path: (file.webkitRelativePath || file.name).split("/").slice(1).join("/") || file.name,
  }));
  if (!list.length) return;
  const name = (list[0].file.webkitRelativePath || "").split("/")[0] || "local model";
  const ok = await openModel(`the folder “${name}”`, async () => {
    const ids = await engine.call({ op: "convertPutFiles", files: list });
    const files = Object.fromEntries(ids.map((f) => [f.path, f.id]));
    return engine.run(S + "result = await s.load_files(args['files'], args['name'])", { files, name });
  });
  $("local-model").value = "";
  if (!ok) return;
  $("model-info").textContent = describeModel(loaded, " (local)");
  // the list names what is loaded: a local entry, not the last served model
  const sel = $("model-select");
  sel.querySelector("option[data-local]")?.remove();
  const opt = new Option(`${name} (local folder)`, "");
  opt.dataset.local = "1";
  sel.prepend(opt);
  sel.value = "";
  document.body.dataset.model = `local:${name}`;
}

// ---- generation ----------------------------------------------------------------------------
async function generate({ again = false } = {}) {
  clearError($("gen-error"));
  if (!loaded || busy) return;
  let prompt, keep, snapshot, before;
  if (again && last) {
    ({ prompt, keep, snapshot, before } = last);
  } else {
    prompt = $("prompt").value;
    if (prompt === "") {
      showError($("gen-error"), "The prompt is empty: type some text for the model to continue, then Generate");
      $("prompt").focus();
      return;
    }
    keep = $("keep-state").checked && turns.length > 0;
    before = keep ? turns.map((t) => ({ ...t })) : [];
    snapshot = null;
  }
  const form = readSampling();
  if (form.error) { showError($("gen-error"), form.error.text); form.error.field.focus(); return; }
  setBusy(true);
  document.body.dataset.generating = "1";
  try {
    // Regenerate of a continued turn needs the state from before that turn: keep a copy.
    if (keep && !again) snapshot = await engine.run(S + "result = await s.save_state()");
    if (again && snapshot) {
      await engine.run(S + "result = s.restore_state(args['state'], args['pending'])",
                       { state: snapshot.state, pending: snapshot.pending });
    }
    last = { prompt, keep, snapshot, before };
    turns = before.map((t) => ({ ...t })).concat([{ prompt, text: "" }]);
    renderTranscript();
    $("output-note").hidden = true;
    const r = await engine.run(S + "result = await s.generate(prompt=args['prompt'], " +
      "max_new_tokens=args['n'], sampling=args['sampling'], keep_state=args['keep'])",
      { prompt, n: form.maxNew, sampling: form.sampling, keep });
    setLastText(r.text !== null ? r.text : `[token ids ${r.ids.join(" ")}]`);
    whitespaceNote(r.text, r.ids.length);
    $("gen-stats").textContent = `${r.ids.length} tokens · ${r.tokens_per_s.toFixed(1)} tok/s · ` +
      `first token ${(1000 * r.time_to_first_token_s).toFixed(0)} ms · ` +
      `${r.dispatches_per_token ?? "-"} dispatches/token · seed ${form.sampling.greedy ? "– (greedy)" : form.sampling.seed}` +
      `${r.cancelled ? " · stopped" : ""}`;
  } catch (err) {
    showError($("gen-error"), "Generation failed", err);
  } finally {
    delete document.body.dataset.generating;
    document.body.dataset.generations = String(+(document.body.dataset.generations || 0) + 1);
    setBusy(false);
  }
}

// Conversation state persists in IndexedDB, per model.
function idb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open("mambaweb", 1);
    req.onupgradeneeded = () => req.result.createObjectStore("states");
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}
async function idbPut(key, value) {
  const db = await idb();
  return new Promise((res, rej) => {
    const tx = db.transaction("states", "readwrite");
    tx.objectStore("states").put(value, key);
    tx.oncomplete = res; tx.onerror = () => rej(tx.error);
  });
}
async function idbGet(key) {
  const db = await idb();
  return new Promise((res, rej) => {
    const req = db.transaction("states").objectStore("states").get(key);
    req.onsuccess = () => res(req.result); req.onerror = () => rej(req.error);
  });
}

async function saveState() {
  clearError($("gen-error"));
  try {
    const r = await engine.run(S + "result = await s.save_state()");
    await idbPut(`state:${loaded.name}`, { state: r.state, pending: r.pending, turns });
    $("gen-stats").textContent = "state saved in this browser";
  } catch (err) { showError($("gen-error"), "Could not save the state", err); }
}

async function restoreState() {
  clearError($("gen-error"));
  try {
    const saved = await idbGet(`state:${loaded.name}`);
    if (!saved) { showError($("gen-error"), "No saved state for this model in this browser yet: Save state first"); return; }
    await engine.run(S + "result = s.restore_state(args['state'], args['pending'])",
                     { state: saved.state, pending: saved.pending ?? null });
    turns = saved.turns || [{ prompt: "", text: saved.text || "" }];   // older saves kept text only
    last = null;
    renderTranscript();
    $("keep-state").checked = true;
    $("gen-stats").textContent = "state restored: the next generation continues from it";
  } catch (err) { showError($("gen-error"), "Could not restore the state", err); }
  setBusy(false);
}

// ---- LoRA adapters: switched on the loaded model, the base is not reloaded ------------------
function b64(buf) {
  let s = "";
  const bytes = new Uint8Array(buf);
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

async function loadAdapter(fileList) {
  $("adapter-info").textContent = "";
  clearError($("gen-error"));
  const wanted = ["adapter_config.json", "adapter_model.safetensors"];
  const files = {};
  for (const f of fileList) if (wanted.includes(f.name)) files[f.name] = { __bytes__: b64(await f.arrayBuffer()) };
  const missing = wanted.filter((n) => !files[n]);
  $("adapter-files").value = "";
  if (missing.length) {
    showError($("gen-error"), `That is not a LoRA adapter folder: ${missing.join(" and ")} missing ` +
      "(PEFT writes adapter_config.json + adapter_model.safetensors)");
    return;
  }
  try {
    const r = await engine.run(S + "result = await s.load_adapter(files=args['files'])", { files });
    const a = r.adapter;
    $("adapter-info").textContent = `adapter: rank ${a.r}, alpha ${a.alpha}, ${a.modules} layers, ` +
      `${a.params.toLocaleString()} parameters`;
    $("adapter-remove").hidden = false;
    document.body.dataset.adapter = "on";
  } catch (err) { showError($("gen-error"), "Could not add the adapter", err); }
}

async function removeAdapter() {
  await engine.run(S + "result = await s.load_adapter()");
  $("adapter-info").textContent = "";
  $("adapter-remove").hidden = true;
  document.body.dataset.adapter = "off";
}

async function main() {
  engine = await bootShell();
  engine.on("load_progress", (m) => {
    $("load-progress").max = m.total_bytes; $("load-progress").value = m.bytes;
    $("model-info").textContent = `loading… ${(m.bytes / 1e6).toFixed(1)} / ${(m.total_bytes / 1e6).toFixed(1)} MB, ` +
      `${m.tensors}/${m.total_tensors} tensors, ${m.mb_per_s.toFixed(1)} MB/s`;
  });
  engine.on("token", (m) => {
    if (m.text !== null) setLastText(m.text);
    $("gen-stats").textContent = `${m.n} tokens · ${m.tokens_per_s.toFixed(1)} tok/s`;
  });
  if (engine.info.gpu_error) return;
  $("load-btn").onclick = loadModel;
  $("local-model").onchange = (ev) => loadLocal(ev.target.files);
  $("adapter-files").onchange = (ev) => loadAdapter(ev.target.files);
  $("adapter-remove").onclick = removeAdapter;
  $("generate-btn").onclick = () => generate();
  $("regenerate-btn").onclick = () => generate({ again: true });
  $("stop-btn").onclick = () => engine.cancel();
  $("save-state-btn").onclick = saveState;
  $("restore-state-btn").onclick = restoreState;
  $("generate-card").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); generate(); }
  });
  await listModels();
  await loadModel();   // the embedded default model works with no setup
}

main().catch((err) => showError($("gen-error"), "The page could not start (reload it to try again)", err));
