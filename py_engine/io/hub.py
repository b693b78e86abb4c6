"""Models by name from a Hugging Face Hub-layout endpoint: the Hub, a mirror, a local server.

The layout is huggingface_hub's:
  <endpoint>/<org>/<name>/resolve/<revision>/<file>          every file (the Hub answers weight
                                                             files with a 302 to its CDN; fetch
                                                             follows it)
  <endpoint>/api/models/<org>/<name>/revision/<revision>     optional: the repo's file list
                                                             ("siblings"); with it no optional
                                                             file is probed (each probe of a
                                                             missing file is a 404 in DevTools)

  parse_repo("org/name@rev")          -> ("org/name", "rev"), or ValueError in one sentence
  HubSource(endpoint, repo, revision)  a byte source (py_engine/io/byte_sources.py) over those URLs
  await source.inspect()               what the repo holds, before any weight byte is read:
                                       {repo, revision, endpoint, files, weight_files,
                                        weight_format, total_bytes}; a gated (401/403), missing
                                       (404), unreachable or unsupported repo raises HubError
                                       with one sentence that says what to do

HTTP goes through an `http` object with `async request(url, method, headers) -> (status,
headers, body bytes or None)` and `async to_buffers(...)`; the default is the browser's fetch
(Pyodide), and host tests pass a urllib one, so the decisions here run on both.
"""
import json
import re
from urllib.parse import quote, urlsplit

DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_REVISION = "main"
# org and name as the Hub allows them: letters, digits, '-', '_', '.'; no '..', no leading '.'
_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
_REPO = re.compile(rf"^({_PART})/({_PART})(?:@([A-Za-z0-9][A-Za-z0-9._/-]{{0,199}}))?$")
# weight layouts, in the order transformers prefers them
WEIGHT_CHOICES = (("model.safetensors.index.json", "index"), ("model.safetensors", "st"),
                  ("pytorch_model.bin.index.json", "bin-index"), ("pytorch_model.bin", "bin"))
# what the engine reads besides weights (tokenizer.json holds the added tokens too, so
# tokenizer_config.json is not needed)
SIDE_FILES = ("config.json", "tokenizer.json")


class HubError(IOError):
    """A repo that cannot be opened, in one sentence (gated, missing, unreachable, a format
    this engine does not read)."""


def looks_like_repo(spec):
    """True when `spec` has the shape org/name or org/name@revision."""
    return isinstance(spec, str) and _REPO.match(spec.strip()) is not None


def parse_repo(spec):
    """'org/name' or 'org/name@revision' -> (repo_id, revision)."""
    text = (spec or "").strip()
    m = _REPO.match(text)
    if m is None or ".." in text:
        raise ValueError(f"{text!r} is not a Hub model name: write it as org/name (for example "
                         "state-spaces/mamba-130m-hf), optionally followed by @revision")
    return f"{m.group(1)}/{m.group(2)}", m.group(3) or DEFAULT_REVISION


def normalize_endpoint(endpoint):
    """'' / None -> the Hub; otherwise an http(s) URL without a trailing slash."""
    e = (endpoint or "").strip().rstrip("/") or DEFAULT_ENDPOINT
    parts = urlsplit(e)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"Hub endpoint {e!r} is not an http(s) address: give one like "
                         f"{DEFAULT_ENDPOINT} or http://localhost:8080")
    return e


def resolve_url(endpoint, repo_id, revision, filename):
    # huggingface_hub quotes the revision whole ("refs/pr/1" -> "refs%2Fpr%2F1")
    return (f"{normalize_endpoint(endpoint)}/{repo_id}/resolve/{quote(revision, safe='')}/"
            f"{quote(filename)}")


def _mb(n):
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n:,} bytes"


class BrowserHTTP:
    """fetch() inside the Worker (Pyodide). Redirects are followed by fetch itself."""

    async def request(self, url, method="GET", headers=None):
        from pyodide.http import pyfetch
        resp = await pyfetch(url, method=method, headers=headers or {})
        hdrs = {k.lower(): v for k, v in dict(resp.headers).items()}
        body = await resp.bytes() if method == "GET" and resp.status in (200, 206) else None
        return resp.status, hdrs, body

    async def to_buffers(self, device, url, start, end, targets):
        import js
        from pyodide.ffi import to_js
        js_targets = [[buf.js, off, a, b] for buf, off, a, b in targets]
        await js.mwGpu.fetchRangeToBuffers(device.js, url, start, end, to_js(js_targets))


