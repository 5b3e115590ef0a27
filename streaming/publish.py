"""Producers: the simulator and file replay, published to `transactions` keyed by customer."""

from __future__ import annotations

import gzip
import re
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from activity_settings import ActivityError, KafkaSettings
from streaming.producer import DeliveryReport, TransactionPublisher
from streaming.schema import PURCHASE, SCHEMA_VERSION, encode_trusted, format_event_time
from streaming.simulator import Population, simulate

if TYPE_CHECKING:
    import pandas as pd

Progress = Callable[[int], None]
CHUNK = 20_000


@dataclass(frozen=True)
class Pace:
    """How fast to send: unlimited, a fixed rate, or event time compressed by ``speedup``."""

    rate: float | None = None  # events per second
    speedup: float | None = None  # event-time seconds per wall-clock second

    def __post_init__(self) -> None:
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive")
        if self.speedup is not None and self.speedup <= 0:
            raise ValueError("speedup must be positive")


def _chunks(table: pa.Table, size: int) -> Iterator[pa.Table]:
    for offset in range(0, table.num_rows, size):
        yield table.slice(offset, size)


class _Pacer:
    def __init__(self, pace: Pace) -> None:
        self.pace = pace
        self.start = time.monotonic()
        self.sent = 0
        self.first_event_s: float | None = None

    def wait(self, chunk: pa.Table) -> None:
        if self.pace.rate is not None:
            due = self.start + self.sent / self.pace.rate
        elif self.pace.speedup is not None and chunk.num_rows and chunk["event_time"][0].is_valid:
            first_s = chunk["event_time"][0].as_py().timestamp()
            if self.first_event_s is None:
                self.first_event_s = first_s
            due = self.start + (first_s - self.first_event_s) / self.pace.speedup
        else:
            due = 0.0
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self.sent += chunk.num_rows


def publish_tables(
    kafka: KafkaSettings,
    tables: Iterable[pa.Table],
    encode: Callable[[pa.Table], list[bytes]],
    pace: Pace = Pace(),
    progress: Progress = lambda _: None,
    chunk_rows: int = CHUNK,
) -> DeliveryReport:
    """Encode and publish tables of contract columns in order; wait for every delivery."""
    publisher = TransactionPublisher(kafka, kafka.topics.transactions)
    pacer = _Pacer(pace)
    for table in tables:
        for chunk in _chunks(table, chunk_rows):
            pacer.wait(chunk)
            keys = pc.cast(chunk["customer_id"], pa.binary()).to_pylist()
            publisher.publish(encode(chunk), keys)
            progress(chunk.num_rows)
    return publisher.close()


def encode_simulated(table: pa.Table) -> list[bytes]:
    return pc.cast(encode_trusted(table), pa.binary()).to_pylist()


def publish_simulation(
    kafka: KafkaSettings,
    population: Population,
    first_day: int = 0,
    pace: Pace = Pace(),
    progress: Progress = lambda _: None,
    days: int | None = None,
) -> DeliveryReport:
    """Publish ``days`` days (default: all the rest) of the population from ``first_day`` on, in event-time order."""
    return publish_tables(kafka, simulate(population, first_day, days), encode_simulated, pace, progress)


# ---------------------------------------------------------------------------------------------
# Replay of real data


@dataclass(frozen=True)
class ColumnMapping:
    """Which input column holds each contract field; ``None`` = use the default."""

    customer_id: str
    event_time: str
    amount: str
    transaction_id: str | None = None
    currency: str | None = None
    merchant_id: str | None = None
    merchant_category: str | None = None
    channel: str | None = None


@dataclass(frozen=True)
class ReplayDefaults:
    currency: str = "EUR"
    merchant_id: str = "unknown"
    merchant_category: str = "other"
    channel: str = "other"
    timezone: str = "UTC"  # for timestamps without an offset
    time_format: str | None = None  # strptime format of the time column; None = recognized (see event_times)
    header: bool = True  # False: the file has no header row and its columns are named "1", "2", ...


class ReplayError(ActivityError, ValueError):
    """The input file cannot be replayed as mapped; the message names the column."""


