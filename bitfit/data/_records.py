"""A data file's records: its text decoded strictly as UTF-8, CSV and TSV lines checked field by
field, JSON arrays and lines, Parquet; each refusal names the file and the line or row at fault."""

from __future__ import annotations

import codecs
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa

TEST_SPLIT = "test"  # a custom task's --test-file: scored by the final evaluation only


class DataSourceError(OSError):
    """A task's data could not be found or read."""


@dataclass(frozen=True)
class _Split:
    """A split as read, and how messages name its source.

    The frame's index holds each record's place in the source, named for its unit (``line`` of a
    text file, ``row`` of an array, a Parquet file or the Hub), so that a refusal can point at it.
    """

    frame: pd.DataFrame
    source: str  # e.g. "dev file 'dev.csv'"


_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}


def _read_text(p: Path, source: str) -> str:
    """The file's text, decoded strictly as UTF-8 (a leading byte-order mark is dropped)."""
    try:
        data = p.read_bytes()
    except OSError as err:
        raise DataSourceError(f"{source} could not be read ({err.strerror}): check its "
                              f"permissions") from None
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[bom:].decode("utf-8")
    except UnicodeDecodeError as err:
        # The codec's own message names no file and counts from after the byte-order mark.
        offset = bom + err.start
        line = data.count(b"\n", 0, offset) + 1
        raise DataSourceError(
            f"{source} is not valid UTF-8 (byte 0x{data[offset]:02x} at offset {offset}, line "
            f"{line}): save it as UTF-8"
        ) from None
    if not text.strip():
        raise DataSourceError(f"{source} is empty: point to the file that holds the data")
    return text


def _lines(text: str) -> list[str]:
    # The line breaks that csv and pandas break on (\n, \r\n, \r), not str.splitlines' extras.
    return [line.rstrip("\r\n") for line in io.StringIO(text, newline="")]


def _tsv_records(text: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of each non-empty line; quotes are ordinary characters in a TSV."""
    return [(n, line.split("\t")) for n, line in enumerate(_lines(text), 1) if line]


def _csv_records(text: str, source: str) -> list[tuple[int, list[str]]]:
    """(first line, fields) of each CSV record, as CSV readers read them: a quoted field may hold
    commas, doubled quotes and line breaks.

    The reader is strict, so a stray ``"`` that opens a quoted field is refused at its line
    instead of silently swallowing the lines up to the next quote: such a field ends at the end
    of the file or at a quote with more text after it, both errors in strict CSV.
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for fields in reader:
            if fields:  # csv gives [] for an empty line
                records.append((start, fields))
            start = reader.line_num + 1
    except csv.Error as err:  # a field past csv's size limit, a quote left open, or stray text
        if reader.line_num <= start:
            raise ValueError(f"{source} line {start} cannot be read as CSV ({err}): quote the "
                             f"field whole (\"...\", with any quote in it doubled) or fix that "
                             f"line") from None
        reach = ("to the end of the file" if "unexpected end of data" in str(err)
                 else f"to line {reader.line_num}, where it closes with more text after it")
        raise ValueError(_runaway_quote(source, start, reach)) from None
    return records


def _runaway_quote(source: str, line: int, reach: str) -> str:
    return (f"{source} has a quoted field that starts on line {line} and runs on {reach}: balance "
            f"or remove the '\"' on line {line} (a field that spans lines is quoted whole)")


def _table(
    records: list[tuple[int, list[str]]], source: str, sep: str, *, header: bool = True
) -> pd.DataFrame:
    """A frame of text records indexed by line, every line holding as many fields as the first."""
    kind = "tab" if sep == "\t" else "comma"
    first_line, first = records[0]
    rows = records[1:] if header else records
    if header:
        duplicate = next((c for i, c in enumerate(first) if c in first[:i]), None)
        if duplicate is not None:
            raise ValueError(f"{source} has the column {duplicate!r} twice in its header: give "
                             f"every column its own name")
        if not rows:
            raise DataSourceError(f"{source} has a header row but no data rows: point to the "
                                  f"file that holds the data")
    against = "the header" if header else f"line {first_line}"
    for line, fields in rows:
        if len(fields) != len(first):
            raise ValueError(
                f"{source} line {line} has {len(fields)} {kind}-separated "
                f"field{'' if len(fields) == 1 else 's'} but {against} has {len(first)}: "
                f"{_field_count_fix(kind, len(fields) > len(first))}"
            )
    columns = first if header else list(range(len(first)))
    index = pd.Index([line for line, _ in rows], name="line")
    return pd.DataFrame([fields for _, fields in rows], columns=columns, index=index)


def _field_count_fix(kind: str, too_many: bool) -> str:
    if not too_many:
        return "add the missing fields (a line break inside a field also splits a row)"
    if kind == "comma":
        return 'put text that holds commas in double quotes ("a, b")'
    return "remove the extra tabs (text in a TSV cannot hold a tab)"


def _read_json(text: str, source: str, suffix: str) -> pd.DataFrame:
    """Records of a JSON array (``row`` numbers) or of JSON lines (``line`` numbers)."""
    if suffix == ".json" and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataSourceError(
                f"{source} is not valid JSON ({err.msg} at line {err.lineno}, column "
                f"{err.colno}): fix it, or write one JSON object per line"
            ) from None
        places, unit = list(range(1, len(records) + 1)), "row"
    else:
        records, places, unit = [], [], "line"
        for n, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataSourceError(
                    f"{source} line {n} is not valid JSON ({err.msg} at column {err.colno}): "
                    f"write one JSON object per line, or a JSON array of objects in a .json file"
                ) from None
            places.append(n)
    for place, record in zip(places, records, strict=True):
        if not isinstance(record, dict):
            raise ValueError(
                f"{source} {unit} {place} holds {_JSON_KINDS.get(type(record), 'a value')} "
                f"instead of an object: write each record as an object with one key per column"
            )
    return _with_rows(pd.DataFrame(records, index=pd.Index(places, name=unit)), source)


def _read_parquet(p: Path, source: str) -> pd.DataFrame:
    if p.stat().st_size == 0:
        raise DataSourceError(f"{source} is empty: point to the file that holds the data")
    try:
        frame = pd.read_parquet(p)
    except (pa.ArrowException, OSError, ValueError) as err:
        # Arrow's reason spans sentences; it stays on the chain for whoever debugs.
        raise DataSourceError(
            f"{source} could not be read as Parquet (it is damaged or not a Parquet file): "
            f"write it again, for example with pandas.DataFrame.to_parquet"
        ) from err
    frame.index = pd.RangeIndex(1, len(frame) + 1, name="row")
    return _with_rows(frame, source)


def _with_rows(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    if frame.empty:
        raise DataSourceError(f"{source} holds no records: point to the file that holds the data")
    return frame
