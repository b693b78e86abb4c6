"""The checks every `ops/step_kernels.hardware` choice must pass (Mamba-2's and Mamba-3's chunked
forwards): on for a real GPU, off for a CPU adapter, the environment variable forcing it either
way, the device attribute over the variable, any other value refused by name."""
import types

import pytest


def check_real_gpu_rule(monkeypatch, chosen, attr, env):
    """chosen(device) -> bool; attr: its device attribute (tests); env: its variable (benches)."""
    monkeypatch.delenv(env, raising=False)
    gpu = types.SimpleNamespace(info={"is_fallback": False})
    cpu = types.SimpleNamespace(info={"is_fallback": True})
    assert chosen(gpu) and not chosen(cpu)
    monkeypatch.setenv(env, "1")
    assert chosen(cpu)
    setattr(cpu, attr, False)
    assert not chosen(cpu)
    monkeypatch.setenv(env, "yes")
    with pytest.raises(ValueError, match=f"{env} must be '1' or '0'"):
        chosen(gpu)
