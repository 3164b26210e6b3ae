"""Result tables as files: a CSV with a fixed float format, and a JSON sidecar that says what
produced it.

Every chapter writes its result tables under ``book/_build/html/results/`` (the built book's
own folder, so the pages can link to them), one file set per table, named
``<chapter>_<table>``:

- ``<chapter>_<table>.csv``: the table, floats written with ``significant`` significant digits
  (``%.6g`` by default), ``NaN`` for any missing value, ``0`` for negative zero, ``\\n``
  line ends, UTF-8;
- ``<chapter>_<table>.json`` (with ``records=True``): the same rows as a JSON list of objects,
  with the numbers the CSV shows;
- ``<chapter>_<table>.meta.json``: the sidecar, with the chapter's parameters, the weights of
  every model (kind and sha256, or the seed of untrained weights), the probe (name and content
  hash), the software versions, the columns, the row count and the CSV's sha256.

Nothing in these files depends on the time, the machine's paths or the order of a dict that
was not given in order, so the same table and metadata give byte-identical files: two builds
from the same feature cache give the same CSVs.

:func:`write_table` writes one table; :func:`results_dir` finds the folder; :func:`links_html`
is the list of links a chapter shows to its files.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import AnalysisUtilsError

#: significant digits of floats in the CSV and JSON files
DEFAULT_SIGNIFICANT = 6

#: where the results go, relative to the book's root (the folder holding ``_toc.yml``)
RESULTS_SUBDIR = Path("book") / "_build" / "html" / "results"

#: the environment variable that overrides the results folder
RESULTS_ENV = "ANALYSIS_UTILS_RESULTS"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class WrittenTable:
    """The files of one written table."""

    stem: str
    csv: Path
    sidecar: Path
    json: Path | None = None


def results_dir(directory: str | os.PathLike | None = None) -> Path:
    """The folder for result files, created if needed.

    ``directory`` if given; else ``$ANALYSIS_UTILS_RESULTS``; else ``book/_build/html/results``
    under the book's root, the first folder from the working directory upwards that holds
    ``_toc.yml`` (chapters run in ``book/notebooks``, so this finds the repository).
    """
    if directory is None and os.environ.get(RESULTS_ENV):
        directory = os.environ[RESULTS_ENV]
    if directory is None:
        here = Path.cwd().resolve()
        root = next((folder for folder in (here, *here.parents)
                     if (folder / "_toc.yml").is_file()), None)
        if root is None:
            raise AnalysisUtilsError(
                f"Could not find the book (no _toc.yml in {here} or any folder above it); "
                f"pass directory=<folder> or set {RESULTS_ENV}."
            )
        directory = root / RESULTS_SUBDIR
    path = Path(directory).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def table_stem(chapter: str, table: str) -> str:
    """``<chapter>_<table>``, for example ``02_dynamics_table2``; names are checked."""
    for what, name in (("chapter", chapter), ("table", table)):
        if not isinstance(name, str) or not _NAME.match(name):
            raise AnalysisUtilsError(
                f"The {what} name must be letters, digits, '_' or '-' (starting with a letter "
                f"or digit), such as '02_dynamics' or 'table2', got {name!r}."
            )
    return f"{chapter}_{table}"


# --------------------------------------------------------------------------------------------
# cells
# --------------------------------------------------------------------------------------------


def format_float(value: float, significant: int = DEFAULT_SIGNIFICANT) -> str:
    """A float as the CSV writes it: ``%.<significant>g``; "NaN", "inf", "-inf"; zero as "0"."""
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0.0:
        return "0"  # also negative zero
    return f"{value:.{significant}g}"


def _cell(value, significant: int, where: str):
    """(CSV text, JSON value) of one cell."""
    if value is None or value is pd.NA or value is pd.NaT:
        return "NaN", None  # missing, as pandas shows a missing string (NaN)
    if isinstance(value, (bool, np.bool_)):
        return ("True", True) if value else ("False", False)
    if isinstance(value, (int, np.integer)):
        return str(int(value)), int(value)
    if isinstance(value, (float, np.floating)):
        text = format_float(value, significant)
        return text, (float(text) if math.isfinite(float(value)) else None)
    if isinstance(value, str):
        return value, value
    raise AnalysisUtilsError(
        f"Every cell of a result table must be a number, a string, a bool or empty; {where} "
        f"holds a {type(value).__name__}. Turn it into one of those first."
    )


def _check_significant(significant) -> int:
    if isinstance(significant, bool) or not isinstance(significant, int) \
            or not 1 <= significant <= 17:
        raise AnalysisUtilsError(
            f"significant must be an integer from 1 to 17, got {significant!r}."
        )
    return significant


def _cells(frame: pd.DataFrame, significant: int) -> tuple[list[str], list[list], list[list]]:
    """Column names, CSV texts per row, JSON values per row."""
    if not isinstance(frame, pd.DataFrame):
        raise AnalysisUtilsError(
            f"A result table must be a pandas DataFrame, got {type(frame).__name__}."
        )
    columns = [str(c) for c in frame.columns]
    if len(set(columns)) != len(columns):
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        raise AnalysisUtilsError(
            f"A result table needs distinct column names, but these repeat: {', '.join(repeated)}."
        )
    texts, values = [], []
    for position, row in enumerate(frame.itertuples(index=False, name=None)):
        pairs = [_cell(v, significant, f"row {position}, column {c!r}")
                 for c, v in zip(columns, row)]
        texts.append([p[0] for p in pairs])
        values.append([p[1] for p in pairs])
    return columns, texts, values


def format_csv(frame: pd.DataFrame, significant: int = DEFAULT_SIGNIFICANT) -> str:
    """The CSV text of ``frame`` (its columns, not its index): floats as
    :func:`format_float`, integers, bools and strings as they are, "NaN" for any missing
    value (None, NaN, pd.NA)."""
    columns, texts, _ = _cells(frame, _check_significant(significant))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(texts)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# metadata
# --------------------------------------------------------------------------------------------


def jsonable(value, where: str = "parameters"):
    """``value`` as plain JSON types: dicts (string keys), lists, strings, numbers, bools,
    None. Tuples become lists, paths strings, numpy scalars numbers, NaN None; a dataclass
    (such as ``book.ChapterParameters``) becomes a dict."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise AnalysisUtilsError(
        f"{where} holds a {type(value).__name__}, which cannot be written to JSON; pass "
        "numbers, strings, lists or dicts."
    )


