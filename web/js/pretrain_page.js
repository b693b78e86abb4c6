// The train page: a model from scratch (py_engine.train.session) or a fine-tune of a served or
// opened checkpoint (py_engine.app.finetune_session, the same session underneath). Everything
// that decides anything runs in the Worker; this file collects the person's choices, hands
// files to the Worker as Blobs (trainPut), sends small snippets, and draws what the session
// reports ({event: "train"}). Run states: Ready (no run) / Training / Paused / Finished; a
// finished (or stopped) run trains N more steps; Resume is offered only for a paused run.
import { bootShell } from "/static/js/shell.js";
import { takeDrop, walk } from "/static/js/drop_files.js";
import { deviceLostSentence, sentence } from "/static/js/errors.js";

const $ = (id) => document.getElementById(id);
const SAMPLE_URL = "/static/samples/python-stdlib.txt";
const PY = "from py_engine.train import session as S\nfrom py_engine.app import finetune_session as F\n";
const ready = bootShell();
ready.catch(() => {});

let engine = null;
let corpusFiles = [];       // File objects (also stored in the Worker under "corpus")
let tokFile = null;         // a chosen tokenizer.json
let tokVocab = null;        // its vocabulary size once parsed
let status = "empty";       // empty | preparing | running | pausing | paused | stopped | done | error
let history = [];           // [[step, loss]]
let steps = 0;
let describeTimer = null;
let describeGen = 0;        // bumped by every change the estimate depends on; a describe that
                            // finishes with no newer change marks the summary "fresh" for tests
let corpusLabel = null;     // what the corpus summary calls the chosen corpus
let runKind = null;         // the current run: "pretrain" | "finetune" (null: none)
let runMode = null;         // a fine-tune's mode: lora | full | wsla
let runWeights = "f32";     // a fine-tune's base format on the GPU (narrow: LoRA only, no merge)
let targetsFor = null;      // the base whose linear layers the target checkboxes list
let pendingTicks = null;    // a resumed run's LoRA targets, ticked once its base is listed
let targetsTouched = false; // untouched boxes send no targets: the engine's defaults, as ever
let evals = [];             // [[step, held-out loss]] of a fine-tune
let ftFolder = null;        // a model folder chosen for fine-tuning: {files: {path: id}, name, handle}
let savedKind = "pretrain"; // the kind of the run saved in this browser (its info.json)
let savedBase = null;       // its base when that is a folder from this computer: {name, handle, handleFailed}

// ---- small helpers ---------------------------------------------------------------------
function message(text, kind) {
  const el = $("message");
  el.textContent = text || "";
  el.className = `pt-message ${kind || "error"}`;
  el.hidden = !text;
}
const clearMessage = () => message("");

function plainError(err) {
  // A Python traceback from the Worker: show its last "SomethingError: message" line.
  const text = String(err && err.message ? err.message : err);
  const lines = text.split("\n").map((l) => l.trim()).filter(Boolean);
  for (let i = lines.length - 1; i >= 0; i--) {
    const m = /^[\w.]*(?:Error|Exception|Unavailable): (.*)$/.exec(lines[i]);
    if (m) return m[1];
  }
  return lines.length ? lines[lines.length - 1] : text;
}

const fmtInt = (n) => Number(n).toLocaleString("en-US");
const fmtBytes = (n) => n >= 1e9 ? `${(n / 1e9).toFixed(2)} GB` : n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB`
  : `${(n / 1e3).toFixed(0)} KB`;
function fmtTime(s) {
  if (s == null || !isFinite(s)) return "–";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return h ? `${h}:${String(m).padStart(2, "0")}:${String(sec).padStart(2, "0")}` : `${m}:${String(sec).padStart(2, "0")}`;
}

async function py(code, args) {
  if (!engine) throw new Error("the engine is not ready yet");
  return engine.run(PY + code, args || {});
}

// ---- corpus ------------------------------------------------------------------------------
const SKIP = /(^|\/)(\.[^/]*|node_modules|__pycache__)(\/|$)/;
const BINARY_EXT = /\.(png|jpe?g|gif|webp|ico|pdf|zip|gz|tgz|bz2|xz|7z|tar|bin|safetensors|pt|pth|onnx|wasm|so|dll|exe|class|jar|pyc|mp[34]|wav|ogg|woff2?|ttf|otf|npy|npz)$/i;

async function setCorpus(files, label) {
  const usable = files.filter((f) => {
    const path = f.webkitRelativePath || f.name;
    return !SKIP.test(path) && !BINARY_EXT.test(path) && f.size > 0;
  });
  if (!usable.length) {
    message(files.length ? "None of those files look like text (images, archives and model files are skipped): choose text files, a folder of them, or the sample corpus."
      : "No files were dropped: choose text files or a folder, or the sample corpus.");
    return;
  }
  // Sniff the contents now, with the policy Start applies (py_engine.train.data): a binary or
  // non-UTF-8 choice is refused here, not at Start; files it would skip are named.
  let info;
  try {
    await engine.call({ op: "trainPut", key: "corpus", value: usable });
    info = await py("result = await S.sniff_corpus()");
  } catch (err) {
    await engine.call({ op: "trainPut", key: "corpus", value: corpusFiles.length ? corpusFiles : null }).catch(() => {});
    document.body.dataset.corpus = corpusFiles.length ? "ready" : "refused";
    message(`That corpus cannot be used: ${plainError(err)}`);
    return;
  }
  corpusFiles = usable;
  corpusLabel = label || `${info.files} file${info.files > 1 ? "s" : ""}`;
  const total = usable.reduce((a, f) => a + f.size, 0);
  const skipped = files.length - usable.length + (info.skipped_count || 0);
  $("corpus-summary").textContent = `${corpusLabel}: ${fmtBytes(total)}` +
    `${skipped ? ` (${skipped} file${skipped > 1 ? "s" : ""} skipped)` : ""}`;
  document.body.dataset.corpus = "ready";
  clearMessage();
  const notes = [info.summary, ...(info.notes || [])].filter(Boolean);
  if (notes.length) message(`Corpus: ${notes.join("; ")}.`, "info");
  refreshControls();
  await sniffData();
}

// ---- fine-tune data: plain text or JSONL records (py_engine/app/finetune_data.py) ---------
// What a fine-tune will train on, said as soon as the data (or the base model) is chosen:
// the kind detected, how many records, and which tokens the loss covers.
function dataText(d) {
  if (d.kind === "text") return `Fine-tune data: plain text; the loss covers ${d.loss_on}.`;
  const what = d.kind === "mixed"
    ? `${fmtInt(d.records)} records (${fmtInt(d.prompt_completion)} prompt/completion, ${fmtInt(d.chat)} chat)`
    : `${fmtInt(d.records)} ${d.kind === "chat" ? "conversations" : "records"}`;
  const held = d.heldout_records ? `, ${fmtInt(d.heldout_records)} held out` : "";
  return `Fine-tune data: ${d.label}, ${what}${held}; the loss covers ${d.loss_on}.`;
}

function showData(d, error) {
  const el = $("ft-data");
  el.hidden = !d && !error;
  el.className = error ? "error-text" : "muted";
  el.textContent = error ? sentence(`That data cannot be used for this fine-tune: ${error}`) : d ? dataText(d) : "";
  if (error) document.body.dataset.ftData = "refused";
  else if (d) document.body.dataset.ftData = `${d.kind}:${d.records}`;
  else delete document.body.dataset.ftData;
}

let sniffSeq = 0;
async function sniffData() {
  const seq = ++sniffSeq;
  if (what() !== "finetune" || !corpusFiles.length || !engine) { showData(null); return; }
  try {
    const d = await py("result = await F.sniff_data(args)", { base: ftBase() });
    if (seq === sniffSeq) showData(d);
  } catch (err) {
    if (seq === sniffSeq) showData(null, plainError(err));
  }
}

async function useSample() {
  try {
    const resp = await fetch(SAMPLE_URL);
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    const blob = await resp.blob();
    await setCorpus([new File([blob], "python-stdlib.txt", { type: "text/plain" })],
                    "Sample corpus (CPython standard library source)");
  } catch (err) {
    message(`Could not load the sample corpus (${plainError(err)}): drop your own text files instead.`);
  }
}

// ---- tokenizer ---------------------------------------------------------------------------
const tokKind = () => document.querySelector("input[name=tok]:checked").value;

function vocabForDescribe() {
  const k = tokKind();
  if (k === "byte") return 256;
  if (k === "bpe") return Number($("bpe-vocab").value) || 4096;
  return tokVocab || 256;
}

async function chooseTokenizerFile(file) {
  tokFile = null;
  tokVocab = null;
  $("tok-summary").textContent = "";
  if (!file) return;
  try {
    await engine.call({ op: "trainPut", key: "tokenizer", value: file });
    const r = await py(`tok = await S.make_tokenizer({'kind': 'json', 'key': 'tokenizer', 'name': args['name']}, None)
