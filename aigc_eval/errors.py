"""Error types and exit codes shared by every layer; only the CLI turns them into exits."""

from __future__ import annotations

from pathlib import Path

# 0 ok, 1 a regression found, 2 a user error, 3 the tool itself broke (report it).
EXIT_OK, EXIT_REGRESSION, EXIT_USER_ERROR, EXIT_INTERNAL_ERROR = 0, 1, 2, 3

# Set on any exception that escapes a run after its run folder exists, so the CLI can write the
# traceback there (``internal-error.log``) and tell the user how to resume.
RUN_DIR_ATTRIBUTE = "aigc_eval_run_dir"


class UserError(Exception):
    """Bad input (config, file, option). The CLI prints the message and exits 2.

    The message names the file or key at fault and says how to fix it.
    """


def attach_run_dir(error: BaseException, run_dir: Path) -> None:
    """Remember which run folder an escaping error belongs to (first one wins)."""
    if getattr(error, RUN_DIR_ATTRIBUTE, None) is None:
        setattr(error, RUN_DIR_ATTRIBUTE, run_dir)
