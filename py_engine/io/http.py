"""Small HTTP reads from inside the Worker (config files, safetensors headers).

Only small things come through here; tensor bytes go through `mwGpu.fetchRangeToBuffers`.
"""
import json

from pyodide.http import pyfetch


class HTTPFileError(IOError):
    pass


async def fetch_bytes(url, start=None, end=None) -> bytes:
    headers = {}
    if start is not None and end <= start:
        return b""        # "bytes=0--1" is no range at all: an empty file's first 0 bytes
    if start is not None:
        headers["Range"] = f"bytes={start}-{end - 1}"
    resp = await pyfetch(url, headers=headers)
    if resp.status == 404:
        raise HTTPFileError(f"{url}: not found (404)")
    if resp.status not in (200, 206):
        raise HTTPFileError(f"{url}: HTTP {resp.status}")
    data = await resp.bytes()
    if start is not None and resp.status == 200:
        data = data[start:end]
    return data


async def fetch_json(url):
    data = await fetch_bytes(url)
    try:
        return json.loads(data.decode("utf-8"))
    except ValueError as e:
        raise HTTPFileError(f"{url}: not valid JSON ({e})") from None


async def file_size(url) -> int:
    resp = await pyfetch(url, method="HEAD")
    if resp.status == 404:
        raise HTTPFileError(f"{url}: not found (404)")
    if resp.status != 200:
        raise HTTPFileError(f"{url}: HTTP {resp.status}")
    return int(resp.headers["content-length"])


async def exists(url) -> bool:
    resp = await pyfetch(url, method="HEAD")
    return resp.status == 200