result = {'vocab_size': tok.vocab_size, 'kind': tok.kind}`, { name: file.name });
    tokFile = file;
    tokVocab = r.vocab_size;
    $("tok-summary").textContent = `${file.name}: ${fmtInt(r.vocab_size)} ids` +
      (r.kind === "byte" ? " (byte-level)" : "");
    document.querySelector("input[name=tok][value=json]").checked = true;
    clearMessage();
  } catch (err) {
    $("tok-file").value = "";
    message(`That tokenizer.json cannot be used: ${plainError(err)}`);
  }
  scheduleDescribe();
}

function tokenizerSpec() {
  const k = tokKind();
  if (k === "bpe") return { kind: "bpe", vocab_size: Number($("bpe-vocab").value) || 4096 };
  if (k === "json") return { kind: "json", key: "tokenizer", name: tokFile ? tokFile.name : "tokenizer.json" };
  return { kind: "byte" };
}

// ---- model + training settings -------------------------------------------------------------
const CFG_KEYS = ["hidden_size", "num_hidden_layers", "state_size", "expand", "conv_kernel"];
const TRAIN_NUM = ["batch", "seq_len", "steps", "warmup", "accum", "sample_every", "autosave_every", "seed"];

function modelSpec() {
  const spec = { size: $("size").value, family: $("family").value };
  $("pattern-label").style.display = spec.family === "hybrid" ? "" : "none";
  if (spec.family === "hybrid" && $("pattern").value.trim()) spec.pattern = $("pattern").value.trim();
  // schedule options (py_engine/models/schedule.py): the session validates them in one sentence
  if ($("virtual").value.trim()) spec.virtual = $("virtual").value.trim();
  if ($("bidi").value) spec.bidi = $("bidi").value;
  for (const k of CFG_KEYS) {
    const v = $(`cfg-${k}`).value;
    if (v !== "") spec[k] = Number(v);
  }
  return spec;
}

function trainSpec() {
  const t = { lr: $("lr").value.trim(), wsla: what() === "scratch" && $("wsla").checked };
  for (const k of TRAIN_NUM) {
    const v = $(k).value;
    if (v !== "") t[k] = Number(v);
  }
  const prompt = $("sample_prompt").value;
  if (prompt) t.sample_prompt = prompt;
  return t;
}

// ---- fine-tune choices -------------------------------------------------------------------
const what = () => document.querySelector("input[name=what]:checked").value;
const ftMode = () => document.querySelector("input[name=ft-mode]:checked").value;

function showWhat() {
  const ft = what() === "finetune";
  $("ft-panel").hidden = !ft;
  $("scratch-only").hidden = ft;
  $("wsla-label").hidden = ft;
  $("ft-lora").hidden = $("lora-targets").hidden = ftMode() !== "lora";
  // a fine-tune trains gently: its own default learning rate unless the person typed one
  if ($("lr").dataset.auto !== "0") $("lr").value = ft ? (ftMode() === "full" ? "1e-4" : "1e-3") : "2e-3";
  scheduleDescribe();
  sniffData();
}

function ftBase() {
  const sel = $("ft-model");
  if (sel.value === "@folder" && ftFolder) return { files: ftFolder.files, name: ftFolder.name };
  const opt = sel.selectedOptions[0];
  if (!opt || !opt.value || opt.value === "@folder") return null;
  return { url: new URL(`/weights/${encodeURIComponent(opt.value)}/`, location.href).href,
           name: opt.value, file_list: JSON.parse(opt.dataset.files || "[]") };
}

const baseKey = (b) => b ? (b.url || `folder:${b.name}`) : null;

const tickedTargets = () => [...document.querySelectorAll("#lora-target-boxes input:checked")].map((c) => c.value);
// The ticked LoRA targets, or null (the engine's defaults) while they are untouched or list
// another base.
const loraTargets = (base) => targetsTouched && targetsFor === baseKey(base) ? tickedTargets() : null;

// One checkbox per linear layer of the model (py_engine.train.lora.linear_modules); a box keeps
// its tick when the next model has the same layer, otherwise the defaults are ticked.
function showTargets(modules, base, ticked) {
  const box = $("lora-target-boxes");
  const keep = ticked || (targetsTouched ? tickedTargets() : null);
  const known = new Set(modules.map((m) => m.name));
  const useKeep = !!keep && keep.some((n) => known.has(n));
  box.innerHTML = "";
  for (const m of modules) {
    const label = document.createElement("label");
    const cb = Object.assign(document.createElement("input"), { type: "checkbox", value: m.name });
    cb.checked = useKeep ? keep.includes(m.name) : m.default;
    cb.addEventListener("change", () => { targetsTouched = true; scheduleDescribe(); });
    label.title = `${m.layers} layer${m.layers > 1 ? "s" : ""} of this model ha${m.layers > 1 ? "ve" : "s"} ${m.name}`;
    label.append(cb, ` ${m.name}`);
    box.append(label);
  }
  targetsFor = baseKey(base);
  targetsTouched = useKeep;
}

function ftSpec() {
  const base = ftBase();
  return { base, mode: ftMode(), train: trainSpec(), eval_frac: Number($("eval-frac").value) || 0.1,
           weights: $("ft-weights").value,
           lora: { r: Number($("lora-r").value), alpha: Number($("lora-alpha").value), rslora: $("lora-rs").checked,
                   targets: loraTargets(base) } };
}

async function listBaseModels() {
  const sel = $("ft-model");
  try {
    const models = await (await fetch("/api/models")).json();
    sel.innerHTML = "";
    for (const m of models) {
      if (m.supported === false) continue;
      const size = m.param_count ? ` · ${(m.param_count / 1e6).toFixed(2)}M params` : "";
      const opt = new Option(`${m.name} (${m.model_type || m.format}${size})`, m.name);
      opt.dataset.files = JSON.stringify(m.files || []);
      sel.append(opt);
    }
    if (models.some((m) => m.name === "default")) sel.value = "default";
  } catch (err) {
    $("ft-summary").textContent = `Could not list the served models (${plainError(err)}): open a model folder instead.`;
  }
}

// ---- a base model folder from this computer -----------------------------------------------
// Three ways in: "Open a model folder…" (Chrome: showDirectoryPicker, which gives a
// FileSystemDirectoryHandle; elsewhere the <input webkitdirectory>), or a folder dropped on
// the model row (Chrome: DataTransferItem.getAsFileSystemHandle). A handle is kept in
// IndexedDB with the run (keepHandle), so after a reload Resume reads the folder again with
// the person's permission (requestPermission on that click); without one Resume asks for the
// folder. Either way the engine checks it is the same base (py_engine/app/base_fingerprint.py)
// and refuses another folder in one sentence; the autosave stays.
const IDB_NAME = "mambaweb-train", IDB_STORE = "handles", IDB_KEY = "run-base";

function idb(mode, fn) {
  return new Promise((resolve, reject) => {
    const open = indexedDB.open(IDB_NAME, 1);
    open.onupgradeneeded = () => open.result.createObjectStore(IDB_STORE);
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const db = open.result;
      const tx = db.transaction(IDB_STORE, mode);
      const req = fn(tx.objectStore(IDB_STORE));
      tx.oncomplete = () => { db.close(); resolve(req.result); };
      tx.onerror = tx.onabort = () => { db.close(); reject(tx.error); };
    };
  });
}
// {handle, name} of the saved run's base folder, or null (none kept, or no IndexedDB)
const storedHandle = () => idb("readonly", (st) => st.get(IDB_KEY)).then((r) => r || null, () => null);
// the run now saved in this browser has this base folder handle (null: none to keep)
const keepHandle = (rec) => idb("readwrite", (st) => (rec ? st.put(rec, IDB_KEY) : st.delete(IDB_KEY)))
  .then(() => { document.body.dataset.keptHandle = rec ? rec.name : ""; }, () => {});

// A directory handle -> [{file, path}] relative to it (hidden files and folders skipped).
async function filesOfHandle(dir, prefix = "", out = []) {
  for await (const [name, h] of dir.entries()) {
    if (name.startsWith(".")) continue;
    if (h.kind === "file") out.push({ file: await h.getFile(), path: prefix + name });
    else await filesOfHandle(h, `${prefix}${name}/`, out);
  }
  return out;
}

// The files of an <input webkitdirectory> -> {list: [{file, path}] relative to the folder, name}.
function inputFolder(files) {
  const list = files.map((file) => ({
    file, path: (file.webkitRelativePath || file.name).split("/").slice(1).join("/") || file.name,
  }));
  return { list, name: (files[0] && (files[0].webkitRelativePath || "").split("/")[0]) || "local model", handle: null };
}

let folderWaiter = null;    // a pickFolder() waiting for the <input> to give a folder
// Ask the person for a model folder: {list, name, handle} or null when they cancel.
async function pickFolder() {
  if (window.showDirectoryPicker) {
    try {
      const handle = await window.showDirectoryPicker({ id: "mambaweb-model", mode: "read" });
      return { list: await filesOfHandle(handle), name: handle.name, handle };
    } catch (err) {
      if (err && err.name === "AbortError") return null;       // the person closed the picker
      throw err;     // SecurityError: no user gesture left (a permission prompt used it)
    }
  }
  return new Promise((resolve) => {
    folderWaiter = resolve;
    $("ft-folder").value = "";
    $("ft-folder").click();
  });
}

function folderGiven(files) {
  const w = folderWaiter;
  folderWaiter = null;
  $("ft-folder").value = "";
  const picked = files && files.length ? inputFolder(files) : null;
  if (w) w(picked);
  else if (picked) useBaseFolder(picked).catch((err) => message(plainError(err)));
}

function showFolderOption(name) {
  const sel = $("ft-model");
  sel.querySelector("option[value='@folder']")?.remove();
  sel.prepend(new Option(`${name} (folder from this computer)`, "@folder"));
  sel.value = "@folder";
}

// The Worker's registry ids of a folder's files: {files: {path: id}, ids}.
async function registerFolder(list) {
  const ids = await engine.call({ op: "convertPutFiles", files: list });
  return { files: Object.fromEntries(ids.map((f) => [f.path, f.id])), ids: ids.map((f) => f.id) };
}

// {list, name, handle} chosen as the base to fine-tune.
async function useBaseFolder(picked) {
  if (!picked || !picked.list.length) return;
  if (!picked.list.some((f) => f.path === "config.json")) {
    message("That folder has no config.json: choose a model folder (config.json + model.safetensors + tokenizer.json).");
    return;
  }
  const { files } = await registerFolder(picked.list);
  ftFolder = { files, name: picked.name, handle: picked.handle || null };
  showFolderOption(picked.name);
  document.body.dataset.ftFolder = picked.name;
  clearMessage();
  scheduleDescribe();
  sniffData();
}

// A folder (or its files) dropped on the model row. The handle and the entry must both be
// asked for inside the drop event itself.
function dropBase(e) {
  e.preventDefault();
  const items = [...(e.dataTransfer.items || [])].filter((i) => i.kind === "file");
  const handles = items.map((i) => (i.getAsFileSystemHandle ? i.getAsFileSystemHandle().catch(() => null) : null));
  const entries = items.map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null));
  const loose = [...(e.dataTransfer.files || [])];
  (async () => {
    const hs = await Promise.all(handles);
    if (hs.length === 1 && hs[0] && hs[0].kind === "directory") {
      return useBaseFolder({ list: await filesOfHandle(hs[0]), name: hs[0].name, handle: hs[0] });
    }
    if (entries.length === 1 && entries[0] && entries[0].isDirectory) {
      const files = [];
      await walk(entries[0], files, entries[0]);
      return useBaseFolder({ list: files, name: entries[0].name, handle: null });
    }
    return useBaseFolder({ list: loose.map((file) => ({ file, path: file.name })), name: "dropped files", handle: null });
  })().catch((err) => message(plainError(err)));
}

async function describeFinetune(gen) {
  const spec = ftSpec();
  if (!spec.base) { $("ft-summary").textContent = "Choose a model to fine-tune."; return; }
  try {
    const r = await py("result = await F.describe(args['base'], args)", spec);
    if (gen !== describeGen) return;
    if (targetsFor !== baseKey(spec.base)) {
      showTargets(r.linear_modules, spec.base, pendingTicks);
      if (pendingTicks) scheduleDescribe();        // the estimate for the run's own targets
      pendingTicks = null;
    }
    const mb = r.memory_bytes, n = r.trained, mode = spec.mode;
    const pct = (x) => `${((100 * x) / r.params).toFixed(x < r.params / 100 ? 2 : 1)}%`;
    const narrow = mode === "lora" && spec.weights !== "f32";
    const how = mode === "lora" ? `${spec.weights === "q4" ? "QLoRA" : "LoRA"} r ${spec.lora.r}` +
      `${narrow ? ` on a ${spec.weights} base (${fmtBytes(r.base_bytes)} on the GPU, ${fmtBytes(4 * r.params)} in f32)` : ""}`
      : mode === "wsla" ? "WSLA" : "Full fine-tune";
    let text = `${r.model_type}, ${r.layers} layers × d_model ${r.d_model}, ${fmtInt(r.params)} parameters. ` +
      `${how} trains ${fmtInt(n[mode])} (${pct(n[mode])}), ≈${fmtBytes(mb[mode])} of GPU memory`;
    if (mode !== "full") text += `; a full fine-tune needs ≈${fmtBytes(mb.full)} (${mode === "lora" ? "LoRA" : "WSLA"} saves ${fmtBytes(mb.full - mb[mode])})`;
    $("ft-summary").textContent = `${text}.`;
    $("fit-problems").textContent = "";
    $("ft-problem").textContent = r.problem ? sentence(r.problem) : "";   // beside the choice it is about
    document.body.dataset.params = r.params;
    document.body.dataset.ftMemory = mb[mode];       // tests read what the page estimates
    document.body.dataset.ftTrained = n[mode];
  } catch (err) {
    if (gen !== describeGen) return;
    $("ft-summary").textContent = $("ft-problem").textContent = "";
    $("fit-problems").textContent = `That model cannot be fine-tuned here: ${plainError(err)}`;
  }
}

function scheduleDescribe() {
  describeGen += 1;
  document.body.dataset.described = "stale";
  clearTimeout(describeTimer);
  describeTimer = setTimeout(describe, 150);
}

// The summary (and the estimate in dataset.memory / ftMemory) answers the form as it was when
// the describe began; it is "fresh" only when no field changed while that describe ran, so a
// reader never takes an estimate made for fields half-filled.
async function describe() {
  if (!engine) return;
  const gen = describeGen;
  try {
    await describeNow(gen);
  } finally {
    if (gen === describeGen) document.body.dataset.described = "fresh";
  }
}

// gen: the describeGen this describe began at; a describe that a newer change has overtaken
// writes nothing (two can be in flight: the worker awaits a fine-tune base's config.json, so an
// older answer may arrive after a newer one)
async function describeNow(gen) {
  if (what() === "finetune") return describeFinetune(gen);
  try {
    const r = await py("result = S.describe(args, device.limits if device is not None else None)",
                       { model: modelSpec(), train: trainSpec(), vocab_size: vocabForDescribe() });
    if (gen !== describeGen) return;
    if (!r.ok && r.error) {
      $("model-summary").textContent = "";
      $("fit-problems").textContent = sentence(r.error);
      delete document.body.dataset.params;
      return;
    }
    for (const opt of $("size").options) {
      const n = r.presets[opt.value];
      if (n) opt.textContent = `${opt.value} · ${(n / 1e6).toFixed(n < 1e6 ? 2 : 1)}M params`;
    }
    const c = r.shape;
    for (const k of CFG_KEYS) $(`cfg-${k}`).placeholder = c[k];
    const arch = c.model_type === "mamba2" && !c.pattern.includes("+") ? `Mamba-2 · ${c.num_heads} heads × ${c.head_dim} · `
      : c.model_type === "mamba3" ? `Mamba-3 · ${c.num_heads} heads × ${c.head_dim} · `
      : c.model_type === "nemotron_h" || c.pattern.includes("+") ? `hybrid ${c.pattern} · ` : "";
    const layers = c.virtual_layers.length
      ? `${c.logical_layers} logical layers over ${c.num_hidden_layers} physical (${c.virtual_layers.join(",")})`
      : `${c.num_hidden_layers} layers`;
    const bidi = c.bidi ? ` · bidirectional (${c.bidi} merge): trains on masked tokens, no samples` : "";
    $("model-summary").textContent = `${arch}${fmtInt(r.params)} parameters · d_model ${c.hidden_size} · ` +
      `${layers} · state ${c.state_size} · vocab ${fmtInt(c.vocab_size)}${bidi} · ` +
      `≈${fmtBytes(r.memory_bytes)} of GPU memory to train`;
    document.body.dataset.memory = r.memory_bytes;
    $("fit-problems").textContent = r.problems.length
      ? `Too large for this GPU: ${r.problems.join("; ")}.` : "";
    document.body.dataset.params = r.params;
  } catch (err) {
    if (gen !== describeGen) return;
    $("fit-problems").textContent = plainError(err);
  }
}

// ---- run controls ---------------------------------------------------------------------------
function setStatus(s, note) {
  status = s;
  document.body.dataset.train = s;
  const at = `step ${fmtInt(Number(document.body.dataset.step) || 0)} of ${fmtInt(steps)}`;
  const words = { empty: "Ready", ready: "Ready", preparing: "Preparing…", running: "Training", pausing: "Pausing after this step…",
                  paused: "Paused", stopping: "Stopping…", stopped: `Finished (stopped at ${at})`, done: "Finished",
                  error: `Stopped by an error at ${at}` };
  $("run-status").textContent = note || words[s] || s;
  refreshControls();
}

function refreshControls() {
  const active = ["preparing", "running", "pausing", "stopping"].includes(status);
  $("start").disabled = active || !engine;
  $("pause").disabled = status !== "running";
  // Resume means "go on with a paused run"; a finished or stopped run trains more steps instead
  $("resume").disabled = status !== "paused";
  $("stop").disabled = !["running", "pausing", "paused"].includes(status);
  $("more-row").hidden = !["done", "stopped", "error"].includes(status);
  $("more").disabled = $("more-row").hidden;
  const have = runKind !== null && !["empty", "preparing"].includes(status);
  const lora = runKind === "finetune" && runMode === "lora";
  $("dl-adapter").hidden = !lora;
  $("dl-merged").hidden = !lora || runWeights !== "f32";   // merging needs the f32 base
  $("dl-hf").hidden = lora;
  $("dl-mbjs").hidden = runKind === "finetune";
  for (const id of ["dl-hf", "dl-mbjs", "dl-state", "dl-adapter", "dl-merged"]) $(id).disabled = !have;
}

function resetRun() {
  history = [];
  evals = [];
  $("stat-eval").textContent = "–";
  $("samples").innerHTML = "";
  $("downloads").innerHTML = "";
  drawPlot();
}

async function start() {
  clearMessage();
  if (!corpusFiles.length) {
    message("No corpus: drop text files or a folder, or click “Use the sample corpus”.");
    return;
  }
  const ft = what() === "finetune";
  if (ft && !ftBase()) {
    message("No model to fine-tune: choose a served model in the list, or open a model folder.");
    return;
  }
  if (!ft && tokKind() === "json" && !tokFile) {
    message("No tokenizer.json chosen: pick one, or choose the byte-level tokenizer.");
    return;
  }
  if (status === "paused" && !confirm("Start a new run? The current one stays in your downloads only if you downloaded it.")) return;
  if (!$("resume-banner").hidden && !confirm("Starting a new run replaces the run saved in this browser. Continue?")) return;
  const prev = status;
  setStatus("preparing");
  try {
    const summary = ft ? await py("result = await F.start(device, args)", { ...ftSpec(), corpus_label: corpusLabel })
      : await py("result = await S.start(device, args)",
                 { model: modelSpec(), train: trainSpec(), tokenizer: tokenizerSpec(), corpus_label: corpusLabel });
    resetRun();
    applySummary(summary);
    $("resume-banner").hidden = true;
    savedBase = null;
    // the saved run is now this one: keep its base folder's handle (if any) for a reload
    const base = ft ? ftBase() : null;
    await keepHandle(base && base.files && ftFolder.handle ? { handle: ftFolder.handle, name: ftFolder.name } : null);
  } catch (err) {
    setStatus(prev === "preparing" ? "empty" : prev);
    message(plainError(err));
  }
}

async function control(what) {
  clearMessage();
  try {
    const r = await py(`result = S.${what}()`);
    if (r && r.status) setStatus(r.status);
  } catch (err) {
    message(plainError(err));
  }
}

async function moreSteps() {
  clearMessage();
  const n = Number($("more-steps").value);
  if (!Number.isInteger(n) || n < 1) {
    message("Train more steps: give a whole number of steps, 1 or more.");
    $("more-steps").focus();
    return;
  }
  try {
    const r = await py("result = S.more_steps(args['n'])", { n });
    steps = r.steps;
    $("steps").value = r.steps;
    $("progress").max = r.steps;
    setStatus(r.status);
  } catch (err) {
    message(plainError(err));
  }
}

// The form shows the run it describes (after Start, a resume or a reload), not the defaults.
function showRunSettings(s) {
  const t = s.train || {};
  for (const k of ["batch", "seq_len", "steps", "accum", "sample_every", "autosave_every", "seed"]) {
    if (t[k] !== undefined && t[k] !== null) $(k).value = t[k];
  }
  if (t.warmup !== undefined && t.warmup !== null) $("warmup").value = t.warmup;
  if (t.sample_prompt) $("sample_prompt").value = t.sample_prompt;
  const ft = s.kind === "finetune";
  document.querySelector(`input[name=what][value=${ft ? "finetune" : "scratch"}]`).checked = true;
  if (ft) {
    document.querySelector(`input[name=ft-mode][value=${s.mode}]`).checked = true;
    $("lora-r").value = s.lora.r;
    $("lora-alpha").value = s.lora.alpha;
    $("lora-rs").checked = !!s.lora.rslora;
    $("eval-frac").value = s.eval_frac;
    $("ft-weights").value = s.weights || "f32";
    const sel = $("ft-model");
    if (s.base && s.base.url && [...sel.options].some((o) => o.value === s.base.name)) sel.value = s.base.name;
    else if (s.base && !s.base.url && ftFolder && [...sel.options].some((o) => o.value === "@folder")) sel.value = "@folder";
    targetsFor = null;                    // the next describe lists the base's layers, ticked as the run
    pendingTicks = s.lora.targets || null;
  } else {
    $("wsla").checked = !!t.wsla;
    const c = s.config || {};
    const family = { mamba: "mamba1", falcon_mamba: "mamba1", mamba2: "mamba2", mamba3: "mamba3", nemotron_h: "hybrid" }[c.model_type];
    if (family) $("family").value = family;
    $("virtual").value = (c.mambaweb_virtual_layers || []).join(",");
    $("bidi").value = (c.mambaweb_bidirectional && c.mambaweb_bidirectional.merge) || "";
    if (s.preset && [...$("size").options].some((o) => o.value === s.preset)) $("size").value = s.preset;
    const cfgKey = { hidden_size: c.hidden_size, num_hidden_layers: c.num_hidden_layers, state_size: c.state_size,
                     expand: c.expand, conv_kernel: c.conv_kernel };
    for (const k of CFG_KEYS) if (cfgKey[k] !== undefined) $(`cfg-${k}`).value = cfgKey[k];
    const tk = s.tokenizer === "bpe" ? "bpe" : "byte";
    document.querySelector(`input[name=tok][value=${tk}]`).checked = true;
    if (tk === "bpe") $("bpe-vocab").value = s.vocab_size;
  }
  showWhat();
  if (t.lr !== undefined) $("lr").value = String(t.lr);
  const c = s.corpus || {};
  const name = c.label || (c.names && c.names.length ? c.names.slice(0, 3).join(", ") +
    (c.files > 3 ? ` and ${c.files - 3} more` : "") : "the run's corpus");
  corpusLabel = c.label || corpusLabel;
  $("corpus-summary").textContent = `${name}: ${fmtInt(c.tokens || 0)} tokens (this run's corpus)` +
    (corpusFiles.length ? "" : "; to start a new run, choose a corpus again");
  if (ft && s.data) { sniffSeq++; showData(s.data); }   // the run's own data (a pending sniff is dropped)
  document.body.dataset.corpusName = name;
  document.body.dataset.runShown = s.step;     // the form now shows this run (tests wait on it)
}

