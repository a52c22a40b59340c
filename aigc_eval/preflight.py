"""Plan-time checks: everything about a suite that can fail is checked before the first model loads.

A run that dies after an hour of generation on a typo in the last metric entry wastes the hour;
these checks read only small files (``config.json``, file listings), never weights. Each error
names the suite file and the key at fault, e.g. ``suite.yaml: models[1].path: ...``.
"""

from __future__ import annotations

import os
from pathlib import Path

from aigc_eval.backends import DEFAULT_BACKEND, backend_class, capabilities, scorer_row, with_capability
from aigc_eval.config import MetricSpec, ModelRow, Suite, local_path, looks_like_path
from aigc_eval.errors import UserError
from aigc_eval.metrics.registry import metric_class

__all__ = ["check_capabilities", "check_plan", "check_suite", "local_path", "looks_like_path"]
_TRUE = ("1", "true", "yes", "on")


def _scores(spec: MetricSpec) -> bool:
    return metric_class(spec.name).needs_scorer


def check_suite(suite: Suite, source: str) -> None:
    """Checks that need no files: what the suite's entries refer to exists in the suite, and every
    row's backend can do what the suite asks of it."""
    rows = [row.name for row in suite.models if capabilities(row.backend).loglikelihood]
    names = {row.name for row in suite.models}
    for index, spec in enumerate(suite.metrics):
        name = spec.options.get("model") if _scores(spec) else None
        if name is not None and name not in names and not looks_like_path(name) and "/" not in name:
            raise UserError(
                f"{source}: metrics[{index}].model: {name!r} is neither a model row ({', '.join(rows)}) "
                "nor a path; name a row, or a model folder such as ./models/scorer"
            )
    check_capabilities(suite, source)


def _requests(row: ModelRow, suite: Suite) -> list[tuple[str, str, str]]:
    """(capability, what asks for it, how to stop asking) for a row that generates."""
    asked: list[tuple[str, str, str]] = []
    settings = getattr(row, "generation", None)  # the decoding settings of a generating backend's row
    if settings is not None and settings.num_beams > 1:
        asked.append(("beam_search", f"generation.num_beams: {settings.num_beams}", "set num_beams: 1"))
    if settings is not None and settings.do_sample:
        asked.append(("sampling", "generation.do_sample: true", "set do_sample: false"))
    if getattr(row, "chat", False):
        asked.append(("chat_templates", "chat: true", "set chat: false"))
    for index, spec in enumerate(suite.metrics):
        if _scores(spec) and spec.options.get("model") is None:
            asked.append(
                (
                    "loglikelihood",
                    f"metrics[{index}] ({spec.name}, scored by each row's own model)",
                    "name a scoring model with that metric's `model:`",
                )
            )
    return asked


def check_capabilities(suite: Suite, source: str) -> None:
    """Every row's backend can do what the suite asks (beam search, sampling, chat templates,
    log-likelihoods, generation): a mismatch fails here, naming the row and the fix."""
    text_tasks = any(task.kind == "text" for task in suite.tasks)
    for index, row in enumerate(suite.models):
        where = f"{source}: models[{index}] ({row.name}): backend {row.backend!r}"
        can = capabilities(row.backend)
        if not can.generate:
            if not row.images:
                raise UserError(
                    f"{where} cannot generate text and the row names no `images`, so it takes part in no "
                    f"task; give its images per image task, or use a backend that generates "
                    f"({', '.join(with_capability('generate'))})"
                )
            continue  # rows that do not generate take part in image tasks only
        if not text_tasks:
            continue
        for capability, asker, fix in _requests(row, suite):
            if not getattr(can, capability):
                able = ", ".join(with_capability(capability)) or "none installed"
                raise UserError(
                    f"{where} cannot do {capability.replace('_', ' ')}, which {asker} asks for; "
                    f"{fix}, or use a backend that can ({able})"
                )
    rows = {row.name: (index, row) for index, row in enumerate(suite.models)}
    for index, spec in enumerate(suite.metrics):
        name = spec.options.get("model") if _scores(spec) else None
        if name in rows and not capabilities(rows[name][1].backend).loglikelihood:
            row_index, row = rows[name]
            raise UserError(
                f"{source}: metrics[{index}].model: row {name!r} (models[{row_index}]) uses backend "
                f"{row.backend!r}, which cannot score texts (loglikelihood); name a row whose backend can "
                f"({', '.join(with_capability('loglikelihood'))}) or a model folder"
            )


