"""The mambaweb HTTP server: pages, the pinned Pyodide, the packed engine, and model weights.

Routes
  /                     generate page (web/index.html)
  /pretrain, /convert   the other pages
  /static/...           web/ assets (JS, CSS)
  /pyodide/...          the pinned npm `pyodide` build from node_modules (never a CDN)
  /engine/manifest.json points at /engine/engine-<hash>.zip (py_engine + shaders)
  /api/models           JSON list of the models found in the configured folders and HF cache
  /weights/<model>/<file>  weight/config files, HTTP Range (206/416), GET and HEAD
"""
import os
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from server import model_catalog
from server.engine_pack import REPO, build_engine_pack

WEB = REPO / "web"
PYODIDE = REPO / "node_modules" / "pyodide"
DEFAULT_MODEL_DIRS = (REPO / "models",)
PAGES = {"": "index.html", "index.html": "index.html", "pretrain": "pretrain.html",
         "convert": "convert.html"}

# Pages and the engine boot must never be served stale during development; the engine zip
# itself is content-addressed and can be cached for good.
NO_CACHE = {"Cache-Control": "no-cache"}
IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}


def create_app(model_dirs=None, use_hf_cache: bool = True, extra_static=None) -> FastAPI:
    """extra_static: {url prefix: folder} mounted read-only (the bench mounts the npm peer
    engine there; the app itself needs none)."""
    model_dirs = [Path(d).resolve() for d in (model_dirs or DEFAULT_MODEL_DIRS)]
    app = FastAPI(title="mambaweb", docs_url="/api/docs", openapi_url="/api/openapi.json")
    catalog = model_catalog.ModelCatalog(model_dirs, use_hf_cache)
    pack = {"current": None}

    def engine_pack():
        # Rebuilt when a source file changes, so a running dev server serves fresh code.
        p = build_engine_pack()
        pack["current"] = p
        return p

    if not (PYODIDE / "pyodide.mjs").exists():
        raise RuntimeError(
            f"Pyodide is not installed at {PYODIDE}. Run `make run` (it runs `npm ci`) "
            "or `npm ci` in the repo root.")

    app.mount("/static", StaticFiles(directory=WEB), name="static")
    app.mount("/pyodide", StaticFiles(directory=PYODIDE), name="pyodide")
    for prefix, folder in (extra_static or {}).items():
        app.mount(prefix, StaticFiles(directory=folder), name=prefix.strip("/"))

    @app.get("/engine/manifest.json")
    def engine_manifest():
        p = engine_pack()
        return JSONResponse({"url": f"/engine/{p.filename}", "hash": p.digest,
                             "size": len(p.data)}, headers=NO_CACHE)

    @app.get("/engine/{name}")
    def engine_zip(name: str):
        p = pack["current"] or engine_pack()
        if name != p.filename:
            p = engine_pack()
        if name != p.filename:
            raise HTTPException(404, f"no engine build {name}; fetch /engine/manifest.json "
                                     "for the current one")
        return Response(p.data, media_type="application/zip", headers=IMMUTABLE)

    @app.get("/api/models")
    def api_models():
        return catalog.list_models()

    @app.api_route("/weights/{model}/{file_path:path}", methods=["GET", "HEAD"])
    def weights(model: str, file_path: str, request: Request):
        path = catalog.resolve_file(model, file_path)
        if path is None:
            raise HTTPException(404, f"no file {file_path!r} in model {model!r}; "
                                     "GET /api/models lists models and their files")
        # Starlette's FileResponse streams from disk and answers Range itself
        # (206 + Content-Range, 416 past the end, multipart for several ranges).
        return FileResponse(path, headers={"Accept-Ranges": "bytes", **NO_CACHE})

    @app.get("/{page}")
    @app.get("/")
    def page(page: str = ""):
        if page not in PAGES:
            raise HTTPException(404, f"no page {page!r}")
        return FileResponse(WEB / PAGES[page], headers=NO_CACHE)

    return app


def app_from_env() -> FastAPI:
    """uvicorn factory: `MAMBAWEB_MODEL_DIRS` is an os.pathsep-separated folder list."""
    dirs = os.environ.get("MAMBAWEB_MODEL_DIRS")
    return create_app([d for d in dirs.split(os.pathsep) if d] if dirs else None,
                      use_hf_cache=os.environ.get("MAMBAWEB_NO_HF_CACHE") != "1")
