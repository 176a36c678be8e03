"""Several models resident, and fallback along an alias's chain, with real models and real
triggers: a damaged model, weights the engine cannot load, a memory budget smaller than a model,
a job that waited past its alias's threshold."""

from pathlib import Path

import pytest

from hushscribe.audio import decode
from hushscribe.engine import ModelManager, ModelStore, TranscribeOptions
from hushscribe.engine.fallback import NoModelCanServe, Step, is_out_of_memory
from hushscribe.engine.loader import LoadedModel
from hushscribe.engine.transcriber import transcribe
from hushscribe.errors import ModelChecksumMismatch
from hushscribe.settings import Settings, load_settings
from tests.model_dirs import add_damaged, add_unloadable, link_demo
from tests.speech import clip

JFK = "ask not what your country can do for you"


@pytest.fixture(scope="module")
def models_dir(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo models (linked), a damaged copy of tiny.en and one whose weights are cut short
    after it was installed with a correct manifest (the engine cannot load it)."""
    root = tmp_path_factory.mktemp("fallback-models")
    link_demo(root, data_dir / "models")
    add_damaged(root, data_dir / "models" / "tiny.en")
    add_unloadable(root, data_dir / "models" / "tiny.en")
    return root


def _settings(models_dir: Path, tmp_path: Path, **models: object) -> Settings:
    data = tmp_path / "data"
    data.mkdir()
    (data / "models").symlink_to(models_dir, target_is_directory=True)
    return load_settings(
        None, data_dir=data, engine={"cpu_threads": 2, "default_model": "tiny.en"}, models=models
    )


def _jfk(model: LoadedModel) -> str:
    settings = load_settings(None, engine={"cpu_threads": 2})
    audio = decode(clip("jfk.flac").path, settings.audio).samples
    return transcribe(model, audio, TranscribeOptions(language="en"), settings.engine).text.lower()


def test_a_damaged_model_falls_back_to_the_next(models_dir: Path, tmp_path: Path) -> None:
    settings = _settings(
        models_dir, tmp_path, aliases={"accurate": {"models": ["damaged", "tiny.en"]}}
    )
    manager = ModelManager(settings)
    text, choice = manager.run("accurate", 0.0, _jfk)
    assert JFK in text
    assert (choice.requested, choice.model) == ("accurate", "tiny.en")
    assert [(s.model, s.reason) for s in choice.fallbacks] == [("damaged", "damaged")]
    assert "SHA-256" in choice.fallbacks[0].detail
    assert manager.loaded() == ["tiny.en"]  # the damaged one never reached memory


def test_weights_the_engine_cannot_load_fall_back(models_dir: Path, tmp_path: Path) -> None:
    settings = _settings(
        models_dir, tmp_path, aliases={"accurate": {"models": ["unloadable", "tiny.en"]}}
    )
    text, choice = ModelManager(settings).run("accurate", 0.0, _jfk)
    assert JFK in text
    assert choice.model == "tiny.en"
    assert [(s.model, s.reason) for s in choice.fallbacks] == [("unloadable", "load_failed")]
    assert "could not be loaded" in choice.fallbacks[0].detail


def test_a_memory_budget_smaller_than_a_model(models_dir: Path, tmp_path: Path) -> None:
    store = ModelStore(models_dir)
    base_mb, tiny_mb = store.info("base").bytes / 1e6, store.info("tiny.en").bytes / 1e6
    assert tiny_mb < base_mb
    budget = int((base_mb + tiny_mb) / 2)  # tiny.en fits, base does not
    settings = _settings(
        models_dir, tmp_path, memory_budget_mb=budget,
        aliases={"accurate": {"models": ["base", "tiny.en"]}},
    )  # fmt: skip
    manager = ModelManager(settings)
    text, choice = manager.run("accurate", 0.0, _jfk)
    assert JFK in text
    assert choice.model == "tiny.en"
    assert [(s.model, s.reason) for s in choice.fallbacks] == [("base", "memory_budget")]
    assert f"{budget:,} MB" in choice.fallbacks[0].detail
    assert manager.loaded() == ["tiny.en"]


def test_a_job_that_waited_too_long_takes_the_next_model(models_dir: Path, tmp_path: Path) -> None:
    settings = _settings(
        models_dir, tmp_path, aliases={"fast": {"models": ["base", "tiny.en"], "queue_wait_s": 5}}
    )
    manager = ModelManager(settings)
    with manager.use_best("fast", waited_s=1.0) as (model, choice):
        assert (model.info.name, choice.fallbacks) == ("base", [])
    with manager.use_best("fast", waited_s=12.5) as (model, choice):
        assert model.info.name == "tiny.en"
        assert [(s.model, s.reason) for s in choice.fallbacks] == [("base", "queue_wait")]
        assert "waited 12.5 s" in choice.fallbacks[0].detail


def test_out_of_memory_during_a_job_retries_once_with_the_next(
    models_dir: Path, tmp_path: Path
) -> None:
    """The device running out of memory cannot be caused on demand on a CPU machine: the job's
    work raises what CTranslate2 raises on a GPU then, on the first model only."""
    settings = _settings(
        models_dir, tmp_path, aliases={"accurate": {"models": ["base", "tiny.en"]}}
    )
    tried: list[str] = []

    def work(model: LoadedModel) -> str:
        tried.append(model.info.name)
        if model.info.name == "base":
            raise RuntimeError("CUDA failed with error out of memory")
        return _jfk(model)

    text, choice = ModelManager(settings).run("accurate", 0.0, work)
    assert tried == ["base", "tiny.en"] and JFK in text
    assert [(s.model, s.reason) for s in choice.fallbacks] == [("base", "out_of_memory")]

    def always(model: LoadedModel) -> str:
        raise RuntimeError("CUDA failed with error out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):  # once, not along the whole chain
        ModelManager(settings).run("accurate", 0.0, always)

    def buggy(model: LoadedModel) -> str:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):  # other errors are no reason to fall back
        ModelManager(settings).run("accurate", 0.0, buggy)


def test_when_no_model_can_serve_every_reason_is_given(models_dir: Path, tmp_path: Path) -> None:
    settings = _settings(
        models_dir, tmp_path, aliases={"accurate": {"models": ["damaged", "unloadable", "gone"]}}
    )
    with pytest.raises(NoModelCanServe) as caught:
        ModelManager(settings).run("accurate", 0.0, _jfk)
    message = caught.value.message
    assert "damaged: damaged" in message and "unloadable: load_failed" in message
    assert "gone: missing" in message
    # A plain model (no alias) keeps its own error.
    with pytest.raises(ModelChecksumMismatch):
        ModelManager(settings).run("damaged", 0.0, _jfk)


def test_resident_models_are_limited_but_one_in_use_stays(models_dir: Path, tmp_path: Path) -> None:
    manager = ModelManager(_settings(models_dir, tmp_path, max_resident=1))
    with manager.use("base"):
        pass
    with manager.use("tiny.en") as tiny:  # base is idle: unloaded to keep one resident
        assert manager.loaded() == ["tiny.en"]
        with manager.use("base"):  # tiny.en is in use: it stays, over the limit for a while
            assert manager.loaded() == ["base", "tiny.en"]
        assert JFK in _jfk(tiny)
    assert set(manager.memory()) == set(manager.loaded())


def test_preloaded_models_are_not_unloaded_when_idle(models_dir: Path, tmp_path: Path) -> None:
    settings = _settings(models_dir, tmp_path, preload=["base"])
    engine = settings.engine.model_copy(update={"model_idle_unload_s": 1})
    manager = ModelManager(settings.model_copy(update={"engine": engine}))
    for name in ("base", "tiny.en"):
        with manager.use(name):
            pass
    assert manager.unload_idle(now=1e12) == []  # base preloaded, tiny.en the default
    assert manager.loaded() == ["base", "tiny.en"]
    assert manager.pinned() == {"base", "tiny.en"}


def test_out_of_memory_is_recognised() -> None:
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(RuntimeError("CUDA failed with error out of memory"))
    assert is_out_of_memory(RuntimeError("std::bad_alloc"))
    assert not is_out_of_memory(RuntimeError("Unable to open file 'model.bin'"))
    assert Step("a", "queue_wait").as_json() == {"model": "a", "reason": "queue_wait", "detail": ""}
