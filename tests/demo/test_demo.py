"""The demo driver: its headline summary, its store check, ``python -m demo``."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from core.paths import sample_dump
from demo.driver import current_names, store_is_current, summary

ROOT = Path(__file__).resolve().parents[2]


def test_summary_says_how_much_training_and_the_primary_metric_verdicts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "manifest.json").write_text(json.dumps({
        "config": {"max_steps": 40, "per_device_train_batch_size": 2, "max_seq_length": 256,
                   "packing": True},
        "pairs": {"train": 700, "meta": {"counts": {"by_kind": {"short": 780}}}},
        "truncation": {"train": {"examples": 700, "tokens": 91000}},
        "training": {"global_step": 40, "epoch": 0.23}}))
    (adapter / "training_log.jsonl").write_text(
        json.dumps({"step": 40, "epoch": 0.23, "num_tokens": 20480}) + "\n")
    monkeypatch.setattr("demo.driver.default_adapter_dir", lambda: adapter)
    ci = {"mean": 0.4, "low": 0.3, "high": 0.5, "n": 82, "interval": "wilson"}
    results = {"columns": ["base", "rag"], "headline": {
        "metrics": ["answer_accuracy"], "rows": {"answer_accuracy": {"base": ci, "rag": ci}},
        "verdicts": ["rag beats base on answer_accuracy by 0.3 (…)"]}}
    (tmp_path / "results.json").write_text(json.dumps(results))
    lines = summary(tmp_path)
    assert lines[0] == ("adapter: 40 steps, 0.23 epochs, 20,480 tokens of 700 training pairs "
                        "(780 short)")
    assert lines[1].strip() == "base: answer_accuracy 0.400 [0.300, 0.500] (n=82, wilson)"
    assert lines[-1] == "- rag beats base on answer_accuracy by 0.3 (…)"


# --- the store check: rebuild only an unfinished or damaged store, and say why ----------------


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished store of the first 3 sample articles (model-free hashing embedder)."""
    from ingest.build import build_store
    from ingest.config import IngestConfig

    store = tmp_path_factory.mktemp("demo") / "store"
    config = IngestConfig(embedder="hashing", workers=0, limit=3)
    return build_store(sample_dump(), store, config, progress=False)


@pytest.fixture()
def store(small_store: Path, tmp_path: Path) -> Path:
    """A copy of the small store that a test may damage."""
    return Path(shutil.copytree(small_store, tmp_path / "store"))


def test_a_finished_store_of_this_dump_is_current(store: Path, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    other = tmp_path / "other.xml"
    other.write_text("<mediawiki/>")
    with caplog.at_level("WARNING"):
        assert store_is_current(store, sample_dump())
        assert not store_is_current(store, other)  # built from another dump: rebuilt, no alarm
        assert not store_is_current(tmp_path / "absent", sample_dump())
    assert not caplog.records


@pytest.mark.parametrize("damage", ["truncated manifest", "garbage database", "missing index",
                                    "short database"])
def test_a_damaged_store_is_rebuilt_and_the_log_says_why(store: Path, damage: str,
                                                         caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    if damage == "truncated manifest":
        text = (store / "manifest.json").read_text()
        (store / "manifest.json").write_text(text[: len(text) // 2])
    elif damage == "garbage database":
        (store / "chunks.sqlite").write_bytes(b"not a database" * 100)
    elif damage == "missing index":
        (store / "index.faiss").unlink()
    else:
        with sqlite3.connect(store / "chunks.sqlite") as db:
            db.execute("DELETE FROM chunks WHERE row = (SELECT MAX(row) FROM chunks)")
    with caplog.at_level("WARNING", logger="demo.driver"):
        assert not store_is_current(store, sample_dump())
    (record,) = caplog.records
    assert str(store) in record.getMessage() and "rebuilt" in record.getMessage()
    assert "UserError" in record.getMessage()


def test_io_errors_rebuild_but_bugs_propagate(store: Path, monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    from ingest.store import Store

    def unreadable(path: Path) -> Store:
        raise PermissionError(13, "Permission denied", str(path / "manifest.json"))

    monkeypatch.setattr(Store, "open", unreadable)
    with caplog.at_level("WARNING", logger="demo.driver"):
        assert not store_is_current(store, sample_dump())
    assert "PermissionError" in caplog.records[0].getMessage()

    def bug(path: Path) -> Store:
        raise RuntimeError("a bug in the store code")

    monkeypatch.setattr(Store, "open", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        store_is_current(store, sample_dump())


def test_an_adapter_trained_under_a_former_model_name_is_still_current() -> None:
    recorded = {"model": "qwen2.5-0.5b-instruct", "lora_r": 16}
    assert current_names(recorded) == {"model": "qwen2.5-coder-0.5b-instruct", "lora_r": 16}
    assert current_names({"model": "org/x"}) == {"model": "org/x"} and current_names(None) is None


def test_python_m_demo_help_runs_and_compare_demo_is_gone() -> None:
    out = subprocess.run([sys.executable, "-m", "demo", "--help"], capture_output=True,
                         text=True, cwd=ROOT, timeout=120, check=True)
    assert "python -m demo" in out.stdout
    assert importlib.util.find_spec("compare.demo") is None
