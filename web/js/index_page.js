// The generate page: choose a model, stream a continuation, save/restore the conversation.
// All engine work happens in the Worker (py_engine/app/generate_session.py); this file keeps
// the transcript (the person's prompts and the model's continuations, shown as one document),
// checks the form, and shows every failure as one sentence (web/js/errors.js).
import { bootShell } from "/static/js/shell.js";
import { clearError, deviceLostSentence, showError } from "/static/js/errors.js";
import { readSampling } from "/static/js/sampling_form.js";
import { clearCard, renderCard } from "/static/js/model_card.js";
import { registerModelFiles } from "/static/js/model_files.js";
import { fromInput, takeDrop } from "/static/js/drop_files.js";

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
// The loaded model: {key (as document.body.dataset.model), reload()} — reload() opens it again
// in the format remembered for it (the weight-format selector changes that format).
let current = null;

function setBusy(on) {
  busy = on;
  $("generate-btn").disabled = on || !loaded;
  $("regenerate-btn").disabled = on || !loaded || !last;
  $("stop-btn").disabled = !on;
  $("load-btn").disabled = on;
  $("hub-open").disabled = on;
  $("save-state-btn").disabled = on || !loaded;
  $("restore-state-btn").disabled = on || !loaded;
  $("weights-format").disabled = on;
  $("cache-clear").disabled = on;
}

// ---- weight formats: one per model, remembered in this browser -------------------------------
const FORMAT_NAMES = { f32: "f32 (full precision)", f16: "f16 (16-bit)", bf16: "bf16 (16-bit)",
                       q8: "q8 (8-bit, a scale per row)", q4: "q4 (4-bit, a scale per 32 values)" };
const FORMAT_KEY = "mambaweb:weights-format:";
const mb = (n) => n >= 1e5 ? `${(n / 1e6).toFixed(2)} MB` : `${(n / 1e3).toFixed(1)} kB`;

function formatFor(key) {
  const f = key ? localStorage.getItem(FORMAT_KEY + key) : null;
  return f && FORMAT_NAMES[f] ? f : "f32";
}
function rememberFormat(key, fmt) { if (key) localStorage.setItem(FORMAT_KEY + key, fmt); }

// Label every option with what it would take on the GPU for the chosen model (a plan from
// py_engine: config + weight headers), and disable one the device cannot run, saying why.
// table: {formats: {fmt: {gpu_bytes, problem}}} or null (unknown yet).
function showFormatTable(table, forKey) {
  const sel = $("weights-format");
  for (const opt of sel.options) {
    const row = table && table.formats ? table.formats[opt.value] : null;
    opt.textContent = FORMAT_NAMES[opt.value] + (row ? ` · ${mb(row.gpu_bytes)} on the GPU` : "");
    if (row) opt.dataset.gpuBytes = String(row.gpu_bytes); else delete opt.dataset.gpuBytes;
    opt.disabled = !!(row && row.problem);
    opt.title = row && row.problem ? row.problem : "";
  }
  if (forKey !== undefined) sel.dataset.planFor = forKey;
}

// The list's model, before it is loaded: its format and what each format would take.
async function planChosen() {
  const sel = $("model-select");
  const name = sel.value;
  if (!name || !sel.selectedOptions[0]?.dataset.files || busy) return;
  $("weights-format").value = formatFor(name);
  showFormatTable(null, name);
  // plans in flight, for tests: a plan started just before a load can still hold the cache
  // entry open (it re-checks every stored piece) after that load is done
  document.body.dataset.planning = String(+(document.body.dataset.planning || 0) + 1);
  try {
    const table = await engine.run(S + "result = await s.plan(args['url'], args['files'])",
      { url: new URL(`/weights/${encodeURIComponent(name)}/`, location.href).href,
        files: JSON.parse(sel.selectedOptions[0].dataset.files) });
    if ($("model-select").value === name) showFormatTable(table, name);
    showDiscarded(table.cache);
  } catch (err) { /* the load itself will say what is wrong with this model */ }
  finally { document.body.dataset.planning = String(+document.body.dataset.planning - 1); }
}

async function formatChanged() {
  const fmt = $("weights-format").value;
  if (current) {
    rememberFormat(current.key, fmt);
    await current.reload();
  } else {
    rememberFormat($("model-select").value, fmt);
  }
}

