// What the GPU's adapter offers through Dawn (npm `webgpu`'s dawn.node), with Dawn's default
// toggles and with its unsafe APIs allowed (what Chrome's --enable-unsafe-webgpu allows):
//
//   node tools/dawn/adapter_features.mjs tools/dawn/node_modules/webgpu
//
// One JSON line per toggle set: {toggles, features (sorted), info}. features is null where Dawn
// found no adapter (set VK_DRIVER_FILES as tools/dawn_engine.py's header says).
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const { create, globals } = await import(pathToFileURL(join(resolve(process.argv[2]), "index.js")).href);
Object.assign(globalThis, globals);
for (const toggles of [[], ["enable-dawn-features=allow_unsafe_apis"]]) {
  const adapter = await create(toggles).requestAdapter({ powerPreference: "high-performance" });
  console.log(JSON.stringify({
    toggles,
    features: adapter ? [...adapter.features].sort() : null,
    info: adapter ? { vendor: adapter.info.vendor, device: adapter.info.device } : null,
  }));
}
process.exit(0);
