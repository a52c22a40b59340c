"""Backends as plug-ins: rows validated by their backend's options model, capabilities checked at plan
time, a backend added as one registered class (from inside a test, and from an installed package)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field, ValidationError

from aigc_eval import config
from aigc_eval.backends import backends, capabilities, create_backend, scorer_for, scorer_row
from aigc_eval.backends.base import Backend, BatchCallback, Capabilities, GenerationSettings
from aigc_eval.backends.hf import HFRow
from aigc_eval.backends.images import ImagesBackend, ImagesRow
from aigc_eval.config import ModelRow, load_suite, parse_row, parse_suite
from aigc_eval.errors import UserError
from aigc_eval.preflight import check_plan, check_suite
from aigc_eval.record import Provenance

ROOT = Path(__file__).parents[1]
# Computed by the code before backends became plug-ins (git HEAD 6142aec):
# load_suite("suites/demo.yaml")[0].config_hash() and that suite's models[0].model_dump(mode="json").
DEMO_HASH = "c437c541a9b7be6edf8dab43e6391a06af49dbf09f637bb44f34a39c1d8cd6bb"
DEMO_GREEDY_DUMP = {
    "name": "demo-greedy",
    "backend": "hf",
    "path": "models/demo-gpt2",
    "images": {},
    "revision": None,
    "dtype": "float32",
    "device": "auto",
    "batch_size": 16,
    "trust_remote_code": False,
    "chat": False,
    "system": None,
    "fused_activations": True,
    "generation": {
        "max_new_tokens": 24,
        "num_beams": 1,
        "do_sample": False,
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": 50,
        "repetition_penalty": 1.0,
        "early_stopping": False,
        "seed": 0,
        "stop": [],
    },
}
TEXT_TASK = {"name": "t", "data": "t.jsonl"}
IMAGE_TASK = {"name": "shapes", "kind": "image", "reference": "ref/"}


# -- a toy backend, one class, registered from inside the tests ------------------------------------


class ToyRow(ModelRow):
    backend: Literal["toy"]
    path: str
    shout: bool = False
    generation: GenerationSettings = Field(default_factory=GenerationSettings)

    path_fields = ("path",)


class ToyBackend(Backend):
    """Generates greedily only (no beam search, sampling, chat templates or log-likelihoods)."""

    Options = ToyRow
    capabilities = Capabilities(generate=True)

    def __init__(self, row: ModelRow) -> None:
        assert isinstance(row, ToyRow)
        self.row = row

    def generate(
        self,
        prompts: Sequence[str],
        settings: GenerationSettings,
        on_batch: BatchCallback | None = None,
        skip: set[int] | None = None,
    ) -> list[str]:
        texts = [p.upper() if self.row.shout else p for p in prompts]
        return [t[: settings.max_new_tokens] for t in texts]

    def describe(self) -> Provenance:
        return Provenance(backend="toy", model=self.row.path)


@pytest.fixture
def toy() -> Iterator[type[ToyBackend]]:
    backends.register("toy")(ToyBackend)
    yield ToyBackend
    backends.unregister("toy")


def _suite(*rows: dict, tasks: list[dict] | None = None, metrics: list | None = None) -> dict:
    return {"name": "s", "models": list(rows), "tasks": tasks or [TEXT_TASK], "metrics": metrics or ["bleu"]}


def test_a_backend_is_one_registered_class(toy: type[ToyBackend]) -> None:
    """Registering the class is all it takes: suites validate its rows with its own options model
    (typos refused), the plan checks it, and ``create_backend`` builds it from the row."""
    suite = parse_suite(_suite({"name": "a", "backend": "toy", "path": "m", "shout": True}), "s.yaml")
    [row] = suite.models
    assert isinstance(row, ToyRow) and row.shout and row.generation == GenerationSettings()
    check_suite(suite, "s.yaml")
    backend = create_backend(row)
    assert isinstance(backend, ToyBackend)
    assert backend.generate(["abc"], GenerationSettings(max_new_tokens=2)) == ["AB"]
    assert backend.describe() == Provenance(backend="toy", model="m")
    assert capabilities("toy") == Capabilities(generate=True)
    assert suite.models[0].model_dump(mode="json")["shout"] is True
    with pytest.raises(UserError, match=r"s\.yaml: models\[0\]\.shoutt: unknown key"):
        parse_suite(_suite({"name": "a", "backend": "toy", "path": "m", "shoutt": True}), "s.yaml")
    with pytest.raises(NotImplementedError, match="loglikelihood"):
        backend.loglikelihood(["x"])


def test_unknown_backend_lists_the_known_ones(toy: type[ToyBackend]) -> None:
    with pytest.raises(
        UserError,
        match=r"^s\.yaml: models\[0\]\.backend: unknown backend 'vllmm'; "
        r"known backends: hf, images, openai, toy, vllm$",
    ):
        parse_suite(_suite({"name": "a", "backend": "vllmm", "path": "m"}), "s.yaml")


def test_capability_mismatches_fail_at_plan_time_naming_row_and_fix(toy: type[ToyBackend]) -> None:
    beams = {"name": "b", "backend": "toy", "path": "m", "generation": {"num_beams": 4}}
    with pytest.raises(UserError) as info:
        check_suite(parse_suite(_suite(beams)), "suite.yaml")
    assert str(info.value) == (
        "suite.yaml: models[0] (b): backend 'toy' cannot do beam search, which generation.num_beams: 4 "
        "asks for; set num_beams: 1, or use a backend that can (hf, vllm)"
    )
    sampling = {"name": "s", "backend": "toy", "path": "m", "generation": {"do_sample": True}}
    with pytest.raises(
        UserError, match=r"models\[0\] \(s\): backend 'toy' cannot do sampling.*do_sample: false"
    ):
        check_suite(parse_suite(_suite(sampling)), "suite.yaml")
    greedy = {"name": "g", "backend": "toy", "path": "m"}
    perplexity = {"name": "perplexity", "target": "references"}
    with pytest.raises(
        UserError,
        match=r"models\[0\] \(g\): backend 'toy' cannot do loglikelihood, which metrics\[1\] \(perplexity",
    ):
        check_suite(parse_suite(_suite(greedy, metrics=["bleu", perplexity])), "suite.yaml")
    # Scored by a named hf row instead, the toy row is fine; a toy row cannot be the named scorer.
    hf = {"name": "h", "path": "model"}
    check_suite(parse_suite(_suite(greedy, hf, metrics=[{**perplexity, "model": "h"}])), "suite.yaml")
    with pytest.raises(UserError, match=r"metrics\[0\]\.model: row 'g' \(models\[0\]\) uses backend 'toy'"):
        check_suite(parse_suite(_suite(greedy, hf, metrics=[{**perplexity, "model": "g"}])), "suite.yaml")
    # The same asks of an hf row pass.
    hf_asks = {**hf, "chat": True, "generation": {"num_beams": 4, "do_sample": True}}
    check_suite(parse_suite(_suite(hf_asks, metrics=[perplexity])), "suite.yaml")


def test_rows_that_cannot_generate_take_part_in_image_tasks_only() -> None:
    images = {"name": "gen", "backend": "images", "images": {"shapes": "gen/"}}
    suite = parse_suite(_suite(images, {"name": "h", "path": "model"}, tasks=[TEXT_TASK, IMAGE_TASK]))
    check_suite(suite, "suite.yaml")  # perplexity-free, beams-free: nothing asked of the images row
    lonely = parse_suite(_suite({"name": "gen", "backend": "images"}, tasks=[TEXT_TASK, IMAGE_TASK]))
    with pytest.raises(
        UserError, match=r"models\[0\] \(gen\): backend 'images' cannot generate text and the row"
    ):
        check_suite(lonely, "suite.yaml")
    with pytest.raises(UserError, match=r"models\[0\]\.generation: unknown key"):
        parse_suite(_suite({**images, "generation": {"num_beams": 2}}, tasks=[IMAGE_TASK]), "s.yaml")


def test_plan_checks_each_row_with_its_backend(toy: type[ToyBackend], tmp_path: Path) -> None:
    """``check_plan`` runs the hf folder checks on hf rows only; a toy row's path is its own business."""
    (tmp_path / "t.jsonl").write_text('{"prompt": "a", "reference": "b"}\n', encoding="utf-8")
    suite = parse_suite(_suite({"name": "a", "backend": "toy", "path": "./nowhere"}))
    check_plan(suite, tmp_path, "suite.yaml")
    missing = parse_suite(_suite({"name": "a", "path": "./nowhere"}))
    with pytest.raises(UserError, match=r"^suite\.yaml: models\[0\]\.path: folder not found: './nowhere'"):
        check_plan(missing, tmp_path, "suite.yaml")