def read_table(path: Path, header: bool = True) -> pd.DataFrame:
    """A parquet file, an Excel workbook (.xlsx), or a text file of columns (CSV) separated by commas,
    semicolons, tabs or runs of spaces, whichever its first line has; text columns are read as text
    (ids keep leading zeros).

    A workbook's sheets are one ledger split in parts (a sheet per year, as public retail exports
    come): every sheet is read, and all must have the first sheet's columns. Without a header row the
    columns are named by position from 1: "1", "2", ...
    """
    import pandas as pd

    if not path.is_file():
        raise ReplayError(f"{path}: no such file")
    compressed = path.suffix.lower() == ".gz"
    suffix = Path(path.stem).suffix.lower() if compressed else path.suffix.lower()
    if suffix in (".parquet", ".pq") and not compressed:
        return pd.read_parquet(path)
    if suffix == ".xlsx" and not compressed:
        return _read_workbook(path, header)
    if suffix not in (".csv", ".txt", ".tsv", ".dat"):
        raise ReplayError(f"{path}: expected a .csv, .tsv, .txt, .parquet or .xlsx file (or .csv.gz, ...)")
    with gzip.open(path, "rt", errors="replace") if compressed else path.open(errors="replace") as handle:
        first = handle.readline()
    separator = next((sep for sep in (",", ";", "\t") if sep in first), r"\s+")
    frame = pd.read_csv(path, sep=separator, header=0 if header else None, dtype=str, skipinitialspace=True)
    if not header:
        frame.columns = [str(i + 1) for i in range(frame.shape[1])]
    return frame


def _read_workbook(path: Path, header: bool) -> pd.DataFrame:
    from zipfile import BadZipFile

    import pandas as pd

    try:
        sheets = pd.read_excel(path, sheet_name=None, header=0 if header else None, dtype=str, engine="openpyxl")
    except (BadZipFile, ValueError, OSError, KeyError) as error:  # what openpyxl raises for a file that is not one
        raise ReplayError(f"{path}: not a readable .xlsx workbook ({type(error).__name__}: {error})") from error
    parts = [frame for frame in sheets.values() if not frame.empty]
    if not parts:
        raise ReplayError(f"{path}: every sheet of the workbook is empty")
    columns = list(parts[0].columns)
    for name, frame in sheets.items():
        if not frame.empty and list(frame.columns) != columns:
            raise ReplayError(f"{path}: sheet {name!r} has the columns {list(frame.columns)}, the first sheet "
                              f"{columns}: a workbook is read as one ledger, all sheets alike")
    frame = pd.concat(parts, ignore_index=True)  # every cell as text, as from a CSV (a time as 2010-12-01 08:26:00)
    if not header:
        frame.columns = [str(i + 1) for i in range(frame.shape[1])]
    return frame


def event_times(column: pd.Series, time_format: str | None, timezone: str) -> pd.Series:
    """A column of times as UTC timestamps; what cannot be read becomes NaT (the stream dead-letters it).

    Recognized without a format: timestamps, ISO 8601 text (with or without a time or an offset),
    dates written YYYYMMDD (``19970101``, as text or as integers), and the other common spellings
    (``01/31/1997``, ``1997/01/31``, ``Jan 31 1997``): the spelling of the first of those sets how the
    rest are read (a column whose first date is ``31/01/1997`` is read day first), and a time that
    does not fit it is read on its own. Times without an offset are in ``timezone``.
    """
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(column):
        return _utc(column, timezone)
    text = column.astype("string").str.strip()
    if time_format is not None:
        return _utc(pd.to_datetime(text, format=time_format, errors="coerce"), timezone)
    times = pd.Series(pd.NaT, index=column.index, dtype="datetime64[ns, UTC]")
    compact = text.str.fullmatch(r"[12][0-9]{3}(0[1-9]|1[0-2])(0[1-9]|[12][0-9]|3[01])").fillna(False).astype(bool)
    if compact.any():
        times[compact] = _utc(pd.to_datetime(text[compact], format="%Y%m%d", errors="coerce"), timezone)
    rest = ~compact & text.notna()
    if rest.any():
        iso = _utc(pd.to_datetime(text[rest], format="ISO8601", errors="coerce"), timezone)
        times[rest] = iso
        left = rest & times.isna()
        if left.any():
            times[left] = _other_spellings(text[left], timezone)
    return times