// ---- the browser's cache of fetched weights (web/js/weight_cache.mjs) ---------------------------
async function showCacheUsage() {
  try {
    const u = await engine.call({ op: "cacheUsage" });
    document.body.dataset.cacheBytes = String(u.bytes);
    $("cache-info").textContent = !u.available
      ? "This browser offers no private file storage: models stream on every load."
      : u.bytes ? `Cached models: ${mb(u.bytes)} of weights kept in this browser for the next load.`
        : "Cached models: none yet (downloaded weights are kept in this browser for the next load).";
    $("cache-clear").hidden = !u.available;
  } catch (err) { $("cache-info").textContent = `Cached models: unknown (${err.message})`; }
}

async function clearCache() {
  clearError($("model-error"));
  $("cache-clear").disabled = true;
  // a model being read from the cache (a plan of the chosen model) finishes first
  $("cache-note").textContent = "Clearing cached models…";
  $("cache-note").hidden = false;
  try {
    await engine.call({ op: "cacheClear" });
    $("cache-note").textContent = "Cached models cleared: the next load downloads its weights again.";
    $("cache-note").hidden = false;
  } catch (err) {
    $("cache-note").hidden = true;
    showError($("model-error"), "Could not clear the cached models", err);
  } finally {
    $("cache-clear").disabled = busy;
  }
  await showCacheUsage();
}

// What the last load's cache did, in words (empty when nothing went through it).
function cacheWords(c) {
  if (!c) return "";
  if (c.hit_bytes && !c.fetched_bytes) return " · weights read from this browser's cache";
  if (c.stored_bytes) return " · weights kept in this browser for the next load";
  return "";
}

// A cache entry found truncated or damaged (and fetched again) is worth a line: say which.
function showDiscarded(c) {
  const notes = (c && c.discarded) || [];
  if (notes.length) { $("cache-note").textContent = notes.join(" "); $("cache-note").hidden = false; }
}

function afterLoad(r) {
  showDiscarded(r.cache);
  $("weights-format").value = r.weights ? r.weights.requested : "f32";
  showFormatTable({ formats: Object.fromEntries(Object.entries(r.card.facts.gpu_bytes_by_format || {})
    .map(([f, n]) => [f, { gpu_bytes: n, problem: planProblems[f] || null }])) }, current && current.key);
  showCacheUsage();
}
let planProblems = {};   // fmt -> sentence, from the last plan (what this device cannot run)

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
  current = null;
  last = null;
  turns = [];
  renderTranscript();
  delete document.body.dataset.model;
  $("model-info").textContent = "No model loaded.";
  clearCard($("model-facts"));
  try { await engine.run(S + "s.unload()"); } catch (err) { /* already gone */ }
}