function applySummary(s) {
  runKind = s.kind || "pretrain";
  runMode = s.mode || null;
  runWeights = s.weights || "f32";
  showRunSettings(s);
  steps = s.train.steps;
  history = (s.history || []).slice();
  $("progress").max = steps;
  $("progress").value = s.step;
  $("stat-step").textContent = `${fmtInt(s.step)} / ${fmtInt(steps)}`;
  if (s.last) $("stat-loss").textContent = Number(s.last.loss).toFixed(4);
  for (const smp of s.samples || []) addSample(smp);
  evals = (s.evals || []).slice();
  $("stat-eval-box").hidden = runKind !== "finetune";
  if (evals.length) $("stat-eval").textContent = Number(evals[evals.length - 1][1]).toFixed(4);
  const c = s.corpus || {};
  $("run-status").dataset.summary = `${fmtInt(s.params)} params, ${s.tokenizer} tokenizer, ` +
    `${fmtInt(c.tokens || 0)} corpus tokens`;
  for (const w of s.warnings || []) message(w, "info");
  setStatus(s.status === "ready" ? "running" : s.status);
  drawPlot();
}

// ---- events from the session --------------------------------------------------------------
function onEvent(ev) {
  if (ev.type === "prepare") {
    const pct = ev.total ? ` ${Math.round((100 * ev.done) / ev.total)}%` : "";
    $("run-status").textContent = `${ev.stage}${pct}…`;
  } else if (ev.type === "ready") {
    steps = ev.train.steps;
  } else if (ev.type === "step") {
    steps = ev.steps;
    if (ev.loss != null) history.push([ev.step, ev.loss]);   // null: a skipped, non-finite step
    if (history.length > 4000) history = history.filter((_, i) => i % 2 === 0 || i > history.length - 1000);
    $("progress").max = ev.steps;
    $("progress").value = ev.step;
    $("stat-step").textContent = `${fmtInt(ev.step)} / ${fmtInt(ev.steps)}`;
    $("stat-loss").textContent = ev.loss == null ? "not finite" : Number(ev.loss).toFixed(4);
    $("stat-tps").textContent = fmtInt(Math.round(ev.tokens_per_s));
    $("stat-eta").textContent = fmtTime(ev.eta_s);
    $("stat-elapsed").textContent = fmtTime(ev.elapsed_s);
    document.body.dataset.step = ev.step;
    showSkipped(ev.skipped);
    drawPlot();
  } else if (ev.type === "sample") {
    addSample(ev);
  } else if (ev.type === "eval") {
    if (evals.length && evals[evals.length - 1][0] === ev.step) evals.pop();
    evals.push([ev.step, ev.eval_loss]);
    $("stat-eval-box").hidden = false;
    $("stat-eval").textContent = Number(ev.eval_loss).toFixed(4);
    document.body.dataset.evals = evals.length;
    drawPlot();
  } else if (ev.type === "status") {
    if (ev.step !== undefined) document.body.dataset.step = ev.step;
    setStatus(ev.status);
    if (ev.message) message(ev.message);
  } else if (ev.type === "saved") {
    $("stat-saved").textContent = `autosaved at step ${fmtInt(ev.step)}`;
  } else if (ev.type === "warning") {
    message(ev.message, "info");
  }
}

