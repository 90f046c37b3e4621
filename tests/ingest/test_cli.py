"""``ingest build / search / info`` driven end to end through ``ingest.cli.main``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingest.cli import main


def test_build_search_info(sample_dump: Path, tmp_path: Path, capsys: pytest.CaptureFixture
                           ) -> None:
    store = tmp_path / "store"
    config = tmp_path / "ingest.yaml"
    config.write_text("embedder: hashing\nchunk_words: 80\noverlap: 10\n", encoding="utf-8")
    args = ["build", str(sample_dump), "--store", str(store), "--config", str(config),
            "--workers", "0", "--tables", "linearize", "--keep-infobox", "-q"]
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == str(store)
    assert "chunk_words: 80" in (store / "config.yaml").read_text(encoding="utf-8")
    assert main(args) == 2
    assert "already holds a finished store" in capsys.readouterr().err
    assert main(["search", str(store), "Tiradentes alferes dentista", "-k", "3", "-q"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1. [") and "Tiradentes" in out.splitlines()[0]
    assert main(["search", str(store), "samba", "-k", "2", "--json", "-q"]) == 0
    hits = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [h["rank"] for h in hits] == [1, 2] and {"title", "section", "score"} <= set(hits[0])
    assert main(["info", str(store), "-q"]) == 0
    out = capsys.readouterr().out
    assert "embedder  hashing" in out and "80 words, overlap 10" in out and "aliases 10" in out
    assert main(["info", str(store), "--json", "-q"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["manifest"]["cleaning"]["tables"] == "linearize"
    assert info["manifest"]["config"]["keep_infobox"] is True


def test_user_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["info", str(tmp_path / "none"), "-q"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["build", str(tmp_path / "none.xml.bz2"), "--store", str(tmp_path / "s"),
                 "-q"]) == 2
    assert "error: dump" in capsys.readouterr().err
    bad = tmp_path / "c.yaml"
    bad.write_text("chunk_wrods: 3\n", encoding="utf-8")
    assert main(["build", str(tmp_path / "x"), "--store", str(tmp_path / "s"), "--config",
                 str(bad), "-q"]) == 2
    assert "Did you mean 'chunk_words'" in capsys.readouterr().err
    assert main(["build", str(tmp_path / "x"), "--store", str(tmp_path / "s"), "--index",
                 "flat", "--overlap", "90", "-q"]) == 2
    assert "overlap" in capsys.readouterr().err
