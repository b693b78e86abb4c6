"""Events from the engine to the page (progress, streamed tokens), posted by the Worker.

In the browser they go through `mwEmit` (web/js/worker.mjs) as {event: name, ...data};
elsewhere (host tests, the native backend) they are collected in `sent` for inspection.
"""
import json

sent = []


def emit(name, **data):
    try:
        import js
        js.mwEmit(name, json.dumps(data))
    except (ImportError, AttributeError):
        sent.append((name, data))
