"""The README's commands and Python snippets, run, so that the documentation cannot drift.

Every command line in a ``bash`` block that starts with one of the console scripts is parsed by
that script's own argument parser (a renamed flag or subcommand fails here), and every file of the
repository it names must exist. The cheap ones are also run for real, and every ``python`` block is
executed, in a folder holding a small store built from the sample dump.
"""

from __future__ import annotations

import importlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SCRIPTS = {"models": "models.cli", "ingest": "ingest.cli", "rag": "rag.cli",
           "finetune": "finetune.cli", "compare": "compare.cli"}


def blocks(language: str) -> list[str]:
    """The README's fenced blocks of one language, in order."""
    text = README.read_text(encoding="utf-8")
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def commands() -> list[list[str]]:
    """Every console-script command of the bash blocks (continuations joined, comments cut,
    ``a ; b`` split)."""
    out = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            code = line.split(" #", 1)[0].strip()
            for part in code.split(" ; "):
                words = shlex.split(part)
                if words and words[0] in SCRIPTS:
                    out.append(words)
    return out


def test_the_readme_has_commands_and_snippets() -> None:
    names = {c[0] for c in commands()}
    assert names == set(SCRIPTS), names
    assert blocks("python"), "the README shows no Python snippet"


@pytest.mark.parametrize("words", commands(), ids=lambda w: " ".join(w)[:70])
def test_each_readme_command_parses(words: list[str]) -> None:
    parser = importlib.import_module(SCRIPTS[words[0]]).build_parser()
    try:
        parser.parse_args(words[1:])
    except SystemExit as exc:  # argparse's way of saying no
        pytest.fail(f"README command does not parse ({exc}): {' '.join(words)}")


def test_repository_files_the_readme_names_exist() -> None:
    named = set()
    for words in commands():
        named.update(w for w in words[1:]
                     if re.match(r"^(data|compare|finetune|rag|docs)/\S+\.\w+$", w))
    text = README.read_text(encoding="utf-8")
    named.update(re.findall(r"\]\(((?:docs|bench)/[^)]+)\)", text))
    missing = sorted(n for n in named if not (ROOT / n).exists())
    assert not missing, missing


# Commands run for real (the others need a GPU, a whole Wikipedia or minutes of training): every
# README command that starts with one of these prefixes, in README order.
RUN_FOR_REAL = ("models list", "ingest build data/wiki/", "ingest search stores/sample",
                "ingest info stores/sample",
                "rag eval-retrieval data/questions/brazil_history.jsonl --store stores/sample")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the repository's data/ linked in, where the README's commands run."""
    folder = tmp_path_factory.mktemp("readme")
    (folder / "data").symlink_to(ROOT / "data")
    return folder


def _run(words: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    module = SCRIPTS[words[0]]
    code = f"import sys; from {module} import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *words[1:]], cwd=cwd, capture_output=True,
                          text=True, timeout=900, check=False)


@pytest.mark.slow
def test_readme_commands_and_python_snippets_run(workdir: Path) -> None:
    ran = []
    for words in commands():
        line = " ".join(words)
        if not line.startswith(RUN_FOR_REAL) or line in ran:
            continue
        result = _run(words, workdir)
        assert result.returncode == 0, f"{line}\n{result.stderr[-3000:]}"
        ran.append(line)
    assert len(ran) >= len(RUN_FOR_REAL), ran
    assert "Tiradentes" in _run(["ingest", "search", "stores/sample", "Quem foi Tiradentes?"],
                                workdir).stdout
    for block in blocks("python"):
        result = subprocess.run([sys.executable, "-c", block], cwd=workdir, capture_output=True,
                                text=True, timeout=900, check=False)
        assert result.returncode == 0, f"{block}\n{result.stderr[-3000:]}"
        assert "Tiradentes" in result.stdout
