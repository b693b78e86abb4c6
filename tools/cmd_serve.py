"""`mambaweb serve`: run the server (pages, Pyodide, engine, weights) with uvicorn."""
import os


def register(sub):
    p = sub.add_parser("serve", help="start the web server (pages + engine + weights)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; WebGPU needs a secure origin, "
                        "so open it as http://localhost or http://127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--models", action="append", default=None, metavar="DIR",
                   help="folder of model folders to serve (repeatable; default: models/)")
    p.add_argument("--no-hf-cache", action="store_true",
                   help="do not list models from the local HuggingFace cache")
    p.set_defaults(func=run)


def run(args):
    import uvicorn
    if args.models:
        os.environ["MAMBAWEB_MODEL_DIRS"] = os.pathsep.join(args.models)
    if args.no_hf_cache:
        os.environ["MAMBAWEB_NO_HF_CACHE"] = "1"
    print(f"mambaweb: serving on http://{'localhost' if args.host in ('127.0.0.1', 'localhost') else args.host}:{args.port}/", flush=True)
    uvicorn.run("server.app:app_from_env", factory=True, host=args.host, port=args.port,
                log_level="warning")
    return 0