def _other_spellings(text: pd.Series, timezone: str) -> pd.Series:
    """Times that are not ISO 8601: first in the spelling pandas infers from the first of them (one
    vectorized pass: ``01/31/1997 10:30``), then what that did not read, one distinct value at a time
    (a ledger repeats its times: an invoice's lines, a day's transactions)."""
    import pandas as pd

    times = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "could not infer format": the next step reads them
            guessed = pd.to_datetime(text, errors="coerce")
        if pd.api.types.is_datetime64_any_dtype(guessed):
            times = _utc(guessed, timezone).astype("datetime64[ns, UTC]")
    except (ValueError, TypeError, OverflowError):  # mixed offsets and the like: left to the next step
        pass
    left = times.isna()
    if left.any():
        distinct = pd.unique(text[left].to_numpy(dtype=object))
        read = pd.Series([_one_time(value, timezone) for value in distinct], index=distinct,
                         dtype="datetime64[ns, UTC]")
        times[left] = text[left].map(read)
    return times


def _utc(times: pd.Series, timezone: str) -> pd.Series:
    if getattr(times.dt, "tz", None) is None:
        times = times.dt.tz_localize(timezone)
    return times.dt.tz_convert("UTC")


def _one_time(value: str, timezone: str) -> pd.Timestamp:
    import pandas as pd

    try:
        moment = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError):
        return pd.NaT
    if pd.isna(moment):
        return pd.NaT
    return (moment.tz_localize(timezone) if moment.tzinfo is None else moment).tz_convert("UTC")


_CURRENCY_SIGNS = re.compile(r"[$€£¥₹₩₽¢]|\b[A-Z]{3}\b|\s")  # symbols, ISO codes (USD 12.50), spaces
_THOUSANDS_COMMA = re.compile(r"-?\d{1,3}(,\d{3})+(\.\d*)?")  # 1,234,567.89
_DECIMAL_COMMA = re.compile(r"-?(\d{1,3}(\.\d{3})+(,\d*)?|\d*,\d+)")  # 1.234.567,89 or 12,50


def amounts(column: pd.Series) -> pd.Series:
    """A column of amounts as numbers, written as ledgers write them; what cannot be read becomes NaN
    (the stream dead-letters it).

    Beside plain numbers: currency signs and codes (``$1,234.50``, ``EUR 12.50``), thousands
    separators (``1,234.50``; ``1.234,50`` and a decimal comma ``12,50`` as in much of Europe), a
    trailing minus (``12.50-``) and accounting parentheses (``(12.50)``) for negatives.
    """
    import pandas as pd

    if pd.api.types.is_numeric_dtype(column):
        return pd.to_numeric(column, errors="coerce").astype("float64")
    text = column.astype("string").str.strip()
    numbers = pd.to_numeric(text, errors="coerce").astype("float64")
    left = numbers.isna() & text.notna() & (text != "")
    if left.any():  # element-wise, only for what plain numbers did not read
        numbers[left] = [_one_amount(value) for value in text[left]]
    return numbers


def _one_amount(value: str) -> float:
    negative = value.startswith("(") and value.endswith(")") or value.endswith("-")
    text = _CURRENCY_SIGNS.sub("", value.strip("()").rstrip("-"))
    if _THOUSANDS_COMMA.fullmatch(text):
        text = text.replace(",", "")
    elif _DECIMAL_COMMA.fullmatch(text):
        text = text.replace(".", "").replace(",", ".")
    try:
        number = float(text)
    except ValueError:
        return float("nan")
    return -abs(number) if negative else number


def _amount_columns(column: str, columns: pd.Index) -> list[str]:
    """The columns the mapped amount reads: itself, or the two of a product (``quantity*price``)."""
    if column in columns or "*" not in column:
        return [column]
    return [part.strip() for part in column.split("*", 1)]


def _amount_of(frame: pd.DataFrame, column: str) -> pd.Series:
    """The mapped amount: a column, or the product of two (``quantity*price`` for a ledger of item lines)."""
    factors = [amounts(frame[name]) for name in _amount_columns(column, frame.columns)]
    return factors[0] * factors[1] if len(factors) == 2 else factors[0]


