"""The bench's `MAMBAWEB_BENCH_SAMPLING=app` decodes with the generate page's defaults: the two
stay equal (py_engine/benchmarks/model.APP_SAMPLING against web/index.html's inputs); `topp` is
those with top-k off; any other value is refused by name."""
import re

import pytest

from py_engine.benchmarks import model as mb
from tests.conftest import REPO


def _input_value(html, id_):
    m = re.search(r'<input[^>]*id="%s"[^>]*>' % re.escape(id_), html)
    assert m, id_
    tag = m.group(0)
    if 'type="checkbox"' in tag:
        return " checked" in tag
    return float(re.search(r'value="([^"]*)"', tag).group(1))


def test_app_sampling_is_the_pages_default():
    html = (REPO / "web" / "index.html").read_text()
    page = {"greedy": _input_value(html, "greedy"),
            "temperature": _input_value(html, "temperature"),
            "top_k": int(_input_value(html, "top-k")),
            "top_p": _input_value(html, "top-p"),
            "repetition_penalty": _input_value(html, "rep-penalty"),
            "seed": int(_input_value(html, "seed"))}
    assert page == mb.APP_SAMPLING


def test_bench_sampling_by_environment(monkeypatch):
    monkeypatch.delenv("MAMBAWEB_BENCH_SAMPLING", raising=False)
    name, cfg = mb.bench_sampling()
    assert name == "greedy" and cfg.greedy
    monkeypatch.setenv("MAMBAWEB_BENCH_SAMPLING", "app")
    name, cfg = mb.bench_sampling()
    assert name == "app" and not cfg.greedy and cfg.top_k == 40 and cfg.repetition_penalty == 1.1
    monkeypatch.setenv("MAMBAWEB_BENCH_SAMPLING", "topp")
    name, cfg = mb.bench_sampling()
    assert name == "topp" and not cfg.greedy and cfg.top_k == 0 and cfg.top_p == 0.95
    monkeypatch.setenv("MAMBAWEB_BENCH_SAMPLING", "wide")
    name, cfg = mb.bench_sampling()
    assert name == "wide" and not cfg.greedy and cfg.top_k == 300 and cfg.top_p == 0.95
    monkeypatch.setenv("MAMBAWEB_BENCH_SAMPLING", "temp")
    name, cfg = mb.bench_sampling()
    assert name == "temp" and not cfg.greedy and cfg.top_k == 0 and cfg.top_p == 1.0 and \
        cfg.temperature == 0.8 and cfg.repetition_penalty == 1.1
    monkeypatch.setenv("MAMBAWEB_BENCH_SAMPLING", "nucleus")
    with pytest.raises(ValueError, match="MAMBAWEB_BENCH_SAMPLING"):
        mb.bench_sampling()
