"""The mambaweb HTTP server: pages, the pinned Pyodide, the packed engine, and model weights.

Routes
  /                     generate page (web/index.html)
  /pretrain, /convert   the other pages (/train is /pretrain: the page the nav calls Train)
  /favicon.ico          web/favicon.ico (pages link web/favicon.svg)
  /static/...           web/ assets (JS, CSS)
  /pyodide/...          the pinned npm `pyodide` build from node_modules (never a CDN)
  /engine/manifest.json points at /engine/engine-<hash>.zip (py_engine + shaders)
  /api/models           JSON list of the models found in the configured folders and HF cache
  /api/hub              {"endpoint"}: where the generate page opens models by name (HF_ENDPOINT)
  /weights/<model>/<file>  weight/config files, HTTP Range (206/416), GET and HEAD

Files (weights, /static, /pyodide) answer Range requests as server/byte_ranges.py documents
(RFC 9110); only GET and HEAD are allowed on them and on the pages; no directory is listed;
no CORS header is sent unless create_app(cors_origins=[...]) (`mambaweb serve --cors-origin`)
names the origins that may read.
"""
import os
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers
from starlette.staticfiles import NotModifiedResponse

from server import byte_ranges, model_catalog
from server.engine_pack import REPO, build_engine_pack

WEB = REPO / "web"
PYODIDE = REPO / "node_modules" / "pyodide"
DEFAULT_MODEL_DIRS = (REPO / "models",)
PAGES = {"": "index.html", "index.html": "index.html", "pretrain": "pretrain.html",
         "train": "pretrain.html", "convert": "convert.html"}   # /train: the page's nav name

# Pages and the engine boot must never be served stale during development; the engine zip
# itself is content-addressed and can be cached for good.
NO_CACHE = {"Cache-Control": "no-cache"}
IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}


class RangeStaticFiles(StaticFiles):
    """StaticFiles whose files answer Range as byte_ranges does (not Starlette's parser)."""

    def file_response(self, full_path, stat_result, scope, status_code=200):
        request_headers = Headers(scope=scope)
        response = byte_ranges.file_response(full_path, request_headers, scope["method"],
                                             stat=stat_result)
        if status_code == 200 and self.is_not_modified(response.headers, request_headers):
            return NotModifiedResponse(response.headers)
        return response


def create_app(model_dirs=None, use_hf_cache: bool = True, extra_static=None,
               cors_origins=None) -> FastAPI:
    """extra_static: {url prefix: folder} mounted read-only (the bench mounts the npm peer
    engine there; the app itself needs none). cors_origins: origins allowed to read
    cross-origin (GET/HEAD); none by default, so no CORS header is sent."""
    model_dirs = [Path(d).resolve() for d in (model_dirs or DEFAULT_MODEL_DIRS)]
    # redirect_slashes off: an odd path gets its 404 here, not a redirect to another odd path
    app = FastAPI(title="mambaweb", docs_url="/api/docs", openapi_url="/api/openapi.json",
                  redirect_slashes=False)
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

    if cors_origins:
        from starlette.middleware.cors import CORSMiddleware
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins),
                           allow_methods=["GET", "HEAD"], allow_headers=["Range", "If-Range"],
                           expose_headers=["Content-Range", "Content-Length", "Accept-Ranges",
                                           "ETag"])
    app.mount("/static", RangeStaticFiles(directory=WEB), name="static")
    app.mount("/pyodide", RangeStaticFiles(directory=PYODIDE), name="pyodide")
    for prefix, folder in (extra_static or {}).items():
        app.mount(prefix, RangeStaticFiles(directory=folder), name=prefix.strip("/"))

    @app.api_route("/engine/manifest.json", methods=["GET", "HEAD"])
    def engine_manifest():
        p = engine_pack()
        return JSONResponse({"url": f"/engine/{p.filename}", "hash": p.digest,
                             "size": len(p.data)}, headers=NO_CACHE)

    @app.api_route("/engine/{name}", methods=["GET", "HEAD"])
    def engine_zip(name: str):
        p = pack["current"] or engine_pack()
        if name != p.filename:
            p = engine_pack()
        if name != p.filename:
            raise HTTPException(404, f"no engine build {name}; fetch /engine/manifest.json "
                                     "for the current one")
        return Response(p.data, media_type="application/zip", headers=IMMUTABLE)

    @app.api_route("/api/models", methods=["GET", "HEAD"])
    def api_models():
        return catalog.list_models()

    @app.api_route("/api/hub", methods=["GET", "HEAD"])
    def api_hub():
        # the Hub-layout endpoint the generate page opens models by name from (huggingface_hub's
        # HF_ENDPOINT convention: a mirror or a local server); read per request
        return JSONResponse({"endpoint": os.environ.get("HF_ENDPOINT", "").strip().rstrip("/")
                             or "https://huggingface.co"}, headers=NO_CACHE)

    @app.api_route("/weights/{model}/{file_path:path}", methods=["GET", "HEAD"])
    def weights(model: str, file_path: str, request: Request):
        path = catalog.resolve_file(model, file_path)
        if path is None:
            raise HTTPException(404, f"no file {file_path!r} in model {model!r}; "
                                     "GET /api/models lists models and their files")
        # streams from disk; Range, If-Range, 206/416 and multipart as byte_ranges says
        return byte_ranges.file_response(path, request.headers, request.method,
                                         headers=NO_CACHE)

    @app.api_route("/favicon.ico", methods=["GET", "HEAD"])
    def favicon(request: Request):
        # browsers ask for it whatever the page links; answering stops the 404 noise
        return byte_ranges.file_response(WEB / "favicon.ico", request.headers, request.method,
                                         headers=NO_CACHE)

    @app.api_route("/{page}", methods=["GET", "HEAD"])
    @app.api_route("/", methods=["GET", "HEAD"])
    def page(request: Request, page: str = ""):
        if page not in PAGES:
            raise HTTPException(404, f"no page {page!r}")
        return byte_ranges.file_response(WEB / PAGES[page], request.headers, request.method,
                                         headers=NO_CACHE)

    return app


def app_from_env() -> FastAPI:
    """uvicorn factory: `MAMBAWEB_MODEL_DIRS` is an os.pathsep-separated folder list,
    `MAMBAWEB_CORS_ORIGINS` a comma-separated origin list (none: no CORS headers)."""
    dirs = os.environ.get("MAMBAWEB_MODEL_DIRS")
    cors = os.environ.get("MAMBAWEB_CORS_ORIGINS", "")
    return create_app([d for d in dirs.split(os.pathsep) if d] if dirs else None,
                      use_hf_cache=os.environ.get("MAMBAWEB_NO_HF_CACHE") != "1",
                      cors_origins=[o for o in cors.split(",") if o] or None)