def check_plan(suite: Suite, base_dir: Path, source: str) -> None:
    """Everything checkable before generating: capabilities, model folders, contexts, scoring
    models, modules. Each backend checks its own rows (``Backend.check_row``)."""
    check_suite(suite, source)
    contexts: dict[str, int | None] = {}  # generating row name -> context length (None: unknown)
    for index, row in enumerate(suite.models):

        def where(option: str, index: int = index) -> str:
            return f"{source}: models[{index}].{option}"

        context = backend_class(row.backend).check_row(row, base_dir, where)
        if not capabilities(row.backend).generate:
            continue
        contexts[row.name] = context
        settings = getattr(row, "generation", None)
        if context is not None and settings is not None and settings.max_new_tokens >= context:
            raise UserError(
                f"{where('generation.max_new_tokens')}: {settings.max_new_tokens} "
                f"leaves no room for a prompt in the model's {context}-token context; lower it"
            )
    for index, spec in enumerate(suite.metrics):
        where = f"{source}: metrics[{index}]"
        if _scores(spec):
            _check_scoring_model(spec, contexts, base_dir, where)
        if spec.name == "evaluate":
            _check_evaluate_module(spec, base_dir, where)


def _check_scoring_model(
    spec: MetricSpec, contexts: dict[str, int | None], base_dir: Path, where: str
) -> None:
    """The ``model:`` of a perplexity entry exists, and ``max_length`` fits every model it scores with."""
    name = spec.options.get("model")
    if name is None:
        scorers = contexts  # each row scores with its own model
    elif name in contexts:
        scorers = {name: contexts[name]}
    else:
        folder = local_path(name, base_dir)
        if not folder.exists():
            raise UserError(
                f"{where}.model: {name!r} is neither a model row nor an existing path "
                f"(relative paths resolve against {base_dir}); name a row or fix the path"
            )
        row = scorer_row(str(folder))
        scorers = {name: backend_class(DEFAULT_BACKEND).check_row(row, base_dir, lambda _: f"{where}.model")}
    max_length = spec.options.get("max_length")
    for scorer, context in scorers.items():
        if max_length is not None and context is not None and max_length > context:
            raise UserError(
                f"{where}.max_length: {max_length} is larger than the {context}-token context of "
                f"{scorer!r} (its config.json); set max_length to at most {context} or leave it out"
            )


def _check_evaluate_module(spec: MetricSpec, base_dir: Path, where: str) -> None:
    """The module is loaded now (it is cached for scoring), so a missing one fails before generating."""
    from aigc_eval.metrics.evaluate_module import EvaluateMetric

    module = spec.options["module"]
    local = local_path(module, base_dir)
    if not local.exists() and (module.endswith(".py") or looks_like_path(module)):
        raise UserError(
            f"{where}.module: {module!r} not found (relative paths resolve against {base_dir}); fix the path"
        )
    resolved = str(local.resolve()) if local.exists() else module
    options = EvaluateMetric.Options.model_validate({**spec.options, "module": resolved})
    try:
        EvaluateMetric(options).load_module()
    except UserError as error:
        offline = os.environ.get("HF_EVALUATE_OFFLINE", "").lower() in _TRUE
        hint = (
            "; HF_EVALUATE_OFFLINE is set, so hub modules cannot be downloaded: give a local module path"
            if offline and not local.exists()
            else ""
        )
        raise UserError(f"{where}.module: {error}{hint}") from None