def test_entry_point_backend_from_an_installed_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "toy_plugin"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from typing import Literal\n"
        "from aigc_eval.backends import backends\n"
        "from aigc_eval.backends.base import Backend, Capabilities\n"
        "from aigc_eval.config import ModelRow\n"
        "from aigc_eval.record import Provenance\n\n"
        "class ToyRow(ModelRow):\n"
        "    backend: Literal['toy']\n"
        "    url: str\n\n"
        "@backends.register('toy')\n"
        "class ToyBackend(Backend):\n"
        "    Options = ToyRow\n"
        "    capabilities = Capabilities(generate=True, loglikelihood=True)\n"
        "    def __init__(self, row):\n"
        "        self.row = row\n"
        "    def describe(self):\n"
        "        return Provenance(backend='toy', model=self.row.url)\n",
        encoding="utf-8",
    )
    info = tmp_path / "toy_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: toy_plugin\nVersion: 0.1\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text("[aigc_eval.backends]\ntoy = toy_plugin\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        backends.reload_entry_points()
        assert "toy" in backends.names()
        suite = parse_suite(_suite({"name": "a", "backend": "toy", "url": "http://x"}))
        assert type(suite.models[0]).__module__ == "toy_plugin"
        assert create_backend(suite.models[0]).describe() == Provenance(backend="toy", model="http://x")
        assert capabilities("toy").loglikelihood and not capabilities("toy").beam_search
    finally:
        backends.unregister("toy")
        sys.modules.pop("toy_plugin", None)
    assert "toy" not in backends.names()


