"""Layer kinds (one module each) and the registry that lists them (py_engine/nn/registry.py)."""
from py_engine.nn import attention, gated_mlp, mamba1, mamba2, mamba3, mlp  # noqa: F401  (each registers its kind)
from py_engine.nn import bidirectional  # noqa: F401  (bidi_mamba1/2/3 wrap the Mamba kinds)
