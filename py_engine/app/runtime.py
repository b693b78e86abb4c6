"""The booted engine's GPU device, for the app layer (set once by py_engine.rpc.boot, which
sits above app and must not be imported by it)."""
device = None