class HubSource:
    """A byte source over one repo at one revision. Whole small files (config, tokenizer,
    index) are fetched once and kept; sizes found by inspect() are kept too."""

    def __init__(self, endpoint, repo_id, revision=DEFAULT_REVISION, http=None):
        self.endpoint = normalize_endpoint(endpoint)
        self.repo_id, self.revision = repo_id, revision or DEFAULT_REVISION
        self.http = http or BrowserHTTP()
        self.files = None            # set of file names, once known (API listing or probes)
        self._small = {}             # name -> bytes of files read whole
        self._sizes = {}             # name -> size in bytes

    # -- naming -------------------------------------------------------------------------
    @property
    def label(self):
        rev = "" if self.revision == DEFAULT_REVISION else f"@{self.revision}"
        return f"{self.repo_id}{rev}"

    @property
    def host(self):
        return urlsplit(self.endpoint).netloc

    def where(self, name):
        return resolve_url(self.endpoint, self.repo_id, self.revision, name) if name else \
            f"{self.endpoint}/{self.repo_id} ({self.revision})"

    def error(self, name, why):
        return HubError(f"{self.label}: {name}: {why}")

    # -- HTTP with one sentence per failure -------------------------------------------------
    async def _request(self, url, method="GET", headers=None):
        try:
            return await self.http.request(url, method, headers)
        except Exception as e:   # fetch rejects (TypeError) on DNS, refused, CORS, offline
            raise HubError(f"could not reach the Hub endpoint {self.endpoint} ({_reason(e)}): "
                           "check the address, your connection, and that the endpoint allows "
                           "this page to read it (CORS)") from None

    def _status_error(self, status, headers, name):
        code = (headers or {}).get("x-error-code", "")
        if code == "RepoNotFound":
            # the Hub answers 401 (not 404) for a missing repo to an anonymous client, as it
            # does for a private one
            return HubError(f"{self.label} was not found on {self.host} (HTTP {status}): check "
                            "the name (org/name, as on the model's Hub page); a private repo "
                            "answers the same")
        if status in (401, 403):
            return HubError(
                f"{self.label} on {self.host} is gated or private (HTTP {status}): this tab "
                "sends no access token, so accept its terms on the Hub, download it with "
                "`huggingface-cli download`, and open the folder here (or choose another model)")
        if status == 404 and code == "RevisionNotFound":
            return HubError(f"{self.repo_id} on {self.host} has no revision "
                            f"{self.revision!r} (HTTP 404): check the part after '@' "
                            "(a branch, tag or commit)")
        if status == 404 and code == "EntryNotFound" and name == "config.json":
            return HubError(f"{self.label} on {self.host} has no config.json (HTTP 404): this "
                            "engine opens transformers-layout repos (config.json + "
                            "model.safetensors), not GGUF-only or other layouts")
        if status == 404 and name == "config.json":
            return HubError(f"{self.label} was not found on {self.host} (HTTP 404): check the "
                            "name (org/name, as on the model's Hub page) and the revision")
        if status == 404:
            return HubError(f"{self.label} on {self.host} has no file {name} (HTTP 404)")
        return HubError(f"{self.label}: {name}: the endpoint answered HTTP {status} "
                        f"({self.where(name)}); try again later or check the endpoint")

    async def _list_files(self):
        """The repo's file names from the API, or None when the endpoint has no such API."""
        url = (f"{self.endpoint}/api/models/{self.repo_id}/revision/"
               f"{quote(self.revision, safe='')}")
        status, headers, body = await self._request(url)
        if status in (401, 403) or headers.get("x-error-code") in ("RepoNotFound",
                                                                     "RevisionNotFound"):
            raise self._status_error(status, headers, "config.json")
        if status != 200 or body is None:
            return None           # a plain mirror or static server: probe files instead
        try:
            siblings = json.loads(body.decode("utf-8")).get("siblings")
            names = [s["rfilename"] for s in siblings]
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
        for s in siblings:
            if isinstance(s.get("size"), int):
                self._sizes[s["rfilename"]] = s["size"]
        return set(names)

    async def _probe(self, name):
        """HEAD one file: its size, or None when it is not there (404)."""
        status, headers, _ = await self._request(self.where(name), "HEAD")
        if status == 404:
            return None
        if status != 200:
            raise self._status_error(status, headers, name)
        if "content-length" in headers:
            self._sizes[name] = int(headers["content-length"])
        return self._sizes.get(name)

    # -- what is there --------------------------------------------------------------------
    async def inspect(self):
        listed = await self._list_files()
        if listed is not None:
            self.files = listed
            if "config.json" not in listed:
                raise HubError(self._unsupported(listed))
        config = await self.read("config.json")   # 401/404 here name the repo
        if listed is None:
            found = {"config.json"}
            for name, _ in WEIGHT_CHOICES:
                if await self._probe(name) is not None:
                    found.add(name)
                    break
            for name in SIDE_FILES[1:]:
                if await self._probe(name) is not None:
                    found.add(name)
            self.files = found
        if json_or_none(config) is None:
            raise self.error("config.json", "not valid JSON: the repo's config is damaged; try "
                                              "another revision")
        weights = await self._weight_plan()
        return {"repo": self.repo_id, "revision": self.revision, "endpoint": self.endpoint,
                "label": self.label, "files": sorted(self.files), **weights}

    async def _weight_plan(self):
        files = self.files
        kind = next((k for name, k in WEIGHT_CHOICES if name in files), None)
        if kind is None:
            raise HubError(self._unsupported(files))
        if kind in ("index", "bin-index"):
            index_name = WEIGHT_CHOICES[0 if kind == "index" else 2][0]
            index = json_or_none(await self.read(index_name))
            weight_map = (index or {}).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise HubError(f"{self.label}: {index_name} has no weight_map: the repo's "
                               "index is damaged; try another revision")
            shards = sorted(set(weight_map.values()))
            self.files |= set(shards)
            total = ((index.get("metadata") or {}).get("total_size")
                     if isinstance(index.get("metadata"), dict) else None)
            if not isinstance(total, int):
                total = sum([await self.size(s) for s in shards])
        else:
            shards = ["model.safetensors" if kind == "st" else "pytorch_model.bin"]
            total = await self.size(shards[0])
        fmt = "safetensors" if kind in ("st", "index") else "PyTorch .bin (read without unpickling)"
        if len(shards) > 1:
            fmt += f", {len(shards)} shards"
        return {"weight_files": shards, "weight_format": fmt, "total_bytes": total,
                "total_text": _mb(total)}

    def _unsupported(self, files):
        gguf = sorted(f for f in files if f.lower().endswith(".gguf"))
        if gguf:
            shown = ", ".join(gguf[:3]) + (" …" if len(gguf) > 3 else "")
            return (f"{self.label} holds only GGUF files ({shown}), a llama.cpp format this "
                    "engine does not read: choose the repo with the original safetensors "
                    "checkpoint (config.json + model.safetensors)")
        other = sorted(f for f in files if not f.startswith("."))
        shown = ", ".join(other[:6]) + (" …" if len(other) > 6 else "") or "no files"
        if "config.json" not in files:
            return (f"{self.label} has no config.json (it holds {shown}): this engine opens "
                    "transformers-layout repos (config.json + model.safetensors)")
        return (f"{self.label} has no model.safetensors, model.safetensors.index.json or "
                f"pytorch_model.bin (it holds {shown}): there are no weights this engine reads")

    # -- the byte-source interface (py_engine/io/byte_sources.py) ------------------------
    async def exists(self, name):
        if self.files is not None:
            return name in self.files
        return await self._probe(name) is not None

    async def size(self, name):
        if name not in self._sizes:
            if await self._probe(name) is None:
                raise self._status_error(404, {}, name)
            if name not in self._sizes:
                raise self.error(name, "the endpoint did not say how large it is "
                                       "(no Content-Length)")
        return self._sizes[name]

    async def read(self, name, start=None, end=None):
        if start is None and name in self._small:
            return self._small[name]
        if start is not None and end <= start:
            return b""
        headers = {} if start is None else {"Range": f"bytes={start}-{end - 1}"}
        status, hdrs, body = await self._request(self.where(name), "GET", headers)
        if status not in (200, 206) or body is None:
            raise self._status_error(status, hdrs, name)
        if start is None:
            self._small[name] = body
            return body
        return body[start:end] if status == 200 else body

    async def read_to_buffers(self, device, name, start, end, targets):
        await self.http.to_buffers(device, self.where(name), start, end, targets)


def json_or_none(raw):
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, AttributeError):
        return None


def _reason(e):
    text = str(e).strip().splitlines()
    return text[-1] if text else type(e).__name__