// Steps the engine skipped because their loss or gradients were not finite (NaN/inf): the
// weights did not change on them; training went on.
function showSkipped(n) {
  const el = $("stat-skipped");
  if (!el) return;
  el.hidden = !n;
  el.textContent = n ? `${fmtInt(n)} step${n > 1 ? "s" : ""} skipped: non-finite loss or gradients` : "";
  document.body.dataset.skipped = n || 0;
}

function addSample(ev) {
  const box = $("samples");
  if (box.querySelector("p.muted")) box.innerHTML = "";
  const div = document.createElement("div");
  div.className = "pt-sample";
  const head = document.createElement("div");
  head.className = "muted";
  head.textContent = `step ${fmtInt(ev.step)}`;
  const body = document.createElement("pre");
  const p = document.createElement("span");
  p.className = "pt-prompt";
  p.textContent = ev.prompt;
  body.append(p, document.createTextNode(ev.text));
  div.append(head, body);
  box.prepend(div);
  while (box.children.length > 5) box.lastChild.remove();
}

// ---- loss plot ---------------------------------------------------------------------------
function drawPlot() {
  const cv = $("loss-plot");
  const ctx = cv.getContext("2d");
  const W = cv.width, H = cv.height, L = 48, R = 12, T = 12, B = 28;
  ctx.clearRect(0, 0, W, H);
  ctx.fillStyle = "#fbfbfd";
  ctx.fillRect(0, 0, W, H);
  ctx.font = "12px system-ui, sans-serif";
  ctx.fillStyle = "#5b6672";
  if (!history.length) {
    ctx.fillText("the loss curve appears here once training starts", L, H / 2);
    cv.dataset.points = 0;
    cv.setAttribute("aria-label", "Training loss by step: no steps yet");
    $("loss-summary").textContent = "No training steps yet.";
    return;
  }
  describePlot(cv);
  const maxStep = Math.max(steps, history[history.length - 1][0], 1);
  const losses = history.concat(evals).map((p) => p[1]).filter((x) => isFinite(x));
  const hi = Math.max(...losses) * 1.05, lo = Math.max(0, Math.min(...losses) * 0.9);
  const x = (s) => L + ((W - L - R) * s) / maxStep;
  const y = (v) => T + ((H - T - B) * (hi - v)) / Math.max(hi - lo, 1e-6);
  ctx.strokeStyle = "#dde1e6";
  ctx.beginPath();
  for (let k = 0; k <= 4; k++) {
    const v = lo + ((hi - lo) * k) / 4;
    ctx.moveTo(L, y(v)); ctx.lineTo(W - R, y(v));
    ctx.fillText(v.toFixed(v < 1 ? 3 : 2), 4, y(v) + 4);
  }
  ctx.stroke();
  ctx.fillText("0", L, H - 8);
  ctx.fillText(`${fmtInt(maxStep)} steps`, W - R - 70, H - 8);
  ctx.strokeStyle = "rgba(47,111,237,.35)";
  ctx.beginPath();
  history.forEach(([s, v], i) => { if (isFinite(v)) (i ? ctx.lineTo(x(s), y(v)) : ctx.moveTo(x(s), y(v))); });
  ctx.stroke();
  // smoothed line: a bias-corrected EMA (no lag towards the first point)
  ctx.strokeStyle = "#2f6fed";
  ctx.lineWidth = 2;
  ctx.beginPath();
  let ema = 0, n = 0;
  history.forEach(([s, v], i) => {
    if (!isFinite(v)) return;
    n += 1;
    ema = 0.9 * ema + 0.1 * v;
    const sm = ema / (1 - Math.pow(0.9, n));
    i ? ctx.lineTo(x(s), y(sm)) : ctx.moveTo(x(s), y(sm));
  });
  ctx.stroke();
  ctx.lineWidth = 1;
  // a fine-tune's held-out loss: orange dots joined by a thin line
  if (evals.length) {
    ctx.strokeStyle = ctx.fillStyle = "#c2410c";
    ctx.beginPath();
    evals.forEach(([s, v], i) => { if (isFinite(v)) (i ? ctx.lineTo(x(s), y(v)) : ctx.moveTo(x(s), y(v))); });
    ctx.stroke();
    for (const [s, v] of evals) if (isFinite(v)) { ctx.beginPath(); ctx.arc(x(s), y(v), 3, 0, 2 * Math.PI); ctx.fill(); }
    ctx.fillText("● held-out loss", W - R - 110, T + 12);
  }
  cv.dataset.points = history.length;
}

