// The generate page's model files from this computer (a chosen or dropped folder, loose files,
// or one MBJS .bin): they go to the Worker's file registry and are read there (File.slice ->
// GPU); nothing is uploaded. An MBJS file is first converted in the tab by the Convert page's
// own path: py_engine.io.convert_plan plans HF files, the Worker's convertExecute writes them
// into Blobs, and those Blobs are registered and loaded like a folder.
const PLAN_PY = `
from py_engine.io import convert_plan
result = await convert_plan.handle(args)
`;
let registered = [];     // registry ids of the files behind the last load from this computer

// [{file, path}] with paths like "folder/config.json" -> paths relative to that folder.
function relative(list) {
  const tops = new Set(list.map((x) => (x.path.includes("/") ? x.path.split("/")[0] : "")));
  const strip = tops.size === 1 && !tops.has("");
  return list.map(({ file, path }) => ({ file, path: strip ? path.split("/").slice(1).join("/") : path }));
}


// -> {files: {relative path: registry id}, name, origin} for generate_session.load_files.
// `progress(text)` is told what happens (a conversion can take a while on a big file).
export async function registerModelFiles(engine, list, progress) {
  if (!list.length) throw new Error("no files were chosen");
  const first = list[0].path.split("/");
  const folder = first.length > 1 ? first[0] : null;
  const rel = relative(list);
  await engine.call({ op: "convertForgetFiles", ids: registered });
  registered = [];
  const hasConfig = rel.some((x) => x.path === "config.json");
  // no config.json but a .bin: an MBJS checkpoint (the planner checks its magic and says
  // in one sentence what else it might be)
  const mbjs = hasConfig ? [] : rel.filter((x) => /\.bin$/i.test(x.path));
  if (!mbjs.length) {
    const ids = await engine.call({ op: "convertPutFiles", files: rel });
    registered = ids.map((f) => f.id);
    const name = folder || (rel.length === 1 ? rel[0].file.name : "chosen files");
    return { files: Object.fromEntries(ids.map((f) => [f.path, f.id])), name,
             origin: { kind: "folder", name } };
  }
  if (mbjs.length > 1) {
    throw new Error(`choose one MBJS file at a time, or a folder with its config.json (found ${mbjs.map((x) => x.path).join(", ")})`);
  }
  const src = mbjs[0];
  progress(`converting ${src.file.name} (MBJS) to HF safetensors in this tab…`);
  const ins = await engine.call({ op: "convertPutFiles", files: [src] });
  registered = ins.map((f) => f.id);
  const res = await engine.run(PLAN_PY, { action: "plan", files: ins, target: "hf", dtype: "keep" });
  if (res.error) throw new Error(res.error);
  const out = await engine.call({ op: "convertExecute", plan: res.plan });
  // the HF files the plan made, plus a tokenizer.json dropped beside the .bin (MBJS has none)
  const made = out.outputs.map((o) => ({ file: new File([o.blob], o.name), path: o.name }));
  const tok = rel.find((x) => x.path === "tokenizer.json");
  if (tok) made.push(tok);
  const ids = await engine.call({ op: "convertPutFiles", files: made });
  registered = registered.concat(ids.map((f) => f.id));
  return { files: Object.fromEntries(ids.map((f) => [f.path, f.id])), name: src.file.name,
           origin: { kind: "mbjs", name: src.file.name } };
}
