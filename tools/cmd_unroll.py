"""`mambaweb unroll`: a virtual-layer checkpoint (each shared layer stored once, the schedule in
config.json's mambaweb_virtual_layers) -> an HF folder with one layer per logical layer, which
transformers loads (it has no layer sharing: each use of a shared layer becomes a copy).
Bidirectional models are refused (transformers has no class for them)."""
import shutil
import sys
from pathlib import Path


def register(subparsers):
    p = subparsers.add_parser(
        "unroll", help="copy each use of a shared (virtual) layer into its own layer, for "
                       "transformers",
        description="Write SRC (a virtual-layer HF folder) as DST with one physical layer per "
                    "logical layer; tokenizer and other files are copied.")
    p.add_argument("src", help="HF folder whose config.json has mambaweb_virtual_layers")
    p.add_argument("dst", help="output folder")
    p.add_argument("--dtype", choices=("f32", "f16", "bf16"), default="f32")
    p.set_defaults(func=run)


def _tensors(folder):
    """{name: float32 numpy array} of every *.safetensors file in `folder` (any dtype)."""
    from safetensors import safe_open
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for name in st.keys():
                out[name] = st.get_tensor(name).float().numpy()
    return out


def run(args):
    import json

    from py_engine.io.layouts import internal_name
    from py_engine.io.unroll import unrolled
    from py_engine.models.config import MambaConfig
    from tools import convert_host

    src, dst = Path(args.src), Path(args.dst)
    try:
        cfg_file = src / "config.json"
        if not cfg_file.is_file():
            raise ValueError(f"{src}: no config.json here")
        cfg = MambaConfig.from_hf_dict(json.loads(cfg_file.read_text(encoding="utf-8")),
                                       str(cfg_file))
        if not cfg.virtual_layers:
            raise ValueError(f"{cfg_file} has no mambaweb_virtual_layers: every layer already "
                             "has its own weights, nothing to unroll")
        if dst.exists() and any(dst.iterdir()):
            raise ValueError(f"{dst} exists and is not empty; choose a new folder")
        cfg2, names = unrolled(cfg)
        raw = {internal_name(n, cfg): a for n, a in _tensors(src).items()}
        missing = sorted(set(names.values()) - set(raw))
        if missing:
            raise ValueError(f"{src}: tensors missing for the config: {', '.join(missing[:5])}")
        files = convert_host.write_hf(dst, cfg2, {n: raw[s] for n, s in names.items()},
                                      convert_host.ST_DTYPE[args.dtype])
        for f in src.iterdir():
            if f.is_file() and f.name != "config.json" and not f.name.endswith(
                    (".safetensors", ".safetensors.index.json")):
                shutil.copy2(f, dst / f.name)
    except (ValueError, OSError) as e:
        print(f"mambaweb unroll: {e}", file=sys.stderr)
        return 2
    print(f"unrolled {src}: {len(cfg.virtual_layers)} logical layers over "
          f"{cfg.num_hidden_layers} physical -> {cfg2.num_hidden_layers} layers in {dst} "
          f"({', '.join(files)}); transformers loads it, each shared layer copied per use")
    return 0
