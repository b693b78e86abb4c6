// The model card on the generate page: py_engine/app/model_card.py builds it from what is
// loaded; this file only lays it out as a definition list. Cleared when nothing is loaded.
const ROWS = [["name", "Name"], ["family", "Family"], ["schedule", "Layers"],
              ["parameters", "Parameters"], ["weights", "Weights"], ["gpu", "On the GPU"],
              ["tokenizer", "Tokenizer"],
              ["context", "Context"], ["source", "From"]];

export function renderCard(el, card) {
  el.textContent = "";
  if (!card) { el.hidden = true; delete el.dataset.name; return; }
  for (const [key, label] of ROWS) {
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.dataset.field = key;
    dd.textContent = card[key] ?? "–";
    el.append(dt, dd);
  }
  el.dataset.name = card.name;
  el.hidden = false;
}

export const clearCard = (el) => renderCard(el, null);
