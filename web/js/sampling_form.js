// The generate page's sampling fields: checked before a run (a bad number is refused with a
// sentence naming the field), the fields greedy ignores are disabled, and the seed is drawn
// fresh for each run unless the person locks it.
const $ = (id) => document.getElementById(id);

// [id, label, kind, min, max]: the number each field must hold. minOpen: strictly above min.
const FIELDS = [
  ["max-new", "New tokens", "int", 1, 4096],
  ["temperature", "Temperature", "float", 0, 100, { minOpen: true, sampled: true }],
  ["top-k", "Top-k", "int", 0, 1e9, { sampled: true, note: "0 keeps every token" }],
  ["top-p", "Top-p", "float", 0, 1, { minOpen: true, sampled: true }],
  ["rep-penalty", "Repetition penalty", "float", 1, 100, { note: "1 means none" }],
  ["seed", "Seed", "int", 0, 2 ** 32 - 1, { sampled: true }],
];
const SAMPLED_ONLY = ["temperature", "top-k", "top-p", "seed", "seed-lock"];

function rangeWords(kind, min, max, minOpen) {
  const what = kind === "int" ? "a whole number" : "a number";
  return minOpen ? `${what} above ${min} and at most ${max}` : `${what} from ${min} to ${max}`;
}

function check([id, label, kind, min, max, opt = {}]) {
  const el = $(id);
  const raw = el.value.trim();
  const v = Number(raw);
  const bad = el.validity.badInput || raw === "" || !Number.isFinite(v) ||
    (kind === "int" && !Number.isInteger(v)) || (opt.minOpen ? v <= min : v < min) || v > max;
  if (!bad) return { value: v };
  const found = el.validity.badInput || raw === "" ? "it is empty or not a number" : `found ${raw}`;
  return {
    error: {
      field: el,
      text: `${label} must be ${rangeWords(kind, min, max, opt.minOpen)}${opt.note ? ` (${opt.note})` : ""}, ` +
        `but ${found}: correct it and try again`,
    },
  };
}

// {maxNew, sampling} for generate_session.generate, or {error: {text, field}}.
export function readSampling() {
  const greedy = $("greedy").checked;
  if (!greedy && !$("seed-lock").checked) $("seed").value = String(Math.floor(Math.random() * 2 ** 31));
  const values = {};
  for (const f of FIELDS) {
    if (greedy && f[5] && f[5].sampled) continue;     // greedy ignores them: no need to refuse
    const r = check(f);
    if (r.error) return { error: r.error };
    values[f[0]] = r.value;
  }
  return {
    maxNew: values["max-new"],
    sampling: greedy ? { greedy: true, repetition_penalty: values["rep-penalty"] }
      : { greedy: false, temperature: values.temperature, top_k: values["top-k"], top_p: values["top-p"],
          repetition_penalty: values["rep-penalty"], seed: values.seed },
  };
}

function applyGreedy() {
  const greedy = $("greedy").checked;
  for (const id of SAMPLED_ONLY) {
    $(id).disabled = greedy;
    $(id).closest("label").classList.toggle("inactive", greedy);
  }
}

$("greedy").addEventListener("change", applyGreedy);
applyGreedy();
