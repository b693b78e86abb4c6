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

function setBusy(on) {
  busy = on;
  $("generate-btn").disabled = on || !loaded;
  $("regenerate-btn").disabled = on || !loaded || !last;
  $("stop-btn").disabled = !on;
  $("load-btn").disabled = on;
  $("hub-open").disabled = on;
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
  clearCard($("model-facts"));
  try { await engine.run(S + "s.unload()"); } catch (err) { /* already gone */ }
}

async function openModel(what, run) {
  clearError($("model-error"));
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
    return engine.run(S + "result = await s.load_files(args['files'], args['name'], args['origin'])",
                      chosen);
  });
  if (!ok) return;
  const mbjs = chosen.origin.kind === "mbjs";
  $("model-info").textContent = describeModel(loaded, mbjs ? " (MBJS, converted in this tab)" : " (local)");
  showInList(`${chosen.name} (${mbjs ? "dropped MBJS file" : "local folder"})`);
  document.body.dataset.model = `${mbjs ? "mbjs" : "local"}:${chosen.name}`;
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
  const ok = await openModel("the model", () => engine.run(
    S + "result = await s.load_hub(args['spec'], args['endpoint'])", { spec, endpoint }));
  if (!ok) return;
  $("model-info").textContent = describeModel(loaded, ` (from ${new URL(loaded.card.facts.origin.endpoint).host})`);
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
  engine.on("token", (m) => {
    if (m.text !== null) setLastText(m.text);
    $("gen-stats").textContent = `${m.n} tokens · ${m.tokens_per_s.toFixed(1)} tok/s`;
  });
  if (engine.info.gpu_error) return;
  wireDeviceLoss();
  $("load-btn").onclick = loadModel;
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
