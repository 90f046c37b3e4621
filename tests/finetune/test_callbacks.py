"""Training log: last record per step wins (resumed runs), smoothing, the two plots."""

from __future__ import annotations

import json
from pathlib import Path

from finetune.callbacks import moving_average, plot_training_log, read_log, series


def test_series_keeps_the_last_record_per_step(tmp_path: Path) -> None:
    log = tmp_path / "training_log.jsonl"
    rows = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.5}, {"step": 0, "eval_loss": 2.9},
            {"step": 2, "loss": 2.4}, {"step": 3, "loss": 2.0, "learning_rate": 1e-4}]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = read_log(log)
    assert series(records, "loss") == ([1, 2, 3], [3.0, 2.4, 2.0])
    assert series(records, "eval_loss") == ([0], [2.9])
    assert read_log(tmp_path / "absent.jsonl") == []
    with open(log, "a", encoding="utf-8") as fh:
        fh.write('{"step": 4, "lo')  # a training killed while writing its last line
    assert read_log(log) == records
    written = plot_training_log(log, tmp_path)
    assert [p.name for p in written] == ["loss.png", "lr.png"]
    assert all(p.stat().st_size > 1000 for p in written)


def test_moving_average() -> None:
    assert moving_average([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3) == [1.0, 1.5, 2.0, 3.0, 4.0, 5.0]
    assert moving_average([], 5) == []
