"""The single exception type for bad input.

Every check in the package raises :class:`AnalysisUtilsError` with one sentence that says what
was expected and how to fix it. It subclasses ``ValueError`` so callers that already catch
``ValueError`` keep working.
"""


class AnalysisUtilsError(ValueError):
    """A bad input: an unknown name, missing data, a wrong layout or a bad checkpoint."""


def choice_error(what: str, value, valid) -> AnalysisUtilsError:
    """An error for ``value`` not being one of ``valid``, listing the valid choices."""
    valid = list(valid)
    listed = ", ".join(repr(v) for v in valid)
    return AnalysisUtilsError(f"Unknown {what} {value!r}; expected one of: {listed}.")
