"""A local server with the Hugging Face Hub's URL layout, for tests of models opened by name.

  GET|HEAD /<org>/<name>/resolve/<revision>/<file>     small files answered here; weight files
                                                       (*.safetensors, *.bin, *.gguf) get a 302
                                                       to /cdn/... on `cdn_base` (another origin,
                                                       as the Hub hands them to its CDN)
  GET|HEAD /cdn/<org>/<name>/<file>                    the bytes, with HTTP Range
  GET      /api/models/<org>/<name>/revision/<rev>     {"id", "sha", "gated", "siblings": [...]}
                                                       (api=False: 404 without an error code, as
                                                       a plain mirror without the Hub's API)
Errors as the Hub gives them: a missing repo 404 + X-Error-Code: RepoNotFound, an unknown
revision 404 + RevisionNotFound, a missing file 404 + EntryNotFound, a gated repo's files 401 +
GatedRepo (its API info stays public, as on the Hub), and any repo of `private-org` 401 +
RepoNotFound (the Hub's answer to an anonymous client for a private or missing repo). CORS is open (`*`), Range allowed,
X-Error-Code exposed, like huggingface.co.

The repos (`make_repos`), all from committed fixtures:
  mambaweb-test/bytes-tiny      tests/fixtures/models/bytes-tiny-stdlib (tokenizer.json, byte
                                vocab); revisions main and v1
  mambaweb-test/mamba2-sharded  mamba2-g2-untied re-saved as 2 safetensors shards + index
  mambaweb-test/mamba2-ssm-bin  mamba2-g1-tied-ssm-bin: config.json + pytorch_model.bin only
  mambaweb-test/gguf-only       a README and a .gguf file, no config.json
  mambaweb-test/llama           a config.json with model_type "llama" + safetensors
  gated-org/secret              bytes-tiny-stdlib behind a gate (401)
"""
import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse
from starlette.routing import Route

from server import byte_ranges

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "models"
GATED = {"gated-org/secret"}
REVISIONS = {"main", "v1"}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")


def make_repos(root):
    """{repo_id: folder} under `root` (sharded and odd repos are written there)."""
    from tools import convert_host
    root = Path(root)
    repos = {"mambaweb-test/bytes-tiny": FIXTURES / "bytes-tiny-stdlib",
             "mambaweb-test/mamba2-ssm-bin": FIXTURES / "mamba2-g1-tied-ssm-bin",
             "gated-org/secret": FIXTURES / "bytes-tiny-stdlib"}
    sharded = root / "mamba2-sharded"
    convert_host.convert(FIXTURES / "mamba2-g2-untied", sharded, shards=2, log=lambda *a: None)
    repos["mambaweb-test/mamba2-sharded"] = sharded
    gguf = root / "gguf-only"
    gguf.mkdir()
    (gguf / "README.md").write_text("a quantised model\n")
    (gguf / "tiny-Q4_K_M.gguf").write_bytes(b"GGUF" + bytes(60))
    repos["mambaweb-test/gguf-only"] = gguf
    llama = root / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps(
        {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64,
         "num_hidden_layers": 2, "vocab_size": 256}))
    shutil.copy(FIXTURES / "bytes-tiny-stdlib" / "model.safetensors", llama / "model.safetensors")
    repos["mambaweb-test/llama"] = llama
    return repos


def _error(status, code, text):
    return PlainTextResponse(text, status, headers={"X-Error-Code": code})


def make_hub_app(repos, cdn_base="", api=True):
    """The Starlette app; `cdn_base` is the origin the 302s point at ("" = this one)."""
    repos = {k: Path(v) for k, v in repos.items()}

    def repo_or_error(org, name, rev):
        repo_id = f"{org}/{name}"
        if org == "private-org":     # what huggingface.co tells an anonymous client
            return None, _error(401, "RepoNotFound", f"Repository Not Found for url: {repo_id}")
        if repo_id not in repos:
            return None, _error(404, "RepoNotFound", f"Repository Not Found for url: {repo_id}")
        if rev not in REVISIONS:
            return None, _error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return repo_id, None

    def file_in(repo_id, path):
        folder = repos[repo_id]
        target = (folder / path).resolve()
        if folder.resolve() not in target.parents or not target.is_file():
            return None
        return target

    async def resolve(request):
        p = request.path_params
        repo_id, err = repo_or_error(p["org"], p["name"], p["rev"])
        if err:
            return err
        if repo_id in GATED:
            return _error(401, "GatedRepo", f"Access to model {repo_id} is restricted. You must "
                                            "have access to it and be authenticated to access it.")
        if file_in(repo_id, p["path"]) is None:
            return _error(404, "EntryNotFound", f"{p['path']} does not exist on {p['rev']}")
        if p["path"].endswith(WEIGHT_SUFFIXES):
            return RedirectResponse(f"{cdn_base}/cdn/{repo_id}/{p['path']}", 302)
        return byte_ranges.file_response(file_in(repo_id, p["path"]), request.headers,
                                         request.method)

    async def cdn(request):
        p = request.path_params
        repo_id = f"{p['org']}/{p['name']}"
        target = file_in(repo_id, p["path"]) if repo_id in repos else None
        if target is None:
            return PlainTextResponse("not found", 404)
        return byte_ranges.file_response(target, request.headers, request.method)

    async def model_info(request):
        p = request.path_params
        if not api:
            return PlainTextResponse("Not Found", 404)
        repo_id, err = repo_or_error(p["org"], p["name"], p["rev"])
        if err:
            return err
        folder = repos[repo_id]
        siblings = [{"rfilename": f.name} for f in sorted(folder.iterdir()) if f.is_file()]
        return JSONResponse({"id": repo_id, "sha": "0" * 40, "siblings": siblings,
                             "gated": "manual" if repo_id in GATED else False})

    routes = [Route("/api/models/{org}/{name}/revision/{rev}", model_info, methods=["GET"]),
              Route("/{org}/{name}/resolve/{rev}/{path:path}", resolve, methods=["GET", "HEAD"]),
              Route("/cdn/{org}/{name}/{path:path}", cdn, methods=["GET", "HEAD"])]
    cors = Middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "HEAD"],
                      allow_headers=["Range"],
                      expose_headers=["Content-Range", "Content-Length", "Accept-Ranges",
                                      "ETag", "X-Error-Code"])
    return Starlette(routes=routes, middleware=[cors])


class HubServer:
    """The app on a free port; weight files redirect to the same server under the name
    `localhost` (another origin than 127.0.0.1, as the Hub's CDN is)."""

    def __init__(self, repos, api=True):
        from tools.headless import LiveServer
        self.live = LiveServer(make_hub_app(repos, "", api))
        # the CDN base must name the port, which LiveServer picked: rebuild the app with it
        self.live.server.config.app = make_hub_app(repos, f"http://localhost:{self.live.port}",
                                                   api)
        self.url = self.live.url

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        self.live.__exit__(*exc)


class UrllibHTTP:
    """py_engine.io.hub's http interface on the host (urllib follows the 302s, Range kept)."""

    async def request(self, url, method="GET", headers=None):
        req = urllib.request.Request(url, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                body = resp.read() if method == "GET" else None
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, body
        except urllib.error.HTTPError as e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}, None
