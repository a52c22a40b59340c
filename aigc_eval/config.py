"""The suite schema: what a YAML file in ``suites/`` may say, validated strictly.

Unknown keys are errors (a typo must never be silently ignored), and every error
names the file and the key path, e.g. ``models[1].generation.num_beams``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from aigc_eval.backends.base import GenerationSettings
from aigc_eval.errors import UserError
from aigc_eval.features import BACKBONE_NAMES
from aigc_eval.metrics.registry import metric_names, options_model, output_names
from aigc_eval.metrics.tokenize import normalize_lang

# Suite, row and task names become folder and file names in the run folder: no separators, no `..`.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_SAFE_NAME_RULE = "must start with a letter or digit and hold only letters, digits and . _ + -"

# aigc_eval.features' backbone names, kept here so validating a suite does not import torch
# (tests/test_preflight.py checks that the two lists agree).


def _safe_name(value: str) -> str:
    if not SAFE_NAME.fullmatch(value):
        raise ValueError(f"{value!r} {_SAFE_NAME_RULE} (names become file names in the run folder)")
    return value


SafeName = Annotated[str, AfterValidator(_safe_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Generation(_Strict):
    max_new_tokens: int = Field(64, ge=1)
    num_beams: int = Field(1, ge=1)
    do_sample: bool = False
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(50, ge=0)
    repetition_penalty: float = Field(1.0, gt=0)
    early_stopping: bool = False
    seed: int = 0
    stop: list[str] = Field(default_factory=list)

    def settings(self) -> GenerationSettings:
        return GenerationSettings(**{**self.model_dump(), "stop": tuple(self.stop)})


class ModelRow(_Strict):
    """One row of the comparison: a model plus its decoding settings, and/or the images it made.

    ``backend: images`` rows are image generators evaluated from folders they wrote: they need
    no ``path`` and take part in image tasks only.
    """

    name: SafeName
    backend: Literal["hf", "images"] = "hf"
    path: str | None = None
    images: dict[str, str] = Field(default_factory=dict)  # image task name -> generated images
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"
    batch_size: int = Field(8, ge=1)
    trust_remote_code: bool = False
    chat: bool = False
    system: str | None = None
    # PyTorch's fused tanh-GELU for GPT-2-style activations: same function up to float rounding.
    fused_activations: bool = True
    generation: Generation = Field(default_factory=Generation)

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value not in ("auto", "cpu", "mps", "cuda") and not value.startswith("cuda:"):
            raise ValueError("must be auto, cpu, mps, cuda or cuda:N")
        return value

    @model_validator(mode="after")
    def _path_for_models(self) -> ModelRow:
        if self.backend == "hf" and self.path is None:
            raise ValueError("path: required for backend hf (a local model folder or a hub id)")
        return self

    def load_key(self) -> tuple[Any, ...]:
        """Rows with the same key share one loaded model."""
        return (
            self.backend,
            self.path,
            self.revision,
            self.dtype,
            self.device,
            self.trust_remote_code,
            self.fused_activations,
        )


IMAGE_METRICS = ("fid", "kid", "is", "precision", "recall", "density", "coverage", "cmmd", "fid_inf")


class Task(_Strict):
    """A text task (a dataset file, its prompt template and reference fields) or an image task
    (a reference image set; each model row names its generated images under ``images``)."""

    name: SafeName
    kind: Literal["text", "image"] = "text"
    data: str | None = None
    # Image tasks: the reference set (folder, list file or .npz statistics) and how to score it.
    reference: str | None = None
    backbone: Literal[BACKBONE_NAMES] = "inception-v3-tf"  # type: ignore[valid-type]
    backbone_path: str | None = None
    image_metrics: list[Literal[IMAGE_METRICS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["fid", "kid"], min_length=1
    )
    skip_corrupt: bool = False
    format: Literal["auto", "jsonl", "csv", "tsv", "text"] = "auto"
    prompt: str = "{prompt}"
    references: list[str] = Field(default_factory=lambda: ["reference"], min_length=1)
    id_field: str | None = None
    lang: str | None = None
    limit: int | None = Field(None, ge=1)

    @field_validator("lang")
    @classmethod
    def _known_lang(cls, value: str | None) -> str | None:
        # A misspelt language would silently pick the wrong BLEU/TER/ROUGE tokenizers.
        return None if value is None else normalize_lang(value)

    @model_validator(mode="after")
    def _inputs_for_kind(self) -> Task:
        if self.kind == "text" and self.data is None:
            raise ValueError("data: required for a text task (a .jsonl, .csv, .tsv or .txt file)")
        if self.kind == "image" and self.reference is None and self.image_metrics != ["is"]:
            raise ValueError("reference: required for an image task (an image folder, list file or .npz)")
        return self


class MetricSpec(_Strict):
    """A metric name and its options (validated by that metric's own Options model)."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_short_form(cls, value: Any) -> Any:
        # `- bleu` or `- {name: chrf, word_order: 2}` are both accepted.
        if isinstance(value, str):
            return {"name": value}
        if isinstance(value, dict) and "options" not in value:
            return {"name": value.get("name"), "options": {k: v for k, v in value.items() if k != "name"}}
        return value

    @model_validator(mode="after")
    def _known_metric(self) -> MetricSpec:
        if self.name not in metric_names():
            raise ValueError(f"unknown metric {self.name!r}; known metrics: {', '.join(metric_names())}")
        try:
            options_model(self.name).model_validate(self.options)
        except ValidationError as error:
            problems = "; ".join(f"{_key_path(e['loc'])}: {_message(e)}" for e in error.errors())
            raise ValueError(f"{self.name} options: {problems}") from None
        return self

    def label(self) -> str:
        return self.name


class Intervals(_Strict):
    """Bootstrap confidence intervals on every corpus score (sacrebleu's method and default seed)."""

    n_resamples: int = Field(1000, ge=0)  # 0 turns intervals off
    confidence: float = Field(0.95, gt=0, lt=1)
    seed: int = 12345


class RegressionRule(_Strict):
    """When a metric counts as regressed: worse by more than ``min_delta`` and significant."""

    metric: str = "*"  # an output name (bleu, rouge1, ref_perplexity, ...) or * for all
    task: str = "*"
    higher_is_better: bool | None = None  # None: the metric's own direction
    min_delta: float = Field(0.0, ge=0)
    relative: bool = False  # min_delta as a fraction of the baseline value
    alpha: float | None = Field(None, gt=0, lt=1)  # None: the section's alpha


class Regression(_Strict):
    """The CI gate: paired tests per task × metric, corrected across the comparison."""

    alpha: float = Field(0.05, gt=0, lt=1)
    test: Literal["ar", "bootstrap"] = "ar"  # paired approximate randomization or paired bootstrap
    # AR trials equal to the observed difference count against it ("count", Riezler & Maxwell's >=),
    # or only strictly larger ones ("strict": sacrebleu's --paired-ar p-values exactly, but a rerun
    # differing in one sample then gets the minimum p-value).
    ties: Literal["count", "strict"] = "count"
    n_trials: int | None = Field(None, ge=1)  # default: 10,000 for ar, 1,000 for bootstrap
    seed: int = 12345
    correction: Literal["holm", "bh", "none"] = "holm"
    # A model row of this suite: every other row is tested against it and the run's tables mark
    # significant differences (▲ better / ▼ worse).
    baseline: str | None = None
    rules: list[RegressionRule] = Field(default_factory=lambda: [RegressionRule()])


class Suite(_Strict):
    name: SafeName
    description: str = ""
    seed: int = 0
    intervals: Intervals = Field(default_factory=Intervals)
    regression: Regression = Field(default_factory=Regression)
    models: list[ModelRow] = Field(min_length=1)
    tasks: list[Task] = Field(min_length=1)
    metrics: list[MetricSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _images_name_image_tasks(self) -> Suite:
        image_tasks = {t.name for t in self.tasks if t.kind == "image"}
        for index, row in enumerate(self.models):
            unknown = sorted(set(row.images) - image_tasks)
            if unknown:
                raise ValueError(
                    f"models[{index}].images: {unknown} are not image tasks; "
                    f"image tasks: {sorted(image_tasks)}"
                )
        return self

    @model_validator(mode="after")
    def _known_baseline_row(self) -> Suite:
        rows = [m.name for m in self.models]
        if self.regression.baseline is not None and self.regression.baseline not in rows:
            raise ValueError(f"regression.baseline {self.regression.baseline!r} is not a model row: {rows}")
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> Suite:
        for kind, items in (("models", self.models), ("tasks", self.tasks)):
            names = [item.name for item in items]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"{kind} names must be unique; repeated: {', '.join(duplicates)}")
        return self

    @model_validator(mode="after")
    def _unique_metric_outputs(self) -> Suite:
        """Two entries writing the same score name (``chrf++`` and ``{name: chrf, word_order: 2}``)
        would overwrite each other in every table: refuse them before anything runs."""
        first: dict[str, int] = {}
        for index, spec in enumerate(self.metrics):
            try:
                names = output_names(spec.name, spec.options)
            except UserError as error:
                raise ValueError(f"metrics[{index}]: {' '.join(str(error).split())}") from None
            for name in names or ():
                if name in first:
                    raise ValueError(
                        f"metrics[{index}]: outputs {name!r}, as metrics[{first[name]}] does; "
                        "remove one of the entries or change its options"
                    )
                first[name] = index
        return self

    def config_hash(self) -> str:
        return stable_hash(self.model_dump(mode="json"))


def stable_hash(value: Any) -> str:
    """sha256 of a canonical JSON form: equal configs hash equal across runs and machines."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _key_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("options",) or str(part).startswith(("function-", "list[", "dict[")):
            continue
        else:
            path += f".{part}" if path else str(part)
    return path or "(top level)"


def _message(item: Any) -> str:
    if item["type"] == "extra_forbidden":
        return "unknown key; remove it or check its spelling"
    if item["type"] == "missing":
        return "required key is missing"
    return item["msg"].removeprefix("Value error, ")


def _format_errors(source: str, error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        path, message = _key_path(item["loc"]), _message(item)
        # A validator naming the key it checks: `data: ...`, or `models[1].images: ...` at the top level.
        key = re.match(r"^(\w+(?:\[\d+\])?(?:\.\w+)*): ", message)
        if key and item["type"] == "value_error":
            top = path == _key_path(())
            path, message = key.group(1) if top else f"{path}.{key.group(1)}", message[key.end() :]
        lines.append(f"{source}: {path}: {message}")
    return "\n".join(lines)


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a key given twice in one mapping (plain YAML keeps the last,
    silently dropping the first setting)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # keys merged in (`<<: *anchor`) may be overridden, as YAML intends
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first given on line {seen[key]}); keep one of them",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def read_yaml(text: str) -> Any:
    """Parse YAML as ``yaml.safe_load`` does, except that duplicate keys are errors."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: safe_load's semantics


def parse_suite(data: Any, source: str = "<suite>") -> Suite:
    """Validate an already-parsed mapping; errors name ``source`` and the key path."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: a suite must be a YAML mapping with name, models, tasks and metrics")
    try:
        return Suite.model_validate(data)
    except ValidationError as error:
        raise UserError(_format_errors(source, error)) from None


def load_suite(path: str | Path) -> tuple[Suite, Path]:
    """Read and validate a suite file; returns it with the folder relative paths resolve against."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"{path}: suite file not found; pass the path of a YAML file such as suites/demo.yaml"
        )
    try:
        data = read_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; save the suite as UTF-8") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise UserError(f"{path}: malformed YAML{where}: {problem}") from None
    return parse_suite(data, str(path)), path.resolve().parent
