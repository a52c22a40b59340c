"""Human-facing outputs built from a run record: tables, report.html and the leaderboard.

Module map: ``formatting`` (numbers and intervals in words), ``tables`` (markdown/CSV/pandas; the
table.md and table.csv writers), ``shell`` (templates, assets, escaping, CSP), ``sections`` (the
report's tables), ``charts`` (SVG geometry), ``diff`` and ``browser`` (the sample browser),
``thumbnails`` (image sets), ``html`` (report.html and its writer), ``board`` and ``leaderboard``
(across runs), ``compare`` (the compare command's outputs). Writers are looked up through
``aigc_eval.outputs``, which imports none of these until one is used.
"""