// The chart's text alternative: where the loss started, where it is, and its lowest point.
function describePlot(cv) {
  const [s0, l0] = history[0], [s1, l1] = history[history.length - 1];
  const best = history.reduce((a, p) => (isFinite(p[1]) && p[1] < a[1] ? p : a), history[0]);
  let text = `Loss ${Number(l1).toFixed(3)} at step ${fmtInt(s1)} of ${fmtInt(steps)}, ` +
    `from ${Number(l0).toFixed(3)} at step ${fmtInt(s0)}; lowest ${Number(best[1]).toFixed(3)} at step ${fmtInt(best[0])}.`;
  if (evals.length) {
    const [e0, e1] = [evals[0], evals[evals.length - 1]];
    text += ` Held-out loss ${Number(e1[1]).toFixed(3)} at step ${fmtInt(e1[0])}, from ${Number(e0[1]).toFixed(3)} at step ${fmtInt(e0[0])}.`;
  }
  cv.setAttribute("aria-label", `Training loss by step. ${text}`);
  $("loss-summary").textContent = text;
}

// ---- downloads ---------------------------------------------------------------------------
async function download(which) {
  clearMessage();
  const btn = $(`dl-${which}`);
  btn.disabled = true;
  try {
    const files = await py("result = await S.export(args['which'])", { which });
    for (const f of files) {
      const blob = await engine.call({ op: "trainTake", key: f.key });
      if (!blob) continue;
      const url = URL.createObjectURL(blob);
      const a = Object.assign(document.createElement("a"), { href: url, download: f.name });
      a.textContent = `${f.name} (${fmtBytes(f.size)})`;
      a.dataset.file = f.name;
      const li = document.createElement("li");
      li.append(a);
      $("downloads").prepend(li);
      a.click();
    }
    document.body.dataset.downloaded = which;
  } catch (err) {
    message(`Download failed: ${plainError(err)}`);
  } finally {
    refreshControls();
  }
}

