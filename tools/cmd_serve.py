"""`mambaweb serve`: run the server (pages, Pyodide, engine, weights) with uvicorn."""
import os
import sys

LOOPBACK = ("127.0.0.1", "localhost", "::1")


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
    p.add_argument("--cors-origin", action="append", default=None, metavar="ORIGIN",
                   help="let pages from ORIGIN (e.g. https://example.org) read the weights "
                        "cross-origin (repeatable; default: no CORS headers)")
    p.set_defaults(func=run)


def exposure_warning(host):
    """The warning printed when the server binds beyond this machine, or None."""
    if host in LOOPBACK:
        return None
    return (f"mambaweb serve: warning: binding {host} serves your model folders and HF cache "
            "to every machine that can reach this one, without authentication; bind "
            "127.0.0.1 (the default) unless that is what you want")


def run(args):
    import uvicorn
    if args.models:
        os.environ["MAMBAWEB_MODEL_DIRS"] = os.pathsep.join(args.models)
    if args.no_hf_cache:
        os.environ["MAMBAWEB_NO_HF_CACHE"] = "1"
    if args.cors_origin:
        os.environ["MAMBAWEB_CORS_ORIGINS"] = ",".join(args.cors_origin)
    warning = exposure_warning(args.host)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    print(f"mambaweb: serving on http://{'localhost' if args.host in ('127.0.0.1', 'localhost') else args.host}:{args.port}/", flush=True)
    uvicorn.run("server.app:app_from_env", factory=True, host=args.host, port=args.port,
                log_level="warning")
    return 0