async function openModel(what, run) {
  clearError($("model-error"));
  $("cache-note").hidden = true;
  $("load-progress").hidden = false;
  $("load-progress").removeAttribute("value");      // indeterminate until sizes are known
  setBusy(true);
  try {
    loaded = await run();
    turns = [];
    last = null;
    renderTranscript();
    renderCard($("model-facts"), loaded.card);
    return true;
  } catch (err) {
    await forgetModel();
    showError($("model-error"), `Could not load ${what}`, err);
    return false;
  } finally {
    $("load-progress").hidden = true;
    document.body.dataset.loads = String(+(document.body.dataset.loads || 0) + 1);
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
  const fmt = formatFor(name);
  $("weights-format").value = fmt;
  const ok = await openModel(name, () => engine.run(
    S + "result = await s.load(args['url'], args['name'], args['files'], weights_format=args['fmt'])",
    { url, name, files, fmt }));
  if (!ok) return;
  current = { key: name, reload: () => { $("model-select").value = name; return loadModel(); } };
  afterLoad(loaded);
  $("model-info").textContent = describeModel(loaded, "") + cacheWords(loaded.cache);
  sel.querySelector("option[data-local]")?.remove();
  document.body.dataset.model = name;
}

// The model list names what is loaded: an entry for a model that did not come from the list.
function showInList(label) {
  const sel = $("model-select");
  sel.querySelector("option[data-local]")?.remove();
  const opt = new Option(label, "");
  opt.dataset.local = "1";
  sel.prepend(opt);
  sel.value = "";
}

// A model folder, loose files or an MBJS .bin from this computer (web/js/model_files.js):
// read inside the tab, nothing is uploaded.
async function openFromComputer(list) {
  if (!list.length) return;
  let chosen = null;
  const what = list[0].path.includes("/") ? `the folder “${list[0].path.split("/")[0]}”`
    : list.length === 1 ? `“${list[0].file.name}”` : "the chosen files";
  const ok = await openModel(what, async () => {
    chosen = await registerModelFiles(engine, list, (text) => { $("model-info").textContent = text; });
    return loadChosen(chosen);
  });
  if (!ok) return;
  const mbjs = chosen.origin.kind === "mbjs";
  const key = `${mbjs ? "mbjs" : "local"}:${chosen.name}`;
  current = { key, reload: () => reopenChosen(chosen, mbjs) };
  afterLoad(loaded);
  $("model-info").textContent = describeModel(loaded, mbjs ? " (MBJS, converted in this tab)" : " (local)");
  showInList(`${chosen.name} (${mbjs ? "dropped MBJS file" : "local folder"})`);
  document.body.dataset.model = key;
}

// The files stay in the Worker's registry until the next pick, so a format change reopens
// them without asking the person to choose them again.
function loadChosen(chosen) {
  const key = `${chosen.origin.kind === "mbjs" ? "mbjs" : "local"}:${chosen.name}`;
  const fmt = formatFor(key);
  $("weights-format").value = fmt;
  return engine.run(S + "result = await s.load_files(args['files'], args['name'], args['origin'], " +
                    "weights_format=args['fmt'])", { ...chosen, fmt });
}
async function reopenChosen(chosen, mbjs) {
  const key = current.key;
  const ok = await openModel(`“${chosen.name}”`, () => loadChosen(chosen));
  if (!ok) return;
  current = { key, reload: () => reopenChosen(chosen, mbjs) };
  afterLoad(loaded);
  $("model-info").textContent = describeModel(loaded, mbjs ? " (MBJS, converted in this tab)" : " (local)");
  document.body.dataset.model = key;
}

// ---- models from the Hub by name (py_engine/io/hub.py) --------------------------------------
let hubDefault = "";    // the server's HF_ENDPOINT (or the Hub)

async function openHub(spec) {
  clearError($("model-error"));
  spec = (spec || "").trim();
  if (!spec) {
    showError($("model-error"), "Type a Hub model name first: org/name, for example state-spaces/mamba-130m-hf");
    $("hub-repo").focus();
    return;
  }
  const endpoint = $("hub-endpoint").value.trim() || hubDefault;
  const key = `hub:${spec.replace(/@main$/, "")}`;
  const fmt = formatFor(key);
  $("weights-format").value = fmt;
  const ok = await openModel("the model", () => engine.run(
    S + "result = await s.load_hub(args['spec'], args['endpoint'], weights_format=args['fmt'])",
    { spec, endpoint, fmt }));
  if (!ok) return;
  current = { key, reload: () => openHub(spec) };
  afterLoad(loaded);
  $("model-info").textContent = describeModel(loaded, ` (from ${new URL(loaded.card.facts.origin.endpoint).host})`) +
    cacheWords(loaded.cache);
  showInList(`${loaded.name} (Hub)`);
  document.body.dataset.model = `hub:${loaded.name}`;
}

function wireModelDrop() {
  const zone = $("model-drop");
  const input = $("model-drop-files");
  const choose = () => { if (!busy) input.click(); };
  zone.addEventListener("click", (ev) => { if (ev.target !== input) choose(); });
  zone.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); choose(); }
  });
  input.addEventListener("change", () => { const list = fromInput(input.files); input.value = ""; openFromComputer(list); });
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (ev) => { ev.preventDefault(); zone.classList.add("over"); });
  }
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (ev) => {
    ev.preventDefault();
    zone.classList.remove("over");
    if (busy) return;
    takeDrop(ev.dataTransfer).then(openFromComputer)
      .catch((err) => showError($("model-error"), "Could not read the dropped files", err));
  });
  // a drop that misses the zone must not navigate away from the page
  document.addEventListener("dragover", (ev) => ev.preventDefault());
  document.addEventListener("drop", (ev) => { if (!zone.contains(ev.target)) ev.preventDefault(); });
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