// ---- resume ------------------------------------------------------------------------------
async function checkSaved() {
  try {
    const info = await py("result = await S.saved_info()");
    if (!info) return;
    if (info.error) {
      $("stat-saved").textContent = `Autosave unavailable (${info.error}): download the training state to keep a run.`;
      return;
    }
    const when = new Date(info.saved_at * 1000).toLocaleString();
    const finished = info.step >= info.steps;
    const what = info.kind === "finetune"
      ? `a ${info.mode === "lora" ? "LoRA" : info.mode === "wsla" ? "WSLA" : "full"} fine-tune of ${(info.base && info.base.name) || "a model"}` +
        `${info.weights && info.weights !== "f32" ? ` (${info.weights} base)` : ""}`
      : `${info.preset || "custom"} model`;
    savedKind = info.kind || "pretrain";
    // a LoRA run keeps only its adapter: its base comes back from where it was opened
    savedBase = null;
    if (info.kind === "finetune" && info.mode === "lora" && info.base && !info.base.url) {
      const rec = await storedHandle();
      const handle = rec && rec.handle && rec.name === info.base.name ? rec.handle : null;
      savedBase = { name: info.base.name, handle, handleFailed: false };
    }
    const folder = !savedBase ? "" : ` Its base is the folder ${savedBase.name} from this computer: ` +
      (savedBase.handle ? `${finished ? "opening" : "resuming"} asks to read it again.`
        : `${finished ? "opening" : "resuming"} asks you to open that folder again.`);
    $("resume-text").textContent = `${finished ? "A finished run" : "A run"} saved in this browser: ${what} ` +
      `(${fmtInt(info.params)} params), step ${fmtInt(info.step)} of ${fmtInt(info.steps)}` +
      `${info.loss != null ? `, loss ${Number(info.loss).toFixed(4)}` : ""}, saved ${when}.${folder}`;
    document.body.dataset.savedBase = savedBase ? (savedBase.handle ? "handle" : "ask") : "";
    // a finished run has nothing to resume: it opens (to download, or train more steps)
    $("resume-saved").textContent = finished ? "Open it" : "Resume it";
    $("resume-banner").hidden = false;
    document.body.dataset.saved = info.step;
  } catch (err) {
    $("stat-saved").textContent = `Could not check for a saved run: ${plainError(err)}`;
  }
}

