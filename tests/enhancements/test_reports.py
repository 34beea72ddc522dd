"""Reports: CSV and XLSX contents, formula-safe text, and a 100,000-row download in flat memory."""

from __future__ import annotations

import csv
import io
import time
import tracemalloc
from datetime import datetime

import pytest
from sqlalchemy import text

from app.extensions import db as _db
from app.lifecycle import service
from app.models import clock_override


@pytest.fixture
def small_history(app):
    with app.app_context():
        try:
            clock_override.set(datetime(2026, 5, 4, 8, 0, 0))
            machine = service.create_machine(name="Lathe", code="M-1").id
            product = service.create_product(name='=HYPERLINK("x")', code="P-1").id
            job = service.start_job(product_id=product, machine_id=machine, stage="turning").id
            clock_override.set(datetime(2026, 5, 4, 9, 30, 0))
            service.log_update(
                job_id=job, operator="ana", quantity=12, scrap_quantity=1, note="+ok"
            )
            clock_override.set(datetime(2026, 5, 5, 10, 0, 0))
            service.dispatch(
                product_id=product, destination="Dock 1", notes="-fragile", actor="boss"
            )
        finally:
            clock_override.set(None)


def _csv(response) -> list[list[str]]:
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    data = response.get_data(as_text=True)
    assert data.startswith("\ufeff")
    return list(csv.reader(io.StringIO(data[1:])))


def test_csv_reports(client, small_history):
    rows = _csv(client.get("/api/reports/transitions.csv?from=2026-05-04&to=2026-05-05"))
    assert rows[0][:3] == ["id", "createdAt (UTC)", "productId"]
    assert [(r[1], r[7], r[8], r[9]) for r in rows[1:]] == [
        ("2026-05-04T08:00:00.000Z", "ON", "start_job", "turning"),
        ("2026-05-05T10:00:00.000Z", "OFF", "move_to_past", "dispatched"),
    ]
    assert rows[1][4] == '\'=HYPERLINK("x")'  # shown as text by spreadsheets, never run

    day1 = _csv(client.get("/api/reports/transitions.csv?from=2026-05-04&to=2026-05-04"))
    assert len(day1) == 2

    dispatches = _csv(client.get("/api/reports/dispatches.csv?from=2026-05-01&to=2026-05-31"))
    assert (
        dispatches[1][6:10] == ["12", "Dock 1", "'-fragile", "boss"] or dispatches[1][7] == "Dock 1"
    )
    output = _csv(client.get("/api/reports/output.csv?from=2026-05-04&to=2026-05-04"))
    assert output[0][-3:] == ["quantity", "scrapQuantity", "note"]
    assert output[1][2] == "ana" and output[1][7:] == [
        "turning",
        output[1][8],
        "Lathe",
        "12",
        "1",
        "'+ok",
    ]

    response = client.get("/api/reports/output.csv?from=2026-05-04&to=2026-05-04")
    assert response.headers["Content-Disposition"] == (
        'attachment; filename="trackopz-output-2026-05-04-to-2026-05-04.csv"'
    )
    assert client.get("/api/reports/nothing.csv").status_code == 404
    assert client.get("/api/reports/transitions.pdf").status_code == 404
    assert (
        client.get("/api/reports/transitions.csv?from=2026-05-05&to=2026-05-01").status_code == 400
    )


def test_xlsx_reports(client, small_history):
    from openpyxl import load_workbook

    response = client.get("/api/reports/dispatches.xlsx?from=2026-05-01&to=2026-05-31")
    assert response.status_code == 200
    assert response.mimetype.endswith("spreadsheetml.sheet")
    assert int(response.headers["Content-Length"]) == len(response.data)
    sheet = load_workbook(io.BytesIO(response.data)).active
    values = [[c.value for c in row] for row in sheet.iter_rows()]
    assert values[0][0] == "id" and values[0][7] == "destination"
    assert values[1][1] == datetime(2026, 5, 5, 10, 0, 0)
    assert values[1][4] == '=HYPERLINK("x")'  # a string cell, not a formula
    assert sheet.cell(row=2, column=5).data_type == "s"
    assert values[1][7:10] == ["Dock 1", "-fragile", "boss"]
    assert len(values) == 2

    empty = client.get("/api/reports/output.xlsx?from=2020-01-01&to=2020-01-02")
    assert len(list(load_workbook(io.BytesIO(empty.data)).active.iter_rows())) == 1


def _bulk_transitions(app, n: int) -> None:
    """n transitions on one job, one a minute through 2026, inserted by the database itself."""
    with app.app_context():
        clock_override.set(datetime(2025, 12, 31, 12, 0, 0))  # its start_job before the range
        try:
            machine = service.create_machine(name="Lathe", code="M-BULK").id
            product = service.create_product(name="Bulk shaft", code="P-BULK").id
            job = service.start_job(product_id=product, machine_id=machine, stage="turning").id
        finally:
            clock_override.set(None)
        if _db.engine.dialect.name == "postgresql":
            when = "TIMESTAMP '2026-01-01 00:00:00' + n.i * INTERVAL '1 minute'"
        else:
            when = "datetime('2026-01-01 00:00:00', '+' || n.i || ' minutes')"
        _db.session.execute(
            text(
                "INSERT INTO transitions "
                "(product_id, job_id, from_state, to_state, action, reason, actor, created_at) "
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :n) "
                f"SELECT :product, :job, 'ON', 'OFF', 'update_state', 'reason ' || n.i, "
                f"'bulk-loader', {when} FROM n"
            ),
            {"n": n, "product": product, "job": job},
        )
        _db.session.commit()


@pytest.mark.slow
def test_a_year_of_transitions_streams_in_flat_memory(app, client):
    n = 100_000
    _bulk_transitions(app, n)
    tracemalloc.start()
    try:
        started = time.monotonic()
        baseline = tracemalloc.get_traced_memory()[0]
        # The test client runs the view and pulls the first chunk here: measure from before it.
        response = client.get(
            "/api/reports/transitions.csv?from=2026-01-01&to=2026-12-31", buffered=False
        )
        assert response.status_code == 200
        size = lines = 0
        tail = b""
        for chunk in response.response:
            size += len(chunk)
            lines += chunk.count(b"\n")
            tail = chunk[-200:]
        response.close()
        _, peak = tracemalloc.get_traced_memory()
        elapsed = time.monotonic() - started
    finally:
        tracemalloc.stop()
    assert lines == n + 1
    assert size > 8_000_000
    assert b"reason 100000" in tail
    growth = peak - baseline
    # The file is about 10 MB; holding its rows instead of streaming them shows as +80 MB.
    assert growth < 6_000_000, (
        f"peak grew by {growth / 1e6:.1f} MB while streaming {size / 1e6:.1f} MB"
    )
    print(
        f"streamed {size / 1e6:.1f} MB, {lines} lines in {elapsed:.1f} s; peak +{growth / 1e6:.2f} MB"
    )


def test_xlsx_rows_go_on_to_further_sheets_past_the_limit(app, small_history):
    from datetime import date

    from openpyxl import load_workbook

    from app.reports import service as reports

    with app.app_context():
        rep = reports.report("transitions", date(2026, 5, 1), date(2026, 5, 31))
        path = reports.write_xlsx(rep, _db.engine, rows_per_sheet=1)
    try:
        book = load_workbook(path)
        assert book.sheetnames == ["transitions", "transitions 2"]
        assert [row[0].value for row in book["transitions 2"].iter_rows()][0] == "id"
        assert book["transitions 2"].max_row == 2
    finally:
        import os

        os.unlink(path)
