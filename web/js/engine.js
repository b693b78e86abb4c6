// Page side of the engine: starts the dedicated module Worker and talks to it by message.
// `engine.run(code, args)` runs a Python snippet inside the Worker's Pyodide; the snippet
// sets `result` (JSON-able; bytes come back base64-encoded under {"__bytes__": ...}).

export function webgpuProblem() {
  // Plain-words diagnosis of why WebGPU is missing, before we even start the worker.
  if (!window.isSecureContext) {
    return "This page is not a secure origin, so the browser hides WebGPU. Open it as " +
      "http://localhost:PORT or http://127.0.0.1:PORT (or over https).";
  }
  if (!("gpu" in navigator)) {
    return "This browser has no WebGPU. Use Chrome or Edge 113 or newer; on Linux start " +
      "Chrome with --enable-unsafe-webgpu (and --enable-features=Vulkan), or enable " +
      "chrome://flags/#enable-unsafe-webgpu.";
  }
  return null;
}

export class Engine {
  constructor() {
    this.worker = new Worker("/static/js/worker.mjs", { type: "module" });
    this.pending = new Map();
    this.nextId = 1;
    this.onstatus = null;
    this.handlers = new Map();   // event name -> [fn]
    this.worker.onmessage = (ev) => {
      const m = ev.data;
      if (m.event === "status") { if (this.onstatus) this.onstatus(m); return; }
      if (m.event) { for (const fn of this.handlers.get(m.event) || []) fn(m); return; }
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      m.ok ? p.resolve(m.result) : p.reject(new Error(m.error));
    };
    this.worker.onerror = (ev) => {
      const err = new Error(`engine worker failed: ${ev.message || "could not start"}`);
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
  }
  call(msg) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, ...msg });
    });
  }
  boot() { return this.booted || (this.booted = this.call({ op: "boot" })); }
  run(code, args) { return this.call({ op: "run", code, args: args || {} }); }
  cancel() { return this.call({ op: "cancel" }); }
  on(name, fn) {
    if (!this.handlers.has(name)) this.handlers.set(name, []);
    this.handlers.get(name).push(fn);
  }
}
