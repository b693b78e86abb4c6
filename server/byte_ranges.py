"""HTTP Range requests on files, by RFC 9110 (sections 13.1.5 If-Range, 14 Range Requests,
15.3.7 206 Partial Content), for every route that serves a file (/weights, /static, /pyodide).

What a request gets (`decide`):
  no Range, a Range in a unit other than "bytes", or an If-Range that does not match the
      file's current ETag / Last-Modified                  -> 200, the whole file (RFC: MUST ignore)
  a syntactically invalid bytes range (not 1*DIGIT, first > last, "bytes=", ...)
                                                           -> 400 (RFC: MAY reject)
  no range satisfiable (first-pos >= size, suffix length 0) -> 416 + Content-Range: bytes */size
  satisfiable ranges: the unsatisfiable ones are dropped, the rest sorted and coalesced where
      they overlap or touch; one left -> 206 with Content-Range; several -> 206
      multipart/byteranges, parts in file order
  more than MAX_RANGES ranges after coalescing              -> 200, the whole file (RFC: MAY
      ignore; a client asking for that many pieces of one file is broken or hostile)
A last-pos past the end means "to the end"; numbers of any length are read without converting
thousands of digits. Nothing outside [0, size) is ever sent. HEAD gets the same status and
headers without a body.
"""
import mimetypes
import os
from email.utils import formatdate
from secrets import token_hex

import anyio
from starlette.responses import FileResponse, PlainTextResponse, Response, StreamingResponse

MAX_RANGES = 100
CHUNK = 1 << 20
_BIG = 1 << 64           # stands in for any number longer than 19 digits (past any file)


class Whole:
    """Serve the whole file (no Range, or one the RFC says to ignore)."""


class Malformed(Exception):
    pass


def _number(text):
    if not text or not text.isascii() or not text.isdigit():
        raise Malformed(f"{text!r} is not a number of digits")
    return int(text) if len(text) <= 19 else _BIG


def parse_ranges(header, size):
    """Whole, [] (nothing satisfiable), or [(start, end)] half-open, sorted and coalesced.
    Raises Malformed for a bytes range that breaks RFC 9110's grammar."""
    if header is None:
        return Whole
    unit, eq, spec = header.partition("=")
    if not eq or unit.strip().lower() != "bytes" or unit != unit.strip():
        if eq and unit.strip().lower() == "bytes":
            raise Malformed("whitespace around the range unit")
        return Whole          # another unit (or none): ignored, as the RFC requires
    if size == 0:
        return Whole          # an empty file has no byte to select: send it whole (empty)
    wanted = []
    items = [item.strip(" \t") for item in spec.split(",")]
    if not any(items):
        raise Malformed("no range in the range set")
    for item in items:
        if not item:
            continue          # the list rule allows empty elements
        first, dash, last = item.partition("-")
        if not dash:
            raise Malformed(f"range {item!r} has no '-'")
        if first == "":
            n = _number(last)                 # suffix-range: the last n bytes
            if n > 0:
                wanted.append((max(0, size - n), size))
            continue
        a = _number(first)
        b = _number(last) if last != "" else None
        if b is not None and b < a:
            raise Malformed(f"range {item!r} ends before it starts")
        if a < size:
            wanted.append((a, size if b is None else min(b + 1, size)))
    wanted.sort()
    merged = []
    for a, b in wanted:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    if len(merged) > MAX_RANGES:
        return Whole
    return merged


def validators(stat):
    """(ETag, Last-Modified) of a file as stat()ed: both change when its bytes may have."""
    return (f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"',
            formatdate(stat.st_mtime, usegmt=True))


def if_range_holds(if_range, etag, last_modified):
    """RFC 9110 13.1.5: a strong ETag equal to the current one, or the exact Last-Modified
    date; a weak tag never matches."""
    value = if_range.strip()
    if value.startswith('"'):
        return value == etag
    if value.startswith("W/"):
        return False
    return value == last_modified


class _WholeFile(FileResponse):
    """FileResponse with Range and If-Range hidden from it: the decision is ours (above)."""

    async def __call__(self, scope, receive, send):
        headers = [(k, v) for k, v in scope.get("headers", [])
                   if k.lower() not in (b"range", b"if-range")]
        await super().__call__(dict(scope, headers=headers), receive, send)


def file_response(path, request_headers, method="GET", headers=None, media_type=None,
                  stat=None):
    """The response to a GET/HEAD of file `path` given the request's headers (a mapping with
    case-insensitive .get, such as starlette's Headers)."""
    stat = stat or os.stat(path)
    etag, last_modified = validators(stat)
    base = {"Accept-Ranges": "bytes", "ETag": etag, "Last-Modified": last_modified,
            **(headers or {})}
    rng = request_headers.get("range")
    if rng is not None and request_headers.get("if-range") is not None:
        if not if_range_holds(request_headers.get("if-range"), etag, last_modified):
            rng = None
    try:
        ranges = parse_ranges(rng, stat.st_size)
    except Malformed as e:
        return PlainTextResponse(f"malformed Range header ({e}); RFC 9110 section 14.1.2",
                                 status_code=400)
    if ranges is Whole:
        return _WholeFile(path, headers=base, media_type=media_type, stat_result=stat)
    if not ranges:
        return PlainTextResponse("none of the requested ranges is inside the "
                                 f"{stat.st_size}-byte file", status_code=416,
                                 headers={"Content-Range": f"bytes */{stat.st_size}"})
    media_type = media_type or mimetypes.guess_type(str(path))[0] or "text/plain"
    head_only = method.upper() == "HEAD"
    if len(ranges) == 1:
        a, b = ranges[0]
        hdrs = dict(base, **{"Content-Range": f"bytes {a}-{b - 1}/{stat.st_size}",
                             "Content-Length": str(b - a)})
        body = None if head_only else _read_ranges(path, [(a, b)], lambda *_: b"", b"")
        return _partial(body, hdrs, media_type)
    boundary = token_hex(13)

    def part_head(a, b):
        return (f"--{boundary}\r\nContent-Type: {media_type}\r\n"
                f"Content-Range: bytes {a}-{b - 1}/{stat.st_size}\r\n\r\n").encode("latin-1")
    closing = f"--{boundary}--\r\n".encode("latin-1")
    length = sum(len(part_head(a, b)) + (b - a) + 2 for a, b in ranges) + len(closing)
    hdrs = dict(base, **{"Content-Length": str(length)})
    body = None if head_only else _read_ranges(path, ranges, part_head, closing)
    return _partial(body, hdrs, f"multipart/byteranges; boundary={boundary}")


def _partial(body, headers, media_type):
    if body is None:
        return Response(status_code=206, headers=headers, media_type=media_type)
    return StreamingResponse(body, status_code=206, headers=headers, media_type=media_type)


async def _read_ranges(path, ranges, part_head, closing):
    multipart = len(ranges) > 1
    async with await anyio.open_file(path, "rb") as f:
        for a, b in ranges:
            if multipart:
                yield part_head(a, b)
            await f.seek(a)
            left = b - a
            while left:
                chunk = await f.read(min(CHUNK, left))
                if not chunk:
                    raise OSError(f"{path} became shorter while it was being sent")
                left -= len(chunk)
                yield chunk
            if multipart:
                yield b"\r\n"
    if multipart:
        yield closing
