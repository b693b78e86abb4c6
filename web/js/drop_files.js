// Reading what a person drops or chooses: folders are walked (the entries must be taken inside
// the drop event itself; walking them is async). Shared by the Convert, Generate and Train pages.
// Each item comes back as {file, path}, path relative to what was dropped ("org-model/config.json").

// A FileSystemEntry's files into out as {file, path}: path relative to `top`'s folder when given
// (the train page's base folder: "config.json"), else to what was dropped ("org-model/config.json").
export async function walk(entry, out, top = null) {
  if (entry.isFile) {
    const file = await new Promise((res, rej) => entry.file(res, rej));
    const full = top ? entry.fullPath.slice(top.fullPath.length) : entry.fullPath;
    out.push({ file, path: full.replace(/^\/+/, "") });
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    for (;;) {
      const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
      if (!batch.length) break;
      for (const e of batch) await walk(e, out, top);
    }
  }
}

// DataTransfer -> Promise<[{file, path}]>. Call it synchronously from the drop handler.
export function takeDrop(dt) {
  const items = [];
  for (const item of dt.items || []) {
    if (item.kind !== "file") continue;
    const entry = item.webkitGetAsEntry ? item.webkitGetAsEntry() : null;
    items.push(entry ? { entry } : { file: item.getAsFile() });
  }
  if (!items.length) for (const file of dt.files || []) items.push({ file });
  return (async () => {
    const out = [];
    for (const it of items) {
      if (it.entry) await walk(it.entry, out);
      else if (it.file) out.push({ file: it.file, path: it.file.webkitRelativePath || it.file.name });
    }
    return out;
  })();
}

// A FileList from an <input type=file> -> [{file, path}].
export const fromInput = (fileList) =>
  [...fileList].map((file) => ({ file, path: file.webkitRelativePath || file.name }));
