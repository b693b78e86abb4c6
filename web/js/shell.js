// Shared page shell: boots the engine once per page and shows what it found.
import { Engine, webgpuProblem } from "/static/js/engine.js";

const fmtBytes = (n) => n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(1)} GiB`
  : `${(n / 2 ** 20).toFixed(0)} MiB`;

function renderStatus(el, info) {
  if (!el) return;
  if (info.gpu_error) {
    el.className = "engine-status error";
    el.innerHTML = "";
    const h = document.createElement("strong");
    h.textContent = "No WebGPU: ";
    el.append(h, document.createTextNode(info.gpu_error));
    return;
  }
  const a = info.adapter;
  el.className = "engine-status ok";
  el.textContent = `Engine ready (Python ${info.python}, boot ${Math.round(info.boot_ms)} ms) · ` +
    `GPU: ${[a.vendor, a.architecture, a.description].filter(Boolean).join(" ") || "unknown"}${a.is_fallback ? " (software fallback)" : ""}` +
    ` · max binding ${fmtBytes(a.limits.maxStorageBufferBindingSize)}` +
    ` · max buffer ${fmtBytes(a.limits.maxBufferSize)}` +
    ` · ${a.limits.maxStorageBuffersPerShaderStage} storage buffers/stage` +
    ` · features: ${a.features.join(", ") || "none"}`;
}

export async function bootShell() {
  const el = document.getElementById("engine-status");
  const engine = new Engine();
  window.engine = engine;
  engine.onstatus = (m) => { if (el && !engine.info) el.textContent = `Engine: ${m.text}…`; };
  const problem = webgpuProblem();
  try {
    const info = await engine.boot();
    if (problem && !info.gpu_error) info.gpu_error = problem;
    engine.info = info;
    renderStatus(el, info);
    window.engineInfo = info;
    document.body.dataset.engine = info.gpu_error ? "no-gpu" : "ready";
    return engine;
  } catch (err) {
    if (el) { el.className = "engine-status error"; el.textContent = `Engine failed to start: ${err.message}`; }
    document.body.dataset.engine = "failed";
    throw err;
  }
}
