// Shared page shell: boots the engine once per page and shows what it found.
import { Engine, webgpuProblem } from "/static/js/engine.js";
import { showError } from "/static/js/errors.js";

const fmtBytes = (n) => n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(1)} GiB`
  : `${(n / 2 ** 20).toFixed(0)} MiB`;

// The banner says one plain thing ("Ready · GPU: …", or that a CPU emulation will be slow);
// Python's version, boot time, limits and features sit behind a disclosure for whoever asks.
function renderStatus(el, info) {
  if (!el) return;
  el.innerHTML = "";
  if (info.gpu_error) {
    el.className = "engine-status error";
    const h = document.createElement("strong");
    h.textContent = "No WebGPU: ";
    el.append(h, document.createTextNode(info.gpu_error));
    return;
  }
  const a = info.adapter;
  el.className = "engine-status ok";
  const name = [a.vendor, a.architecture, a.description].filter(Boolean).join(" ") || "unknown adapter";
  const line = document.createElement("span");
  line.id = "engine-line";
  line.textContent = a.is_fallback ? "Ready · no GPU found, running on a CPU emulation — slow"
    : `Ready · GPU: ${name}`;
  const details = document.createElement("details");
  details.className = "engine-details";
  const summary = document.createElement("summary");
  summary.textContent = "Details";
  const body = document.createElement("p");
  body.textContent = `Adapter: ${name}${a.is_fallback ? " (a software fallback, SwiftShader)" : ""}` +
    ` · Python ${info.python} in the page, booted in ${Math.round(info.boot_ms)} ms` +
    ` · largest binding ${fmtBytes(a.limits.maxStorageBufferBindingSize)}` +
    ` · largest buffer ${fmtBytes(a.limits.maxBufferSize)}` +
    ` · ${a.limits.maxStorageBuffersPerShaderStage} storage buffers per shader stage` +
    ` · features: ${a.features.join(", ") || "none"}`;
  details.append(summary, body);
  el.append(line, details);
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
    if (el) {
      el.className = "engine-status error";
      showError(el, "The engine failed to start (reload the page to try again)", err);
    }
    document.body.dataset.engine = "failed";
    throw err;
  }
}