async function resumeSaved() {
  clearMessage();
  if (savedKind === "finetune" && savedBase) return resumeWithFolder();
  setStatus("preparing", "loading the saved run…");
  try {
    const s = await py(savedKind === "finetune" ? "result = await F.resume_saved(device, args)"
      : "result = await S.resume_saved(device, args)", {});
    resetRun();
    applySummary(s);
    $("resume-banner").hidden = true;
  } catch (err) {
    setStatus("empty");
    message(`Could not resume the saved run: ${plainError(err)}`);
  }
}

// A LoRA run whose base was a folder from this computer: read its kept handle again (Chrome
// asks the person on this click), or ask for the folder; the engine checks it is the same base.
async function resumeWithFolder() {
  const h = savedBase.handle;
  if (h && !savedBase.handleFailed) {
    let picked = null;
    try {
      let perm = await h.queryPermission({ mode: "read" });
      if (perm !== "granted") perm = await h.requestPermission({ mode: "read" });
      if (perm === "granted") picked = { list: await filesOfHandle(h), name: h.name, handle: h };
    } catch (err) {
      picked = null;      // moved, renamed or deleted since: ask for the folder below
    }
    if (picked) return resumeFrom(picked);
    savedBase.handleFailed = true;
  }
  let picked;
  try {
    picked = await pickFolder();
  } catch (err) {
    message(`Could not open a folder (${plainError(err)}): click “${$("resume-saved").textContent}” again and open the folder ${savedBase.name}.`);
    return;
  }
  if (!picked) {
    message(`To resume this run, open the folder ${savedBase.name} it was trained on (or discard the saved run).`, "info");
    return;
  }
  return resumeFrom(picked);
}

async function resumeFrom(picked) {
  if (!picked.list.some((f) => f.path === "config.json")) {
    message(`That folder has no config.json: open the folder ${savedBase.name} this run was trained on.`);
    return;
  }
  setStatus("preparing", "loading the saved run…");
  let reg = null;
  try {
    reg = await registerFolder(picked.list);
    const s = await py("result = await F.resume_saved(device, args)", { base: { files: reg.files, name: picked.name } });
    ftFolder = { files: reg.files, name: picked.name, handle: picked.handle || null };
    showFolderOption(picked.name);
    if (picked.handle) await keepHandle({ handle: picked.handle, name: s.base.name });
    savedBase = null;
    resetRun();
    applySummary(s);
    $("resume-banner").hidden = true;
  } catch (err) {
    if (reg) engine.call({ op: "convertForgetFiles", ids: reg.ids }).catch(() => {});
    if (picked.handle) savedBase.handleFailed = true;    // the next click asks for the folder
    setStatus("empty");
    message(sentence(`Could not resume the saved run: ${plainError(err)}`));
    document.body.dataset.resumeRefused = (+document.body.dataset.resumeRefused || 0) + 1;
  }
}

async function discardSaved() {
  if (!confirm("Delete the run saved in this browser?")) return;
  try {
    await py("result = await S.discard_saved()");
    await keepHandle(null);
    savedBase = null;
    $("resume-banner").hidden = true;
  } catch (err) {
    message(`Could not delete it: ${plainError(err)}`);
  }
}

async function loadStateFile(file) {
  clearMessage();
  if (!file) return;
  if (!corpusFiles.length) {
    message("Choose the corpus this state was trained on first (or the sample corpus), then choose the state file again.");
    $("state-file").value = "";
    return;
  }
  if (["running", "pausing"].includes(status)) {
    message("A run is in progress: pause or stop it first.");
    $("state-file").value = "";
    return;
  }
  const prev = status;
  setStatus("preparing", "loading the training state…");
  try {
    await engine.call({ op: "trainPut", key: "state", value: file });
    const base = what() === "finetune" ? ftBase() : null;
    const folder = base && base.files ? { files: base.files, name: base.name } : null;
    const s = await py(what() === "finetune" ? "result = await F.load_state(device, args)"
      : "result = await S.load_state(device, args)", folder ? { base: folder } : {});
    resetRun();
    applySummary(s);
    savedBase = null;
    await keepHandle(s.base && !s.base.url && folder && ftFolder.handle ? { handle: ftFolder.handle, name: s.base.name } : null);
  } catch (err) {
    setStatus(prev);
    message(`That training state cannot be resumed: ${plainError(err)}`);
  }
  $("state-file").value = "";
}

