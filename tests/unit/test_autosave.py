"""The checksummed autosave's format and rules (py_engine/train/autosave.py), on the
in-memory backend: generations named with their CRC-32 in the manifest, write -> verify ->
switch, one previous generation kept, a damaged or truncated current generation refused by
name in favour of the previous one, nothing usable -> a refusal naming every file. The
browser's OPFS backend runs the same rules (tests/e2e/test_faults_pages.py)."""
import json
import zlib

import pytest

from py_engine.train.autosave import (SLOTS, AutosaveDamaged, AutosaveStore, MemoryBackend,
                                      damage)

DIR = "mambaweb-pretrain"
TOKENS = bytes(range(64))


from tests.async_run import run  # noqa: E402  (Playwright may own this thread's loop)


def state(step):
    return [("bytes", f"header-{step}|".encode()), ("bytes", bytes([step % 256]) * 300)]


def store_with(steps):
    be = MemoryBackend()
    st = AutosaveStore(be, DIR)
    run(st.begin(TOKENS, zlib.crc32(TOKENS)))
    for s in steps:
        run(st.save(state(s), {"step": s, "steps": 100}, s))
    return be, st


def manifest(be):
    return json.loads(be.files[f"{DIR}/info.json"])


def test_manifest_names_each_generation_with_its_crc_and_keeps_one_previous():
    be, st = store_with([1, 2, 3])
    m = manifest(be)
    data3 = b"".join(x for _, x in state(3))
    assert m["state"] == {"file": m["state"]["file"], "bytes": len(data3),
                          "crc32": zlib.crc32(data3), "step": 3}
    assert m["previous"]["step"] == 2 and m["previous"]["file"] != m["state"]["file"]
    assert m["tokens"] == {"file": "tokens.bin", "bytes": 64, "crc32": zlib.crc32(TOKENS)}
    assert m["step"] == 3 and m["steps"] == 100 and m["autosave"] == 2
    # exactly two generations on storage: the third slot was freed after the switch
    states = sorted(p for p in be.files if p.split("/")[-1] in SLOTS)
    assert len(states) == 2
    path, entry, tokens, warnings = run(st.load())
    assert entry["step"] == 3 and warnings == [] and be.files[path] == data3


@pytest.mark.parametrize("how", ["flip", "truncate", "missing"])
def test_a_damaged_current_generation_is_refused_by_name_and_the_previous_used(how):
    be, st = store_with([4, 8])
    cur = manifest(be)["state"]["file"]
    path = f"{DIR}/{cur}"
    if how == "flip":
        b = bytearray(be.files[path])
        b[100] ^= 0x10
        be.files[path] = bytes(b)
    elif how == "truncate":
        be.files[path] = be.files[path][:-40]
    else:
        del be.files[path]
    got, entry, _, warnings = run(st.load())
    assert entry["step"] == 4 and be.files[got] == b"".join(x for _, x in state(4))
    assert len(warnings) == 1 and path in warnings[0] and "step 8 was refused" in warnings[0]
    want = {"flip": "CRC-32", "truncate": "truncated", "missing": "is missing"}[how]
    assert want in warnings[0], warnings[0]
    # the damaged generation left the manifest: the good one is current, nothing after it
    m = manifest(be)
    assert m["state"]["step"] == 4 and m["previous"] is None and m["step"] == 4
    # the next save builds on the good one
    run(st.save(state(9), {"step": 9}, 9))
    m = manifest(be)
    assert (m["state"]["step"], m["previous"]["step"]) == (9, 4)


def test_no_good_generation_left_is_a_refusal_naming_each_file():
    be, st = store_with([1, 2])
    m = manifest(be)
    for e in (m["state"], m["previous"]):
        be.files[f"{DIR}/{e['file']}"] = b"garbage"
    with pytest.raises(AutosaveDamaged) as e:
        run(st.load())
    msg = str(e.value)
    assert m["state"]["file"] in msg and m["previous"]["file"] in msg
    assert "is 7 bytes, the manifest says" in msg and "start a new run" in msg


def test_a_damaged_corpus_or_manifest_is_refused_by_name():
    be, st = store_with([1])
    be.files[f"{DIR}/tokens.bin"] = TOKENS[:10]
    with pytest.raises(AutosaveDamaged, match=r"corpus mambaweb-pretrain/tokens.bin is 10 bytes"):
        run(st.load())
    be.files[f"{DIR}/info.json"] = b'{"state": '
    with pytest.raises(AutosaveDamaged, match=r"mambaweb-pretrain/info.json is damaged"):
        run(st.load())


def test_a_write_that_does_not_verify_leaves_the_saved_run_as_it_was():
    be, st = store_with([5])
    before = dict(be.files)

    class Flaky(MemoryBackend):
        async def write_parts(self, parts, path):
            size, crc = await super().write_parts(parts, path)
            self.files[path] = self.files[path][:-1] + b"\xff"    # the disk flipped a byte
            return size, crc
    flaky = Flaky()
    flaky.files = be.files
    with pytest.raises(ValueError, match=r"did not verify after writing: .*CRC-32.*the autosave "
                                         r"of step 5 is kept"):
        run(AutosaveStore(flaky, DIR).save(state(6), {"step": 6}, 6))
    assert be.files == before
    assert run(st.load())[1]["step"] == 5


def test_version_one_autosaves_still_resume_unchecked():
    be = MemoryBackend()
    be.files[f"{DIR}/info.json"] = json.dumps({"step": 7}).encode()
    path, entry, tokens, warnings = run(AutosaveStore(be, DIR).load())
    assert path == f"{DIR}/state.safetensors" and entry["step"] == 7 and warnings == []


def test_damage_clauses():
    e = {"file": "s.safetensors", "bytes": 10, "crc32": 5}
    assert damage(e, (10, 5), "d") is None
    assert damage(e, (12, 5), "d") == "d/s.safetensors is 12 bytes, the manifest says 10 (bytes appended)"
    assert "CRC-32 0x00000006, the manifest says 0x00000005" in damage(e, (10, 6), "d")
