"""The suite schema: what a YAML file in ``suites/`` may say, validated strictly.

Unknown keys are errors (a typo must never be silently ignored), and every error
names the file and the key path, e.g. ``models[1].generation.num_beams``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    SerializeAsAny,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from aigc_eval.errors import UserError
from aigc_eval.features import backbones
from aigc_eval.metrics.registry import metric_class, metric_names, metrics, options_model, output_names
from aigc_eval.metrics.tokenize import normalize_lang

# Suite, row and task names become folder and file names in the run folder: no separators, no `..`.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_SAFE_NAME_RULE = "must start with a letter or digit and hold only letters, digits and . _ + -"


def _safe_name(value: str) -> str:
    if not SAFE_NAME.fullmatch(value):
        raise ValueError(f"{value!r} {_SAFE_NAME_RULE} (names become file names in the run folder)")
    return value


SafeName = Annotated[str, AfterValidator(_safe_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def looks_like_path(value: str) -> bool:
    """Written as a path (``./m``, ``/m``, ``~/m``, ``a/b/c``), not a hub id (``name``, ``org/name``)."""
    return value.startswith((".", "/", "~")) or value.count("/") > 1


def local_path(value: str, base_dir: Path) -> Path:
    """Where a relative path in the suite points: against the suite's folder, ``~`` expanded."""
    return base_dir / Path(value).expanduser()


def _known_device(value: str) -> str:
    if value not in ("auto", "cpu", "mps", "cuda") and not value.startswith("cuda:"):
        raise ValueError("must be auto, cpu, mps, cuda or cuda:N")
    return value


# A torch device setting (``files.resolve_device`` turns it into a device when a model loads).
Device = Annotated[str, AfterValidator(_known_device)]


class ModelRow(_Strict):
    """One row of the comparison: the fields every backend's row has.

    Each backend declares its own row model (a subclass with ``backend: Literal[name]`` and its
    options, e.g. ``backends.hf.HFRow``); a suite's ``models[i]`` is validated by the model of the
    backend it names (``parse_row``). ``images`` names the images a row made, per image task.
    """

    name: SafeName
    backend: str
    images: dict[str, str] = Field(default_factory=dict)  # image task name -> generated images

    # Options naming a file or folder, resolved against the suite's folder (``with_paths``).
    path_fields: ClassVar[tuple[str, ...]] = ()
    # Options that change what a row generates or scores but not the loaded model.
    per_call_fields: ClassVar[frozenset[str]] = frozenset({"name", "images", "generation"})

    def load_key(self) -> tuple[Any, ...]:
        """Rows with the same key share one loaded backend: every option but the per-call ones.

        A backend holds its row's options (batch size, chat template), so rows differing in any of
        them get their own backend; rows differing only in decoding settings share one.
        """
        options = self.model_dump(mode="json", exclude=set(self.per_call_fields))
        return (self.backend, json.dumps(options, sort_keys=True))

    def hash_form(self) -> dict[str, Any]:
        """This row as ``Suite.config_hash`` hashes it (its JSON dump)."""
        return self.model_dump(mode="json")

    def with_paths(self, resolve: Callable[[str], str]) -> Self:
        """A copy with every path option and image folder passed through ``resolve``."""
        update: dict[str, Any] = {"images": {task: resolve(p) for task, p in self.images.items()}}
        for name in self.path_fields:
            value = getattr(self, name)
            if isinstance(value, str):
                update[name] = resolve(value)
        return self.model_copy(update=update)


def _row_from_registry(value: Any) -> ModelRow:
    """Validate ``models[i]`` with the options model of the backend it names (default ``hf``), so a
    third-party backend's own options are checked as strictly as the built-in ones."""
    from aigc_eval.backends import DEFAULT_BACKEND, backends

    if isinstance(value, ModelRow):
        return value
    kind = value.get("backend", DEFAULT_BACKEND) if isinstance(value, dict) else DEFAULT_BACKEND
    if not isinstance(kind, str) or kind not in backends.names():
        raise ValueError(f"backend: unknown backend {kind!r}; known backends: {', '.join(backends.names())}")
    options = backends.get(kind).Options
    if not (isinstance(options, type) and issubclass(options, ModelRow)):
        raise TypeError(f"backend plug-in {kind!r}: its Options must subclass aigc_eval.config.ModelRow")
    return options.model_validate(value)


# A suite's ``models[i]``: dispatched on ``backend``, dumped as the backend's own row model.
AnyModelRow = SerializeAsAny[Annotated[ModelRow, PlainValidator(_row_from_registry)]]
_ROW_ADAPTER: TypeAdapter[ModelRow] = TypeAdapter(AnyModelRow)


def parse_row(data: Any, source: str = "<row>") -> ModelRow:
    """One model row outside a suite (a scoring model, the ``score`` CLI's ``--model``), validated
    as ``models[i]`` is; errors name ``source`` and the option."""
    try:
        return _ROW_ADAPTER.validate_python(data)
    except ValidationError as error:
        raise UserError(_format_errors(source, error)) from None


def _backbone(name: str) -> str:
    if name not in backbones:
        raise ValueError(f"unknown backbone {name!r}; known backbones: {', '.join(backbones.names())}")
    return name


def _image_metric(name: str) -> str:
    """A registered metric over per-image rows (``paired = False``): FID, KID, a plug-in's..."""
    if name not in metrics or metric_class(name).paired:
        known = [m for m in metric_names() if not metric_class(m).paired]
        raise ValueError(f"{name!r} is not an image metric; image metrics: {', '.join(known)}")
    return name


class Task(_Strict):
    """A text task (a dataset file, its prompt template and reference fields) or an image task
    (a reference image set; each model row names its generated images under ``images``)."""

    name: SafeName
    kind: Literal["text", "image"] = "text"
    data: str | None = None
    # Image tasks: the reference set (folder, list file or .npz statistics) and how to score it.
    reference: str | None = None
    backbone: Annotated[str, AfterValidator(_backbone)] = "inception-v3-tf"
    backbone_path: str | None = None
    image_metrics: list[Annotated[str, AfterValidator(_image_metric)]] = Field(
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
        text = [m for m in metric_names() if metric_class(m).paired]
        if self.name not in text:
            hint = "; image metrics go in an image task's image_metrics" if self.name in metrics else ""
            raise ValueError(f"unknown metric {self.name!r}; known metrics: {', '.join(text)}{hint}")
        try:
            options_model(self.name).model_validate(self.options)
        except ValidationError as error:
            problems = "; ".join(f"{_key_path(e['loc'])}: {_message(e)}" for e in error.errors())
            raise ValueError(f"{self.name} options: {problems}") from None
        return self


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
    models: list[AnyModelRow] = Field(min_length=1)
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
        """Hash of the whole suite, rows in their ``hash_form``: it names run folders and checks that
        ``--resume`` continues the same configuration."""
        return stable_hash({**self.model_dump(mode="json"), "models": [m.hash_form() for m in self.models]})


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
