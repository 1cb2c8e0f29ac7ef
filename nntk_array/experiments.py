"""The former home of the study: :mod:`nntk_array.study` now holds it; these names remain."""

from .study import StudyConfig, StudyResult, progress_printer, run_study

__all__ = ["StudyConfig", "StudyResult", "progress_printer", "run_study"]