// A lost GPU device (issue 13): the Worker restarts the engine on a new device by itself;
// the page says so and reloads the model from the list (a local or Hub model: open it again).
function wireDeviceLoss() {
  engine.on("gpu-lost", (m) => {
    document.body.dataset.gpu = "lost";
    showError($("gen-error"), `${deviceLostSentence(m)}: restarting the engine on a new device`);
  });
  engine.on("gpu-failed", (m) => {
    document.body.dataset.gpu = "failed";
    showError($("gen-error"), `The GPU device was lost and no new one could be started (${m.gpu_error}): reload the page`);
  });
  engine.on("gpu-restored", async () => {
    const fromList = $("model-select").value && $("model-select").selectedOptions[0]?.dataset.files;
    if (fromList) await loadModel();
    else await forgetModel();
    showError($("gen-error"), fromList
      ? "The GPU device was lost; the engine restarted on a new one and reloaded the model: generate again"
      : "The GPU device was lost; the engine restarted on a new one: open your model again");
    document.body.dataset.gpu = "restored";
  });
}

async function main() {
  engine = await bootShell();
  engine.on("load_progress", (m) => {
    $("load-progress").max = m.total_bytes; $("load-progress").value = m.bytes;
    $("model-info").textContent = `loading… ${(m.bytes / 1e6).toFixed(1)} / ${(m.total_bytes / 1e6).toFixed(1)} MB, ` +
      `${m.tensors}/${m.total_tensors} tensors, ${m.mb_per_s.toFixed(1)} MB/s`;
  });
  engine.on("load_plan", (m) => {
    // what the repo holds and how big it is, before the first weight byte is read
    document.body.dataset.plannedBytes = String(m.total_bytes);
    $("model-info").textContent = `${m.label}: ${m.total_text} of weights (${m.weight_format}) ` +
      `from ${new URL(m.endpoint).host}, downloading…`;
  });
  engine.on("weights_plan", (m) => {
    planProblems = Object.fromEntries(Object.entries(m.formats).map(([f, r]) => [f, r.problem]));
    showFormatTable(m);
  });
  engine.on("cache_notice", (m) => {
    // said once per load, however many files or chunks the storage refused
    document.body.dataset.cacheNotices = String(+(document.body.dataset.cacheNotices || 0) + 1);
    $("cache-note").textContent = m.text;
    $("cache-note").hidden = false;
  });
  engine.on("token", (m) => {
    if (m.text !== null) setLastText(m.text);
    $("gen-stats").textContent = `${m.n} tokens · ${m.tokens_per_s.toFixed(1)} tok/s`;
  });
  if (engine.info.gpu_error) return;
  wireDeviceLoss();
  $("load-btn").onclick = loadModel;
  $("model-select").addEventListener("change", planChosen);
  $("weights-format").addEventListener("change", formatChanged);
  $("cache-clear").onclick = clearCache;
  $("local-model").onchange = (ev) => { const list = fromInput(ev.target.files); ev.target.value = ""; openFromComputer(list); };
  wireModelDrop();
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
  showCacheUsage();
  // ?hub=URL sets the endpoint, ?model=org/name opens that model instead of the default
  const params = new URLSearchParams(location.search);
  hubDefault = await fetch("/api/hub").then((r) => r.json()).then((j) => j.endpoint)
    .catch(() => null) || "https://huggingface.co";
  $("hub-endpoint").placeholder = hubDefault;
  if (params.get("hub")) $("hub-endpoint").value = params.get("hub");
  if (params.get("model")) {
    $("hub-repo").value = params.get("model");
    await openHub(params.get("model"));
  } else {
    await loadModel();   // the embedded default model works with no setup
  }
}

// registered before the engine boots, so Enter in the name field never submits the page away
$("hub-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  if (engine && engine.info && !engine.info.gpu_error && !busy) openHub($("hub-repo").value);
});
main().catch((err) => showError($("gen-error"), "The page could not start (reload it to try again)", err));
