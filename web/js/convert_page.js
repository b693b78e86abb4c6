// The convert page: collects dropped files, lets Python (py_engine.io.convert_plan) read their
// headers and plan the conversion, and has the Worker execute the plan over the Files
// (worker.mjs, "convert page" section). Nothing leaves the tab; the result is a download.
import { bootShell } from "/static/js/shell.js";
import { takeDrop } from "/static/js/drop_files.js";

const PLAN_PY = `
from py_engine.io import convert_plan
result = await convert_plan.handle(args)
`;
const DTYPES = {
  hf: [["keep", "keep the source's"], ["f32", "f32"], ["f16", "f16"], ["bf16", "bf16"]],
  mbjs: [["f32", "f32 (MBJS v2)"], ["f16", "f16 (MBJS v3)"]],
};

const $ = (id) => document.getElementById(id);
const fmtMB = (n) => n < 1e3 ? `${n} bytes` : n < 1e6 ? `${(n / 1e3).toFixed(1)} kB`
  : `${(n / 1e6).toFixed(n < 1e8 ? 1 : 0)} MB`;
const ready = bootShell();
ready.catch(() => {});

let files = [];          // [{id, path, size}] registered in the Worker
let source = null;       // what Python found (convert_plan.Source.describe())
let urls = [];           // object URLs of the last result
let busy = false;

function show(el, on) { el.hidden = !on; }

function message(text, kind) {
  const el = $("message");
  el.textContent = text || "";
  el.className = `convert-message ${kind || "error"}`;
  show(el, !!text);
  document.body.dataset.convert = text ? (kind === "info" ? "info" : "error") : document.body.dataset.convert;
}

function fillDtypes() {
  const sel = $("dtype");
  const keep = sel.value;
  sel.innerHTML = "";
  for (const [value, label] of DTYPES[$("target").value]) sel.add(new Option(label, value));
  if ([...sel.options].some((o) => o.value === keep)) sel.value = keep;
  show($("drop-head-label"), $("target").value === "mbjs" && source && !source.tied);
  show($("eps-label"), !!source && source.kind === "mbjs");
  show($("afloor-label"), !!source && source.kind === "mbjs" && source.model_type === "mamba3");
}

// --- collecting what was dropped: web/js/drop_files.js ---------------------------
async function accept(list) {
  if (busy) { message("A conversion is running: wait for it, or cancel it first."); return; }
  const engine = await ready.catch(() => null);
  if (!engine) { message("The engine did not start (see above), so nothing can be converted."); return; }
  source = null;
  $("options").disabled = true;
  show($("source"), false);
  show($("result"), false);
  message("");
  await engine.call({ op: "convertForgetFiles" });
  files = await engine.call({ op: "convertPutFiles", files: list });
  $("heads").value = "";            // a setting of the previous file does not carry over
  show($("hint-box"), false);
  await inspect(engine);
}

// What the file does not store and the person gave (an MBJS file's attention head count).
function hintOptions() {
  return { attention_heads: $("heads").value };
}

// Python reads the registered files' headers; a setting the file lacks (res.needs) is asked
// for in the box above the summary, and "Read the file again" comes back here with it.
async function inspect(engine) {
  document.body.dataset.convert = "inspecting";
  const res = await engine.run(PLAN_PY, { action: "inspect", files, options: hintOptions() });
  if (res.error) {
    message(res.error);
    if (res.needs === "attention_heads") {
      show($("hint-box"), true);
      $("heads").focus();
      document.body.dataset.convert = "needs-hint";
    }
    return;
  }
  message("");
  source = res.source;
  const el = $("source");
  el.innerHTML = "";
  const p = document.createElement("div");
  p.textContent = source.summary;
  el.append(p);
  for (const n of source.notes || []) el.append(Object.assign(document.createElement("div"), { className: "muted", textContent: n }));
  if (source.ignored && source.ignored.length) {
    el.append(Object.assign(document.createElement("div"), {
      className: "muted", textContent: `ignored: ${source.ignored.join(", ")}` }));
  }
  show(el, true);
  $("target").value = source.propose;      // Python's choice: a target this model can become
  fillDtypes();
  $("options").disabled = false;
  document.body.dataset.convert = "ready";
}

function saveAs(blob, name) {
  const url = URL.createObjectURL(blob);
  urls.push(url);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  return url;
}

