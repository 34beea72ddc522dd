"""Reports: rows read through a server-side cursor and written out as they come.

A query runs with `yield_per` (which turns on `stream_results`: a named cursor on Postgres,
SQLite's own stepping cursor) on a connection of its own, so at most one batch of rows is in
memory at a time, whatever the range. CSV goes out as it is written; XLSX is written row by row by openpyxl's write-only
workbook (rows go to its temporary file, strings inline) into a temporary file, then sent from
that file in chunks.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import Engine, Select, select

from app.analytics.service import bounds
from app.common.schemas import iso
from app.models import Dispatch, Job, Machine, OperatorProductUpdate, Product, Transition

BATCH_ROWS = 1000  # rows fetched from the cursor at a time
CSV_CHUNK_BYTES = 64 * 1024
FILE_CHUNK_BYTES = 64 * 1024
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
SHEET_ROWS = 1_000_000  # data rows per XLSX sheet; Excel's limit is 1,048,576 rows


@dataclass(frozen=True)
class Report:
    name: str
    headers: tuple[str, ...]
    query: Select


def _transitions(since: datetime, until: datetime) -> Report:
    return Report(
        "transitions",
        (
            "id",
            "createdAt (UTC)",
            "productId",
            "productCode",
            "productName",
            "jobId",
            "fromState",
            "toState",
            "action",
            "reason",
            "actor",
        ),
        select(
            Transition.id,
            Transition.created_at,
            Transition.product_id,
            Product.code,
            Product.name,
            Transition.job_id,
            Transition.from_state,
            Transition.to_state,
            Transition.action,
            Transition.reason,
            Transition.actor,
        )
        .join(Product, Product.id == Transition.product_id)
        .where(Transition.created_at >= since, Transition.created_at < until)
        .order_by(Transition.created_at, Transition.id),
    )


def _dispatches(since: datetime, until: datetime) -> Report:
    return Report(
        "dispatches",
        (
            "id",
            "createdAt (UTC)",
            "productId",
            "productCode",
            "productName",
            "jobId",
            "quantity",
            "destination",
            "notes",
            "dispatchedBy",
        ),
        select(
            Dispatch.id,
            Dispatch.created_at,
            Dispatch.product_id,
            Product.code,
            Product.name,
            Dispatch.job_id,
            Dispatch.quantity,
            Dispatch.destination,
            Dispatch.notes,
            Dispatch.dispatched_by,
        )
        .join(Product, Product.id == Dispatch.product_id)
        .where(Dispatch.created_at >= since, Dispatch.created_at < until)
        .order_by(Dispatch.created_at, Dispatch.id),
    )


def _output(since: datetime, until: datetime) -> Report:
    u = OperatorProductUpdate
    return Report(
        "output",
        (
            "id",
            "createdAt (UTC)",
            "operator",
            "productId",
            "productCode",
            "productName",
            "jobId",
            "stage",
            "machineId",
            "machineName",
            "quantity",
            "scrapQuantity",
            "note",
        ),
        select(
            u.id,
            u.created_at,
            u.operator,
            u.product_id,
            Product.code,
            Product.name,
            u.job_id,
            Job.stage,
            Job.machine_id,
            Machine.name,
            u.quantity,
            u.scrap_quantity,
            u.note,
        )
        .join(Product, Product.id == u.product_id)
        .join(Job, Job.id == u.job_id)
        .join(Machine, Machine.id == Job.machine_id)
        .where(u.created_at >= since, u.created_at < until)
        .order_by(u.created_at, u.id),
    )


REPORTS = {"transitions": _transitions, "dispatches": _dispatches, "output": _output}


def report(kind: str, start: date, end: date) -> Report:
    return REPORTS[kind](*bounds(start, end))


def rows(rep: Report, engine: Engine) -> Iterator[tuple]:
    """The report's rows through a server-side cursor, BATCH_ROWS at a time.

    A connection of its own, not the request's session: a streamed response outlives the
    request's context, and the connection goes back to the pool when the rows end or the client
    goes away (the generator is closed).
    """
    with engine.connect() as conn:
        result = conn.execution_options(yield_per=BATCH_ROWS).execute(rep.query)
        try:
            for i, row in enumerate(result, start=1):
                yield tuple(row)
                if i % BATCH_ROWS == 0:
                    time.sleep(0)  # under gevent: let the worker's other greenlets run
        finally:
            result.close()


def _text(value):
    """A spreadsheet must not run what someone typed: '=SUM(..)' is shown, not evaluated."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_chunks(rep: Report, engine: Engine) -> Iterator[bytes]:
    """The CSV (UTF-8 with a BOM, so spreadsheets read the names right), about 64 KB a chunk."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    buffer.write("\ufeff")
    writer.writerow(rep.headers)
    for row in rows(rep, engine):
        writer.writerow([iso(v) if isinstance(v, datetime) else _text(v) for v in row])
        if buffer.tell() >= CSV_CHUNK_BYTES:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def write_xlsx(rep: Report, engine: Engine, *, rows_per_sheet: int = SHEET_ROWS) -> str:
    """Write the report to a temporary .xlsx file and return its path (the caller removes it).

    A sheet holds at most `rows_per_sheet` rows (Excel stops at 1,048,576); more go on to
    sheets named "<report> 2", "<report> 3", ...
    """
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
    from openpyxl.styles import Font

    workbook = Workbook(write_only=True)
    bold = Font(bold=True)

    def new_sheet(number: int):
        sheet = workbook.create_sheet(rep.name if number == 1 else f"{rep.name} {number}")
        header = []
        for name in rep.headers:
            title = WriteOnlyCell(sheet, value=name)
            title.font = bold
            header.append(title)
        sheet.append(header)
        return sheet

    def cell(sheet, value):
        if isinstance(value, str):
            value = ILLEGAL_CHARACTERS_RE.sub("", value)
            if value.startswith("="):
                plain = WriteOnlyCell(sheet, value=value)
                plain.data_type = "s"  # text, never a formula
                return plain
        return value

    handle, path = tempfile.mkstemp(prefix=f"trackopz-{rep.name}-", suffix=".xlsx")
    os.close(handle)
    try:
        sheets, sheet = 1, new_sheet(1)
        for i, row in enumerate(rows(rep, engine)):
            if i and i % rows_per_sheet == 0:
                sheets += 1
                sheet = new_sheet(sheets)
            sheet.append([cell(sheet, v) for v in row])
        workbook.save(path)
    except BaseException:
        os.unlink(path)
        raise
    return path


def file_chunks(path: str) -> Iterator[bytes]:
    """Send a file in chunks, then remove it (also when the client goes away)."""
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(FILE_CHUNK_BYTES):
                yield chunk
    finally:
        os.unlink(path)
