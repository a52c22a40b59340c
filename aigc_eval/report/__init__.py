"""Human-facing outputs built from a run folder's results."""