async function convert() {
  if (!source || busy) return;
  const engine = await ready;
  busy = true;
  $("options").disabled = true;
  show($("cancel"), true);
  $("cancel").disabled = false;
  show($("result"), false);
  message("");
  document.body.dataset.convert = "converting";
  for (const u of urls) URL.revokeObjectURL(u);
  urls = [];
  const t0 = performance.now();
  try {
    const req = { action: "plan", files, target: $("target").value, dtype: $("dtype").value,
                  options: { drop_untied_head: $("drop-head").checked, layer_norm_epsilon: $("eps").value,
                             A_floor: $("afloor").value, ...hintOptions() } };
    const res = await engine.run(PLAN_PY, req);
    if (res.error) { message(res.error); return; }
    const plan = res.plan;
    $("progress").value = 0;
    $("progress-text").textContent = `0 of ${fmtMB(plan.total)}`;
    show($("progress-box"), true);
    const out = await engine.call({ op: "convertExecute", plan });
    const secs = (performance.now() - t0) / 1000;
    $("progress").value = 1;
    $("progress-text").textContent = `${fmtMB(plan.total)} in ${secs.toFixed(1)} s ` +
      `(${(plan.total / 1e6 / Math.max(secs, 1e-3)).toFixed(0)} MB/s)`;
    const main = $("download-main");
    main.href = saveAs(out.download.blob, out.download.name);
    main.download = out.download.name;
    main.textContent = `${out.download.name} (${fmtMB(out.download.blob.size)})`;
    $("result-summary").textContent = plan.summary;
    const notes = $("result-notes");
    notes.innerHTML = "";
    for (const n of plan.notes) notes.append(Object.assign(document.createElement("li"), { textContent: n }));
    const list = $("downloads");
    list.innerHTML = "";
    for (const o of out.outputs) {
      const url = URL.createObjectURL(o.blob);
      urls.push(url);
      const a = Object.assign(document.createElement("a"), { href: url, download: o.name, textContent: o.name });
      const li = document.createElement("li");
      li.append(a, document.createTextNode(` (${fmtMB(o.size)})`));
      list.append(li);
    }
    show($("result"), true);
    document.body.dataset.convert = "done";
  } catch (err) {
    message(`Conversion failed: ${err.message}`);
  } finally {
    busy = false;
    $("options").disabled = !source;
    show($("cancel"), false);
  }
}

// --- wiring -------------------------------------------------------------------------
async function readAgain() {
  if (busy || !files.length) return;
  const engine = await ready.catch(() => null);
  if (engine) await inspect(engine);
}
$("read-again").addEventListener("click", readAgain);
$("heads").addEventListener("keydown", (ev) => { if (ev.key === "Enter") readAgain(); });

const zone = $("dropzone");
for (const type of ["dragenter", "dragover"]) {
  document.addEventListener(type, (ev) => { ev.preventDefault(); zone.classList.add("over"); });
}
document.addEventListener("dragleave", (ev) => { if (!ev.relatedTarget) zone.classList.remove("over"); });
document.addEventListener("drop", (ev) => {      // anywhere on the page: never navigate away
  ev.preventDefault();
  zone.classList.remove("over");
  takeDrop(ev.dataTransfer).then(accept).catch((err) => message(`Could not read the drop: ${err.message}`));
});
$("pick-folder").onclick = () => $("folder-input").click();
$("pick-files").onclick = () => $("file-input").click();
for (const id of ["folder-input", "file-input"]) {
  $(id).addEventListener("change", (ev) => {
    const list = [...ev.target.files].map((file) => ({ file, path: file.webkitRelativePath || file.name }));
    ev.target.value = "";
    accept(list).catch((err) => message(`Could not read the files: ${err.message}`));
  });
}
$("target").onchange = fillDtypes;
$("convert").onclick = () => convert();
$("cancel").onclick = () => { $("cancel").disabled = true; ready.then((e) => e.call({ op: "convertCancel" })); };
ready.then((engine) => {
  engine.on("convert-progress", (m) => {
    $("progress").value = m.total ? m.done / m.total : 0;
    $("progress-text").textContent = `${fmtMB(m.done)} of ${fmtMB(m.total)} · ${m.label}`;
  });
}).catch(() => {});
fillDtypes();