def _lines_as_transactions(out: pd.DataFrame) -> pd.DataFrame:
    """Rows sharing a transaction id (and customer) are the lines of one transaction: one row, amounts summed.

    The transaction takes its first line's time and fields; an unreadable amount on any line leaves
    its amount unknown (NaN: dead-lettered with the reason), and lines without a customer make one
    transaction without one (dead-lettered once, not once per line). Rows without an id stay as they
    are (the stream dead-letters them), and lines of one id under different customers stay apart (the
    stream takes the first and dead-letters the others as duplicates, naming the id).
    """
    import pandas as pd

    keyed = out["transaction_id"].notna()
    if not out.loc[keyed, ["transaction_id", "customer_id"]].duplicated().any():
        return out
    rows = out[keyed]
    lines = rows.groupby(["transaction_id", "customer_id"], sort=False, dropna=False)
    merged = lines.first()
    unknown = lines["amount"].count() < lines.size()  # a line whose amount could not be read
    merged["amount"] = lines["amount"].sum().mask(unknown)
    merged["event_time"] = lines["event_time"].min()
    merged = merged.reset_index()[out.columns]
    return pd.concat([merged, out[~keyed]], ignore_index=True)


def read_transactions_file(path: Path, mapping: ColumnMapping, defaults: ReplayDefaults) -> pa.Table:
    """Read CSV or parquet, map columns to the contract and sort by event time (stable).

    ``mapping.amount`` may name two columns to multiply (``quantity*price``); with a transaction id
    column, rows sharing an id are one transaction's lines (``_lines_as_transactions``).
    """
    import pandas as pd

    frame = read_table(path, defaults.header)
    for name, column in vars(mapping).items():
        read = _amount_columns(column, frame.columns) if name == "amount" else [column]
        for part in read:
            if part is not None and part not in frame.columns:
                raise ReplayError(f"column {part!r} (for {name}) is not in {path}; "
                                  f"columns are: {', '.join(map(str, frame.columns))}")
    times = event_times(frame[mapping.event_time], defaults.time_format, defaults.timezone)
    stem = re.sub(r"[^A-Za-z0-9_.:\-]", "_", path.stem)[:24]  # generated ids must be valid ids

    def text(name: str | None, default: str) -> pd.Series | str:
        return frame[name].astype("string") if name else default  # a missing value stays missing: null

    out = pd.DataFrame({
        "transaction_id": (frame[mapping.transaction_id].astype("string") if mapping.transaction_id
                           else [f"{stem}-{i}" for i in range(len(frame))]),
        "customer_id": frame[mapping.customer_id].astype("string"),
        "amount": _amount_of(frame, mapping.amount),
        "currency": text(mapping.currency, defaults.currency),
        "event_time": times,
        # the time as written where it could not be read: the stream's refusal quotes it
        "event_time_text": frame[mapping.event_time].astype("string").where(times.isna()),
        "merchant_id": text(mapping.merchant_id, defaults.merchant_id),
        "merchant_category": text(mapping.merchant_category, defaults.merchant_category),
        "channel": text(mapping.channel, defaults.channel),
    })
    if mapping.transaction_id:
        out = _lines_as_transactions(out)
    out = out.sort_values("event_time", kind="stable", na_position="first")
    return pa.Table.from_pandas(out, preserve_index=False)


def encode_replayed(table: pa.Table) -> list[bytes]:
    """Row-wise JSON with proper escaping; what could not be read is sent so that the streaming job
    dead-letters it with a reason instead of it vanishing here: a time as it was written
    (``invalid_timestamp``, quoting it), an amount as ``null``, an empty customer or time cell
    left out (``missing_field``). A negative amount is sent as a refund, anything else as a purchase."""
    values = []
    for row in table.to_pylist():
        moment = row["event_time"]
        amount = row["amount"]
        written = row.get("event_time_text")
        document = {
            "schema_version": SCHEMA_VERSION,
            "transaction_id": row["transaction_id"],
            "customer_id": row["customer_id"],
            "amount": amount if amount is not None and amount == amount else None,
            "currency": row["currency"],
            "event_time": format_event_time(moment) if moment is not None else (written or "").strip() or None,
            "merchant_id": row["merchant_id"],
            "merchant_category": row["merchant_category"],
            "channel": row["channel"],
            # a ledger books a refund as a negative amount; zero is a purchase (a free item, a voucher)
            "kind": "refund" if amount is not None and amount < 0 else PURCHASE,
        }
        for name in ("customer_id", "event_time"):
            if document[name] is None:  # an empty cell: the field is missing, not of the wrong type
                del document[name]
        values.append(orjson.dumps(document))
    return values
