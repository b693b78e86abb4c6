"""The tape (reverse-mode bookkeeping) and the differentiable ops built on py_engine/ops."""