// ---- a lost GPU device (issue 13) ---------------------------------------------------------
// The Worker re-initialises the engine on a new device by itself; the run on the lost one
// cannot be read any more, so it continues from its last autosave (same loss curve from there):
// a run from scratch through the pretrain session, a fine-tune through its own (a LoRA run's
// base folder from this computer is handed over again; a served base is fetched again).
let statusAtLoss = null;
let kindAtLoss = null;
function wireDeviceLoss() {
  engine.on("gpu-lost", (m) => {
    statusAtLoss = status;
    kindAtLoss = runKind;
    document.body.dataset.gpu = "lost";
    message(`${deviceLostSentence(m)}: restarting the engine on a new device…`, "info");
    if (!["empty", "done", "stopped"].includes(status)) setStatus("preparing", "GPU lost: restarting…");
  });
  engine.on("gpu-failed", (m) => {
    document.body.dataset.gpu = "failed";
    setStatus("error");
    message(`The GPU device was lost and no new one could be started (${m.gpu_error}): reload the page, or restart the browser.`);
  });
  engine.on("gpu-restored", async () => {
    const was = statusAtLoss;
    statusAtLoss = null;
    if (!was || was === "empty") { document.body.dataset.gpu = "restored"; setStatus("empty"); return; }
    try {
      const args = { start: !["paused", "stopped", "done"].includes(was) };   // "error": its steps failed on the lost device
      const ft = kindAtLoss === "finetune";
      if (ft && ftFolder) args.base = { files: ftFolder.files, name: ftFolder.name };
      const s = await py(ft ? "result = await F.resume_saved(device, args)"
        : "result = await S.resume_saved(device, args)", args);
      resetRun();
      applySummary(s);
      $("resume-banner").hidden = true;
      message(`The GPU device was lost; the engine restarted on a new one and the run continues from its autosave at step ${fmtInt(s.step)}.`, "info");
      document.body.dataset.resumedFrom = s.step;
    } catch (err) {
      setStatus("error");
      message(`The GPU device was lost and the run could not be resumed from its autosave: ${plainError(err)}`);
    }
    document.body.dataset.gpu = "restored";
  });
}

// ---- wiring ------------------------------------------------------------------------------
function wire() {
  const dz = $("dropzone");
  dz.addEventListener("dragover", (e) => { e.preventDefault(); dz.classList.add("over"); });
  dz.addEventListener("dragleave", () => dz.classList.remove("over"));
  // keyboard users: Enter or Space on the drop zone itself opens the file chooser
  dz.addEventListener("keydown", (e) => {
    if (e.target === dz && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); $("file-input").click(); }
  });
  dz.addEventListener("drop", async (e) => {
    e.preventDefault();
    dz.classList.remove("over");
    const files = (await takeDrop(e.dataTransfer)).map((it) => it.file);
    await setCorpus(files);
  });
  $("pick-files").onclick = () => $("file-input").click();
  $("pick-folder").onclick = () => $("folder-input").click();
  $("file-input").onchange = (e) => setCorpus([...e.target.files]);
  $("folder-input").onchange = (e) => setCorpus([...e.target.files]);
  $("use-sample").onclick = useSample;
  $("tok-file").onchange = (e) => chooseTokenizerFile(e.target.files[0]);
  for (const r of document.querySelectorAll("input[name=tok]")) r.onchange = scheduleDescribe;
  for (const id of ["bpe-vocab", "family", "pattern", "size", "virtual", "bidi", "batch", "seq_len", "steps", ...CFG_KEYS.map((k) => `cfg-${k}`)]) {
    $(id).addEventListener("input", scheduleDescribe);
    $(id).addEventListener("change", scheduleDescribe);
  }
  for (const r of document.querySelectorAll("input[name=what], input[name=ft-mode]")) r.onchange = showWhat;
  for (const id of ["ft-model", "ft-weights", "lora-r", "lora-alpha", "lora-rs", "eval-frac"]) $(id).addEventListener("change", scheduleDescribe);
  $("ft-model").addEventListener("change", sniffData);
  $("lr").addEventListener("input", () => { $("lr").dataset.auto = "0"; });
  $("ft-pick-folder").onclick = () => {
    folderWaiter = null;                  // a folder chosen now is a base to fine-tune
    pickFolder().then(useBaseFolder).catch((err) => message(plainError(err)));
  };
  $("ft-folder").onchange = (e) => folderGiven([...e.target.files]);
  $("ft-folder").addEventListener("cancel", () => folderGiven(null));
  const baseRow = $("ft-pick-folder").parentElement;
  baseRow.addEventListener("dragover", (e) => e.preventDefault());
  baseRow.addEventListener("drop", dropBase);
  $("more").onclick = moreSteps;
  $("dl-adapter").onclick = () => download("adapter");
  $("dl-merged").onclick = () => download("merged");
  $("start").onclick = start;
  $("pause").onclick = () => control("pause");
  $("resume").onclick = () => control("resume");
  $("stop").onclick = () => control("stop");
  $("dl-hf").onclick = () => download("hf");
  $("dl-mbjs").onclick = () => download("mbjs");
  $("dl-state").onclick = () => download("state");
  $("resume-saved").onclick = resumeSaved;
  $("discard-saved").onclick = discardSaved;
  $("state-file").onchange = (e) => loadStateFile(e.target.files[0]);
  // Keep the promise "a reload resumes where it stopped": when the tab is hidden or left,
  // the engine autosaves after the step it is running (it also saves after step 1 and every
  // 30 s); while training, leaving the page asks first.
  const saveSoon = () => {
    if (engine && status === "running") py("result = S.request_save()").catch(() => {});
  };
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") saveSoon();
  });
  window.addEventListener("pagehide", saveSoon);
  window.addEventListener("beforeunload", (e) => {
    if (status === "running" || status === "pausing") {
      saveSoon();
      e.preventDefault();
      e.returnValue = "";
    }
  });
}

wire();
drawPlot();
refreshControls();
ready.then(async (eng) => {
  if (eng.info && eng.info.gpu_error) {
    message(`Training needs WebGPU: ${eng.info.gpu_error}`);
    document.body.dataset.pretrain = "no-gpu";
    return;
  }
  engine = eng;
  wireDeviceLoss();
  engine.worker.addEventListener("message", (ev) => {
    if (ev.data && ev.data.event === "train") {
      try { onEvent(JSON.parse(ev.data.json)); } catch (err) { console.error(err); }
    }
  });
  refreshControls();
  await listBaseModels();
  await describe();
  await checkSaved();
  document.body.dataset.pretrain = "ready";
}).catch(() => {});
