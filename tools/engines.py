"""Which engine a device tool runs its snippets in: wgpu-py natively (tools/native_engine.py) or
the tab's code path, Pyodide under Node on Dawn (tools/dawn_engine.py)."""


def engine_class(dawn):
    """DawnEngine if `dawn`, else NativeEngine (each imported only when asked for)."""
    if dawn:
        from tools.dawn_engine import DawnEngine
        return DawnEngine
    from tools.native_engine import NativeEngine
    return NativeEngine


def adapter_name(eng):
    """The engine's adapter in a few words (its device, else its description)."""
    adapter = eng.info.get("adapter") or {}
    return adapter.get("device") or adapter.get("description")