# -- the built-in rows -----------------------------------------------------------------------------


def test_demo_rows_and_config_hash_are_unchanged() -> None:
    """Run folders are named by the config hash and generation logs are keyed by the row's dump:
    both must come out as before rows became per-backend models."""
    suite, _ = load_suite(ROOT / "suites" / "demo.yaml")
    assert suite.config_hash() == DEMO_HASH
    assert suite.models[0].model_dump(mode="json") == DEMO_GREEDY_DUMP
    assert [type(m) for m in suite.models] == [HFRow] * 4 + [ImagesRow] * 2
    assert suite.models[4].model_dump(mode="json") == {
        "name": "faithful-generator",
        "backend": "images",
        "images": {"shapes": "data/images/gen-faithful"},
        "device": "auto",
    }


def test_suite_validation_and_plan_checks_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from aigc_eval.config import load_suite\n"
        "from aigc_eval.preflight import check_suite\n"
        f"suite, _ = load_suite({str(ROOT / 'suites' / 'demo.yaml')!r})\n"
        "check_suite(suite, 'demo.yaml')\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_one_generation_settings() -> None:
    """The suite schema and the backends share one frozen model (there is no second definition)."""
    assert not hasattr(config, "Generation")
    row = parse_row({"name": "m", "path": "p", "generation": {"stop": ["\n"], "num_beams": 3}})
    assert isinstance(row, HFRow) and type(row.generation) is GenerationSettings
    assert row.generation.stop == ("\n",) and hash(row.generation) == hash(
        GenerationSettings(num_beams=3, stop=["\n"])
    )
    with pytest.raises(ValidationError):
        GenerationSettings(top_p=2.0)


def test_load_key_shares_a_backend_only_between_equal_options() -> None:
    base = {"name": "a", "path": "p"}
    greedy = parse_row(base)
    assert parse_row({**base, "name": "b", "generation": {"num_beams": 5}}).load_key() == greedy.load_key()
    # A backend holds its batch size and chat setting, so rows differing in them get their own.
    assert parse_row({**base, "batch_size": 2}).load_key() != greedy.load_key()
    assert parse_row({**base, "chat": True}).load_key() != greedy.load_key()
    assert parse_row({**base, "dtype": "float16"}).load_key() != greedy.load_key()


def test_with_paths_resolves_path_options_and_image_folders() -> None:
    row = parse_row({"name": "a", "path": "m", "images": {"shapes": "gen"}})
    resolved = row.with_paths(lambda p: f"/abs/{p}")
    assert (resolved.path, resolved.images) == ("/abs/m", {"shapes": "/abs/gen"})
    images = parse_row({"name": "g", "backend": "images", "images": {"shapes": "gen"}}).with_paths(str.upper)
    assert ImagesBackend(images).describe() == Provenance(backend="images", images={"shapes": "GEN"})
    assert capabilities("images") == Capabilities()


def test_scorer_rows_are_built_as_suite_rows() -> None:
    """The ``score`` CLI's ``--model`` and a perplexity ``model:`` path: the backend's own row
    model, in float32 as the single-backend code scored."""
    row = scorer_row("some/model", device="cpu")
    assert isinstance(row, HFRow) and (row.path, row.dtype, row.device) == ("some/model", "float32", "cpu")
    assert scorer_row("m", dtype="bfloat16").dtype == "bfloat16"
    with pytest.raises(UserError, match=r"^backend 'hf': device: must be auto, cpu, mps, cuda or cuda:N$"):
        scorer_for("some/model", device="gpu")
    with pytest.raises(UserError, match=r"backend 'images': path: unknown key"):
        scorer_for("folder", "images")


def test_row_dump_keeps_the_backend_fields(toy: type[ToyBackend]) -> None:
    """A suite dumps each row as its own backend's model (not the common base)."""
    suite = parse_suite(_suite({"name": "a", "backend": "toy", "path": "m"}, {"name": "h", "path": "p"}))
    dumped = json.loads(json.dumps(suite.model_dump(mode="json")))
    assert dumped["models"][0]["path"] == "m" and "shout" in dumped["models"][0]
    assert dumped["models"][1]["batch_size"] == 8