def provenance(extraction: Mapping | None) -> dict:
    """Weights and probes from the chapters' extraction metadata ``{model: metadata}`` (the
    second value of ``extract.features``): ``{"weights": {model: {kind, sha256 or seed}},
    "probes": [{name, content_hash, n_images, n_categories, images_per_category}]}``. Paths
    are left out: the hashes name the files."""
    if extraction is None:
        return {"weights": {}, "probes": []}
    if not isinstance(extraction, Mapping):
        raise AnalysisUtilsError(
            "extraction must be the dict {model: metadata} of extract.features results, got "
            f"{type(extraction).__name__}."
        )
    weights, probes = {}, []
    for model, meta in extraction.items():
        if not isinstance(meta, Mapping) or "weights" not in meta or "probe" not in meta:
            raise AnalysisUtilsError(
                f"extraction[{model!r}] must be the metadata dict of extract.features (with "
                "'weights' and 'probe')."
            )
        weights[str(model)] = jsonable({k: v for k, v in meta["weights"].items()
                                        if k != "path"}, f"extraction[{model!r}]['weights']")
        probe = jsonable({k: v for k, v in meta["probe"].items() if k != "source"},
                         f"extraction[{model!r}]['probe']")
        if probe not in probes:
            probes.append(probe)
    return {"weights": weights, "probes": probes}


def _dumps(value, sort_keys: bool) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False,
                      sort_keys=sort_keys) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same folder."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(text.encode("utf-8"))
    os.replace(temporary, path)


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def write_table(frame: pd.DataFrame, chapter: str, table: str, *, parameters=None,
                extraction: Mapping | None = None, directory: str | os.PathLike | None = None,
                significant: int = DEFAULT_SIGNIFICANT, records: bool = False,
                index: bool = False) -> WrittenTable:
    """Write ``frame`` as ``<chapter>_<table>.csv`` (and ``.json`` with ``records=True``) plus
    the sidecar ``<chapter>_<table>.meta.json``, in :func:`results_dir` (``directory``).

    ``parameters``: the chapter's parameters (a dict, or ``book.ChapterParameters``) and
    anything else that changes the numbers (seeds, n_boot, ...); ``extraction``: ``{model:
    metadata}`` from ``extract.features``, for the weights hashes and the probe; ``index=True``
    writes the index as the first column(s) (for example an RSA matrix indexed by tag).
    Identical input gives byte-identical files.
    """
    from .book import software_versions

    stem = table_stem(chapter, table)
    significant = _check_significant(significant)
    if not isinstance(frame, pd.DataFrame):
        raise AnalysisUtilsError(
            f"A result table must be a pandas DataFrame, got {type(frame).__name__}."
        )
    if index:
        frame = frame.reset_index()
    folder = results_dir(directory)
    text = format_csv(frame, significant)
    written = {"csv": folder / f"{stem}.csv", "sidecar": folder / f"{stem}.meta.json"}
    files = {"csv": written["csv"].name}
    if records:
        columns, _, values = _cells(frame, significant)
        written["json"] = folder / f"{stem}.json"
        files["json"] = written["json"].name
    sidecar = {
        "chapter": chapter,
        "table": table,
        "files": files,
        "csv_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "columns": [str(c) for c in frame.columns],
        "rows": int(len(frame)),
        "float_format": f"%.{significant}g",
        "parameters": jsonable({} if parameters is None else parameters),
        **provenance(extraction),
        "software": jsonable(software_versions(), "software"),
    }
    sidecar_text = _dumps(sidecar, sort_keys=True)  # checked before any file is written
    _write_atomic(written["csv"], text)
    if records:
        _write_atomic(written["json"], _dumps([dict(zip(columns, row)) for row in values],
                                              sort_keys=False))
    _write_atomic(written["sidecar"], sidecar_text)
    return WrittenTable(stem=stem, csv=written["csv"], sidecar=written["sidecar"],
                        json=written.get("json"))


def links_html(tables: Sequence[WrittenTable], page_dir: str | os.PathLike | None = None) -> str:
    """An HTML list of links to ``tables``' files, relative to the folder of the page that shows
    them (default: ``book/notebooks`` inside the built HTML, where the chapters are), so the
    links work wherever the built book is copied."""
    if isinstance(tables, WrittenTable):
        tables = [tables]
    if not tables or not all(isinstance(t, WrittenTable) for t in tables):
        raise AnalysisUtilsError("Pass the WrittenTable results of write_table (at least one).")
    if page_dir is None:
        page_dir = tables[0].csv.parent.parent / "book" / "notebooks"
    items = []
    for written in tables:
        files = [("CSV", written.csv)] + ([("JSON", written.json)] if written.json else []) \
            + [("parameters and versions", written.sidecar)]
        links = ", ".join(
            f'<a href="{Path(os.path.relpath(path, page_dir)).as_posix()}">{label}</a>'
            for label, path in files)
        items.append(f"<li><code>{written.stem}</code>: {links}</li>")
    return "<ul>\n" + "\n".join(items) + "\n</ul>"
