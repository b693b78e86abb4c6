// One error surface for every page: one plain sentence (what happened, what to do) as the
// primary text, the raw details (a Python traceback from the Worker, a JS stack) folded in a
// <details> beneath it. Pages never put a traceback in front of a person.

// "Traceback (most recent call last): ... ValueError: the reason" -> "the reason".
// Python's exception line is the last line that starts with a dotted name ending in
// Error/Exception (or our GPUUnavailable, GPUOutOfMemory, GPUDeviceLost); anything else falls
// back to the last line.
export function plainError(err) {
  const text = String(err && err.message ? err.message : err);
  const lines = text.split("\n").map((l) => l.trim()).filter(Boolean);
  for (let i = lines.length - 1; i >= 0; i--) {
    const m = /^[\w.]*(?:Error|Exception|Unavailable|Interrupt|OutOfMemory|Lost): (.*)$/.exec(lines[i]);
    if (m) return m[1];
  }
  return lines.length ? lines[lines.length - 1] : text;
}

// The full text behind an error, when it holds more than the plain sentence shows.
export function errorDetails(err) {
  const text = String(err && err.message ? err.message : err || "");
  const stack = err && err.stack && !text.includes("Traceback") ? String(err.stack) : "";
  const full = stack && !stack.includes(text) ? `${text}\n${stack}` : stack || text;
  return full.trim() === plainError(err).trim() ? "" : full;
}

// "could not load x: the reason" -> "Could not load x: the reason." (one sentence).
export function sentence(text) {
  const t = String(text || "").trim();
  if (!t) return "";
  const s = t[0].toUpperCase() + t.slice(1);
  return /[.!?)]$/.test(s) ? s : `${s}.`;
}

// Show `lead` (a sentence, or a prefix such as "Could not load default") plus the error's
// plain reason in `el`; details go in a closed <details>. An empty lead and no err clears it.
export function showError(el, lead, err) {
  el.textContent = "";
  const reason = err === undefined || err === null ? "" : plainError(err);
  const text = sentence(lead && reason ? `${lead}: ${reason}` : lead || reason);
  el.hidden = !text;
  el.dataset.state = text ? "error" : "";
  if (!text) return;
  const p = document.createElement("p");
  p.className = "error-sentence";
  p.textContent = text;
  el.append(p);
  const details = err === undefined || err === null ? "" : errorDetails(err);
  if (details) {
    const box = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = "Details";
    const pre = document.createElement("pre");
    pre.textContent = details;
    box.append(summary, pre);
    el.append(box);
  }
}

export const clearError = (el) => showError(el, "");

// The Worker's {event: "gpu-lost", reason, message} as the start of a plain sentence.
export function deviceLostSentence(m) {
  const why = m && m.reason && m.reason !== "unknown" ? ` (${m.reason})` : "";
  return `The GPU device was lost${why}, as happens when a driver resets or a laptop switches GPUs`;
}
