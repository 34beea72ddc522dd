"""The state machine: every change of a product's state goes through this module.

Each public function runs one write transaction: it locks the product row (FOR UPDATE on
Postgres, BEGIN IMMEDIATE on SQLite), checks the rule, writes the job, the Transition row and the
outgoing events, and commits them together. Views only translate HTTP to these calls.
"""

from __future__ import annotations

import json
import logging
from collections import namedtuple
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache
from types import SimpleNamespace

from flask import current_app, g
from sqlalchemy import (
    ARRAY,
    Integer,
    Sequence,
    String,
    any_,
    bindparam,
    func,
    insert,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from app.common import roundtrip
from app.common.groups import GroupCommit
from app.common.schemas import MAX_ID, iso
from app.common.transactions import begin_write, begin_write_together, on_a_live_connection
from app.errors import Conflict, DomainError, InvalidInput, NotFound, ServiceUnavailable
from app.extensions import db
from app.jobs.schemas import DispatchSchema
from app.lifecycle import reads
from app.lifecycle.reads import transition_dict
from app.models import (
    OFF,
    ON,
    CatalogueVersion,
    Dispatch,
    Event,
    Job,
    Machine,
    OperatorProductUpdate,
    Product,
    Transition,
    utcnow,
)
from app.observability import audit
from app.realtime import outbox

log = logging.getLogger(__name__)

ACTION_EVENTS = {
    "move_to_past": "product_moved_to_past",
    "reactivate": "product_reactivated",
    "update_state": "product_state_updated",
}
MANUAL_STATUSES = ("maintenance", "offline")


@dataclass(frozen=True)
class Outcome:
    """What a state change did, for the view to render: plain values read or written inside its
    transaction, so rendering it costs no query after the commit."""

    product: dict  # id, name, code
    previous_state: str | None
    new_state: str
    action: str
    reason: str | None
    transition: dict  # as reads.transition_dict gives it
    timestamp: datetime
    dispatch: dict | None = None  # as the API shows a dispatch
    lifecycle: dict | None = None  # reads.lifecycle, read with the commit (change_state only)


# --- transactions and locks -------------------------------------------------------------------


def _lock_product(product_id: int) -> Product:
    product = db.session.scalars(
        select(Product).where(Product.id == product_id).with_for_update()
    ).one_or_none()
    if product is None:
        raise NotFound(f"No product with id {product_id}.")
    return product


def _latest_job(product: Product) -> Job | None:
    return db.session.get(Job, product.latest_job_id) if product.latest_job_id else None


# --- reading shapes shared with the stream ----------------------------------------------------


def dispatchable_rows(
    product_ids: list[int] | None = None, *, limit: int | None = None
) -> list[dict]:
    """Live products as dispatchable items; all of them, or those of `product_ids` still live."""
    stmt = (
        select(
            Product.id,
            Product.name,
            Product.code,
            Machine.name.label("process"),
            Job.machine_id,
            Job.id.label("job_id"),
            Job.stage,
            Job.created_at,
            Job.quantity_produced,
        )
        .join(Job, Job.id == Product.latest_job_id)
        .join(Machine, Machine.id == Job.machine_id)
        # A literal: a prepared statement's generic plan can then use the partial index of live
        # products by name (ix_products_on_name_id) for the dashboard's first 50.
        .where(Product.state == literal_column("'ON'"))
        .order_by(Product.name, Product.id)
    )
    if product_ids is not None:
        stmt = stmt.where(Product.id.in_(product_ids))
    if limit is not None:
        stmt = stmt.limit(limit)
    return [_item(r) for r in db.session.execute(stmt)]


def _item(r) -> dict:
    """A live product as a dispatchable item, from a row with dispatchable_rows' columns (the
    same keys _DISPATCHABLE_JSON builds in PostgreSQL)."""
    return {
        "id": r.id,
        "name": r.name,
        "code": r.code,
        "process": r.process,
        "machineId": r.machine_id,
        "jobId": r.job_id,
        "stage": r.stage,
        "status": ON,
        "createdAt": iso(r.created_at),
        "quantityProduced": r.quantity_produced,
    }


_DISPATCHABLE_JSON = """
SELECT coalesce(json_agg(json_build_object(
           'id', p.id, 'name', p.name, 'code', p.code, 'process', m.name,
           'machineId', j.machine_id, 'jobId', j.id, 'stage', j.stage, 'status', 'ON',
           'createdAt', to_char(j.created_at, 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
           'quantityProduced', j.quantity_produced) ORDER BY p.name, p.id), '[]')::text,
       count(*)
FROM products p JOIN jobs j ON j.id = p.latest_job_id JOIN machines m ON m.id = j.machine_id
WHERE p.state = 'ON'
"""


def dispatchable_json() -> tuple[str, int]:
    """The whole dispatchable list as JSON text and its length.

    On PostgreSQL the database builds the JSON (in C): at 2,000 live products that is a few
    milliseconds instead of tens spent making 2,000 dicts, formatting 2,000 timestamps and
    encoding them in Python. Elsewhere the same list goes through dispatchable_rows().
    """
    if db.session.get_bind().dialect.name == "postgresql":
        body, count = db.session.execute(text(_DISPATCHABLE_JSON)).one()
        return body, count
    items = dispatchable_rows()
    return json.dumps(items, separators=(",", ":")), len(items)


def last_event_id() -> int:
    return db.session.scalar(select(func.coalesce(func.max(Event.id), 0)))


def dispatchable_snapshot() -> tuple[str, int, int]:
    """The dispatchable list as JSON, its length, and the id of the last event it reflects, all
    read in one snapshot."""
    db.session.rollback()
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    try:
        last_id = last_event_id()
        body, count = dispatchable_json()
        return body, count, last_id
    finally:
        db.session.rollback()


def _emit_dispatchable_change(
    *,
    added: list[int] = (),
    removed: list[int] = (),
    items: list[dict] | None = None,
    change: int = 0,
) -> None:
    """A dispatchable_products_update: `items` as given, or read for the `added` ids. Its `count`
    is filled in by the outbox under the lock that orders event commits (outbox.py), so every
    delta's count is the one right after it, however many writers race. `change`: how many
    products it made live (less than 0: past), where it shares its transaction with other
    deltas (outbox.LiveCount)."""
    if items is None:
        items = dispatchable_rows(list(added)) if added else []
    outbox.emit(
        "dispatchable_products_update",
        {"added": items, "removed": list(removed), "count": outbox.LiveCount(change)},
    )


# --- machine status, derived from its ON jobs unless set by hand -----------------------------


def _machine_has_on_job(machine_id: int, *, excluding: int | None = None) -> bool:
    stmt = select(Job.id).where(Job.machine_id == machine_id, Job.state == ON)
    if excluding is not None:
        stmt = stmt.where(Job.id != excluding)
    return db.session.scalar(stmt.limit(1)) is not None


def _set_machine_status(machine: Machine, status: str, now: datetime) -> None:
    if machine.status == status:
        return
    previous = machine.status
    machine.status = status
    machine.updated_at = now
    _machine_status_changed(machine.id, machine.name, previous, status)


def _machine_status_changed(machine_id: int, name: str, previous: str, status: str) -> None:
    outbox.emit(
        "machine_status_changed",
        {
            "machineId": machine_id,
            "machineName": name,
            "previousStatus": previous,
            "status": status,
        },
    )


def _refresh_machine(machine: Machine, now: datetime) -> None:
    """running while it has an ON job, else idle; maintenance and offline stay until changed."""
    if machine.status in MANUAL_STATUSES:
        return
    db.session.flush()
    _set_machine_status(machine, "running" if _machine_has_on_job(machine.id) else "idle", now)


# --- the transitions ---------------------------------------------------------------------------


def _write_transition(
    product: Product,
    job: Job,
    *,
    to_state: str,
    action: str,
    reason: str | None,
    actor: str | None,
    now: datetime,
) -> tuple[str | None, Transition]:
    """Set the job's state and write its audit row; the product's state follows its latest job."""
    from_state = job.state
    job.state = to_state
    job.updated_at = now
    job.ended_at = now if to_state == OFF else None
    if product.latest_job_id == job.id and product.state != to_state:
        product.state = to_state
        product.state_changed_at = now
    transition = _audit(product, job, from_state, to_state, action, reason, actor, now)
    return from_state, transition


def _audit(product, job, from_state, to_state, action, reason, actor, now) -> Transition:
    """The Transition row: the one kind of row that records a change of state."""
    transition = Transition(
        product_id=product.id,
        job_id=job.id,
        from_state=from_state,
        to_state=to_state,
        action=action,
        reason=reason,
        actor=actor,
        created_at=now,
    )
    db.session.add(transition)
    return transition


def change_state(**change) -> Outcome:
    """move_to_past (ON to OFF), reactivate (OFF to ON) or update_state to `new_state`, in a
    write transaction of its own, with its dispatchable_products_update; the keywords of _apply.

    On PostgreSQL, changes that arrive while another is being written share one transaction
    (group commit, app.common.groups): each is checked and announced as if it ran alone, in the
    order they arrived, and a worker under load writes many changes per round trip and commit.
    """
    _target_state(change["action"], change.get("new_state"))
    if roundtrip.together(db.session.get_bind()):
        db.session.rollback()  # hold nothing open while waiting for the group
        change["request_id"] = g.get("request_id")  # its log line names this request
        outcome, found = current_app.extensions[_GROUPS].submit(change["product_id"], change)
    else:
        begin_write()
        outcome, item, _ = _apply(**change)  # elsewhere than PostgreSQL: written already
        _emit_item_change(outcome, item)
        # Read under the row lock, so exactly what this change left.
        found = outbox.commit(last=reads.lifecycle_statements(outcome.product["id"]))
    return replace(outcome, lifecycle=reads.lifecycle_from(*found, outcome.product["id"]))


def init_app(app) -> None:
    """The app's group commit of transitions (see change_state); one per app and process."""
    app.extensions[_GROUPS] = GroupCommit(_change_group, after=outbox.publish_held)


_GROUPS = "lifecycle_groups"


def _change_group(changes: list[dict]) -> list[tuple[Outcome, list] | Exception]:
    """change_state for several products (one change each), in one write transaction (see
    _write_group). If that fails for another reason than a rule, the changes are written again
    one by one, so that only the one at fault fails; unless the database is out of reach,
    which fails them all with a 503."""
    try:
        return _write_group(changes)
    except Exception as err:
        db.session.rollback()
        if outbox.is_unavailable_error(err):
            log.warning("%d change(s) not confirmed by the database", len(changes), exc_info=err)
            return [ServiceUnavailable(_NOT_CONFIRMED) for _ in changes]
        if len(changes) == 1:
            return [err]
        return [result for change in changes for result in _change_group([change])]


_NOT_CONFIRMED = "The database did not confirm this change; check the product, then try again."


def _write_group(changes: list[dict]) -> list[tuple[Outcome, list] | DomainError]:
    """Several products' changes in one write transaction and two round trips: one begins it,
    locks and reads every product (_locked_rows), one sends every write, the lifecycle reads for
    the responses, the events and the COMMIT (outbox.commit). Each change's Outcome comes with
    the rows of its lifecycle read, which its own request turns into the lifecycle: the next
    group need not wait for that. The events are published once the next group may start
    (GroupCommit's `after`): the hubs put events that arrive out of order back in order.

    The changes are applied in order, each to the state the ones before it left: a machine that
    two of them share is "running" or "idle" as their jobs leave it, change by change, and so
    are its events. (The lifecycle in each response is read after all of them.) A change that
    breaks a rule gets its DomainError and writes nothing; the others go on.
    """
    found = _locked_rows(
        [c["product_id"] for c in changes],
        [c.get("dispatch") is not None for c in changes],
        begin=True,
    )
    rows = dict(zip((c["product_id"] for c in changes), found, strict=True))
    on_jobs: dict[int, set[int]] = {}  # by machine: the products here whose latest job is ON
    statuses: dict[int, str] = {}  # by machine: its status as the changes so far leave it
    for row in found:
        if row is not None and row.machine_id is not None:
            statuses[row.machine_id] = row.machine_status
            if row.job_state == ON:
                on_jobs.setdefault(row.machine_id, set()).add(row.id)
    results: list[Outcome | DomainError] = []
    writes: list[roundtrip.Statement] = []
    for change in changes:
        row = rows.get(change["product_id"])
        try:
            if row is None:
                raise NotFound(f"No product with id {change['product_id']}.")
            machine = row.machine_id
            if machine is not None:
                others = on_jobs.get(machine, set()) - {row.id}
                row = row._replace(
                    machine_status=statuses[machine], machine_busy=row.machine_busy or bool(others)
                )
            outcome, item, written = _apply(row, **change)
        except DomainError as err:
            results.append(err)
            continue
        on_jobs.setdefault(machine, set()).discard(row.id)
        if outcome.new_state == ON:
            on_jobs[machine].add(row.id)
        statuses[machine] = _machine_status_after(row, outcome.new_state)
        _emit_item_change(outcome, item)
        writes.extend(written)
        results.append(outcome)
    done = [r for r in results if isinstance(r, Outcome)]
    db.session.info[outbox.HOLD] = True  # published by outbox.publish_held, after the hand-over
    found = outbox.commit(
        last=[*writes, *(s for o in done for s in reads.lifecycle_statements(o.product["id"]))]
    )
    read = iter(found[len(writes) :])
    return [(r, (next(read), next(read))) if isinstance(r, Outcome) else r for r in results]


def _emit_item_change(outcome: Outcome, item: dict) -> None:
    """The dispatchable_products_update of one change: its product added or removed."""
    if outcome.new_state == ON:
        _emit_dispatchable_change(items=[item], change=1)
    else:
        _emit_dispatchable_change(removed=[outcome.product["id"]], change=-1)


def _machine_status_after(row, target: str) -> str:
    """The status of a change's machine after it: running while it has an ON job (this one,
    or another: machine_busy), else idle; maintenance and offline stay until changed."""
    if row.machine_status in MANUAL_STATUSES:
        return row.machine_status
    return "running" if (target == ON or row.machine_busy) else "idle"


def _target_state(action: str, new_state: str | None) -> str:
    if action not in ACTION_EVENTS:
        raise InvalidInput(
            f"Unknown action {action!r}; use move_to_past, reactivate or update_state."
        )
    if action == "update_state" and new_state not in (ON, OFF):
        raise InvalidInput("update_state needs newState 'ON' or 'OFF'.")
    return {"move_to_past": OFF, "reactivate": ON}.get(action, new_state)


_P, _J, _M = Product.__table__, Job.__table__, Machine.__table__
_T, _D = Transition.__table__, Dispatch.__table__


def _change_statements(of_products):
    """The statements of _locked_rows, built once: the write path only binds product ids.

    `of_products(column)` is the WHERE that picks the products by their id column: one bound
    id, or (PostgreSQL) any of a bound array, for a group of changes (see _change_group).
    """
    other, changing = _J.alias("other"), _P.alias("changing")
    other_on = (
        select(other.c.id)
        # 'ON' as a literal: a prepared statement's generic plan cannot use the partial index
        # of ON jobs for a bound parameter, and then scans the machine's whole job history.
        .where(other.c.machine_id == _M.c.id, other.c.state == literal_column("'ON'"))
        # another job than the latest of the products changing (those are counted in Python)
        .where(
            other.c.id.not_in(
                select(changing.c.latest_job_id).where(
                    of_products(changing.c.id), changing.c.latest_job_id.is_not(None)
                )
            )
        )
        .correlate(_M)
        .exists()
    )
    read = (
        select(
            _P.c.id,
            _P.c.name,
            _P.c.code,
            _P.c.latest_job_id.label("job_id"),
            _J.c.state.label("job_state"),
            _J.c.machine_id,
            _J.c.stage,
            _J.c.created_at,
            _J.c.quantity_produced,
            _M.c.name.label("process"),
            _M.c.status.label("machine_status"),
            other_on.label("machine_busy"),
        )
        .select_from(_P)
        .outerjoin(_J, _J.c.id == _P.c.latest_job_id)
        .outerjoin(_M, _M.c.id == _J.c.machine_id)
        .where(of_products(_P.c.id))
    )
    # In id order, products first, then machines: every path takes its locks in that order.
    lock_products = select(_P.c.id).where(of_products(_P.c.id)).order_by(_P.c.id).with_for_update()
    latest_machines = (
        select(_J.c.machine_id).join(_P, _P.c.latest_job_id == _J.c.id).where(of_products(_P.c.id))
    )
    lock_machines = (
        select(_M.c.id).where(_M.c.id.in_(latest_machines)).order_by(_M.c.id).with_for_update()
    )
    return lock_products, lock_machines, read


_PID = bindparam("pid", type_=Integer)
_LOCK_PRODUCT, _LOCK_MACHINE, _CHANGE_ROW = _change_statements(lambda c: c == _PID)
_PIDS = bindparam("pids", type_=ARRAY(Integer))
_LOCK_PRODUCTS, _LOCK_MACHINES, _CHANGE_ROWS = _change_statements(lambda c: c == any_(_PIDS))
# PostgreSQL: the ids of the Transitions (and Dispatches) to write are drawn with the locking
# read, so that the events that name them are built before the rows are written (and sent
# with them, in one round trip); n of them at once, in order, for a group's changes in order.
_DRAW_IDS = {
    name: select(Sequence(name).next_value()).select_from(
        func.generate_series(1, bindparam("n", type_=Integer))
    )
    for name in ("transitions_id_seq", "dispatches_id_seq")
}
_ChangeRow = namedtuple(
    "_ChangeRow", [c.key for c in _CHANGE_ROWS.selected_columns] + ["transition_id", "dispatch_id"]
)
_LOCK_TIMEOUT = text("SELECT set_config('lock_timeout', :timeout, true)")


def _write_statements():
    """The job UPDATE, the product UPDATE and the Transition INSERT of a change, the machine's
    status UPDATE, all built once (the write path binds values only); and, for PostgreSQL, the
    first three as one statement (it runs the UPDATEs of a WITH whether or not the INSERT reads
    them). SQLite, which draws no ids ahead, binds a NULL `tid` and reads the id back."""
    now, to = bindparam("now", type_=_T.c.created_at.type), bindparam("to_state", type_=String)
    job = (
        update(_J)
        .where(_J.c.id == bindparam("jid"))
        .values(state=to, updated_at=now, ended_at=bindparam("ended", type_=_J.c.ended_at.type))
    )
    product = update(_P).where(_P.c.id == bindparam("pid")).values(state=to, state_changed_at=now)
    transition = insert(_T).values(
        id=bindparam("tid", type_=Integer),
        product_id=bindparam("pid"),
        job_id=bindparam("jid"),
        from_state=bindparam("from_state", type_=String),
        to_state=to,
        action=bindparam("t_action", type_=String),
        reason=bindparam("t_reason", type_=String),
        actor=bindparam("t_actor", type_=String),
        created_at=now,
    )
    change = transition.add_cte(job.cte("write_job"), product.cte("write_product"))
    machine = (
        update(_M)
        .where(_M.c.id == bindparam("mid"))
        .values(status=bindparam("m_status", type_=String), updated_at=now)
    )
    return job, product, transition.returning(_T.c.id), change, machine


_WRITE_JOB, _WRITE_PRODUCT, _WRITE_TRANSITION, _WRITE_CHANGE, _WRITE_MACHINE = _write_statements()


@lru_cache(maxsize=2)
def _dispatch_insert(columns: tuple[str, ...]):
    """The Dispatch INSERT of these columns (_apply's record), returning its id."""
    values = {c: bindparam(f"d_{c}", type_=_D.c[c].type) for c in columns}
    return insert(_D).values(values).returning(_D.c.id)


def _locked_rows(
    product_ids: list[int], dispatching: list[bool], *, begin: bool = False
) -> list[_ChangeRow | None]:
    """For each of these products (None where there is no such product), its row, locked, with
    its latest job, that job's machine (locked too) and whether the machine runs an ON job
    other than the latest jobs of these products: all their changes need. The columns are those
    of dispatchable_rows, plus job_state, machine_status, machine_busy, and the ids drawn for the
    rows to write, in the order given: a Transition id for each, a Dispatch id where
    `dispatching` says so. PostgreSQL only: one round trip, which `begin`s the write
    transaction too (then with a lock_timeout, and tried again if the connection was dead).

    Lock first, read after: a locking SELECT that waited for its lock re-reads only the locked
    row; a joined job or machine, or the "another ON job" test, would be the stale ones. The
    machines of their latest jobs are locked too (after the products, as every path takes
    them): whether a machine still runs anything depends on other products' jobs on it, so
    transitions on one machine take turns; otherwise two racing ones could both leave it
    "running" or "idle".
    """
    ids = {"pids": sorted(set(product_ids))}
    statements = [(_LOCK_PRODUCTS, ids), (_LOCK_MACHINES, ids), (_CHANGE_ROWS, ids)]
    statements.append((_DRAW_IDS["transitions_id_seq"], {"n": len(product_ids)}))
    if any(dispatching):
        statements.append((_DRAW_IDS["dispatches_id_seq"], {"n": sum(dispatching)}))
    if begin:
        # A lock held elsewhere (an idle psql session, say) must not stall the worker's writes.
        seconds = current_app.config["DB_LOCK_TIMEOUT_SECONDS"]
        statements.insert(0, (_LOCK_TIMEOUT, {"timeout": f"{int(seconds * 1000)}ms"}))

        def send():
            return roundtrip.send(begin_write_together(), statements, begin=True)

        # Nothing of a first round trip runs if the connection is dead: safe to send again.
        found = on_a_live_connection(send)[1:]
    else:
        db.session.flush()  # a caller's ORM changes (a batch's, a test's) are what it must read
        found = roundtrip.send(db.session.connection(), statements)
    _, _, read, transition_ids, *dispatch_ids = found
    by_id = {row[0]: row for row in read}
    dispatch_ids = iter(dispatch_ids[0] if dispatch_ids else ())
    rows = []
    for pid, transition_id, dispatches in zip(
        product_ids, transition_ids, dispatching, strict=True
    ):
        dispatch_id = next(dispatch_ids)[0] if dispatches else None
        row = by_id.get(pid)
        rows.append(row and _ChangeRow(*row, transition_id[0], dispatch_id))
    return rows


def _locked_row(product_id: int, *, dispatching: bool = False):
    """_locked_rows' row of one product; elsewhere than PostgreSQL, three statements."""
    if roundtrip.together(db.session.get_bind()):
        (row,) = _locked_rows([product_id], [dispatching])
    else:
        db.session.flush()
        conn, params = db.session.connection(), {"pid": product_id}
        conn.execute(_LOCK_PRODUCT, params)
        conn.execute(_LOCK_MACHINE, params)
        row = conn.execute(_CHANGE_ROW, params).one_or_none()
    if row is None:
        raise NotFound(f"No product with id {product_id}.")
    return row


def apply_change(**change) -> Outcome:
    """change_state's work inside the caller's open write transaction: no begin, no commit, and
    no dispatchable_products_update (the caller emits one for all the products it changed).

    Every rule is checked before anything is written, so a DomainError leaves the transaction
    as it was and the caller may go on with it (a batch does).
    """
    outcome, _, writes = _apply(**change)
    # PostgreSQL: sent at once, so that the batch's next change, and its delta, read them.
    if writes:
        roundtrip.send(db.session.connection(), writes)
    return outcome


def _apply(
    row=None,
    *,
    product_id: int,
    action: str,
    job_id: int | None = None,
    reason: str | None = None,
    new_state: str | None = None,
    actor: str | None = None,
    dispatch: dict | None = None,
    request_id: str | None = None,
) -> tuple[Outcome, dict, list[roundtrip.Statement]]:
    """One state change (see change_state), also giving the product's dispatchable item as it is
    after the change, and the writes left for the caller to send.

    The write path of every transition, so it is lean: one round trip reads and locks all it
    needs, then the job, the product, the Transition (and the Dispatch) are written by plain
    statements: no ORM objects, and nothing read back after the commit. On PostgreSQL those
    writes are returned, not run: the caller sends them with its next round trip (a group of
    changes: with the commit; a batch: at once), and the Transition's (and the Dispatch's) id
    was drawn by the locking read. `row`: the product's _locked_rows row, if read already;
    `request_id`: the request the change is made for (its log line names it).
    """
    target = _target_state(action, new_state)
    if row is None:
        row = _locked_row(product_id, dispatching=dispatch is not None)
    if job_id is not None and job_id != row.job_id:
        if db.session.get(Job, job_id) is None:
            raise NotFound(f"No job with id {job_id}.")
        raise Conflict(
            f"Job {job_id} is not the latest job of {row.name}"
            + (f" (job {row.job_id} is)." if row.job_id else ".")
        )
    if row.job_id is None:
        raise Conflict(f"{row.name} has no job yet; start one first.")
    if row.job_state == target:
        raise Conflict(_already(row.name, action, target))

    conn = db.session.connection()
    now = utcnow()
    previous = row.job_state
    if action == "move_to_past" and reason is None:
        reason = "manual"
    together = roundtrip.together(conn)
    writes: list[roundtrip.Statement] = []  # PostgreSQL: sent by the caller, in one round trip
    record = None
    if dispatch is not None:
        record = {
            "id": row.dispatch_id if together else None,
            "product_id": row.id,
            "job_id": row.job_id,
            "quantity": dispatch.get("quantity", row.quantity_produced),
            "destination": dispatch.get("destination"),
            "notes": dispatch.get("notes"),
            "dispatched_by": actor,
            "created_at": now,
        }
        insert_dispatch = (
            _dispatch_insert(tuple(record)),
            {f"d_{k}": v for k, v in record.items()},
        )
        if together:
            writes.append(insert_dispatch)
        else:
            record["id"] = conn.execute(*insert_dispatch).scalar_one()
    transition = {
        "id": row.transition_id if together else None,
        "product_id": row.id,
        "job_id": row.job_id,
        "from_state": previous,
        "to_state": target,
        "action": action,
        "reason": reason,
        "actor": actor,
        "created_at": now,
    }
    params = _write_params(transition, now if target == OFF else None)
    if together:
        writes.append((_WRITE_CHANGE, params))
    else:
        conn.execute(_WRITE_JOB, params)
        conn.execute(_WRITE_PRODUCT, params)
        transition["id"] = conn.execute(_WRITE_TRANSITION, params).scalar_one()
    audit.note_transition(db.session, transition, product_name=row.name, request_id=request_id)
    payload = {
        "productId": row.id,
        "productName": row.name,
        "jobId": row.job_id,
        "previousState": previous,
        "newState": target,
        "action": action,
        "reason": reason,
        "actor": actor,
        "transitionId": transition["id"],
    }
    if record is not None:
        payload["dispatch"] = {
            "id": record["id"],
            "quantity": record["quantity"],
            "destination": record["destination"],
        }
    outbox.emit(ACTION_EVENTS[action], payload)
    status = _machine_status_after(row, target)
    if status != row.machine_status:
        # A statement, like the rest: the next change of an atomic batch and the lifecycle
        # read for the response see it (an ORM change would wait for a flush).
        params = {"mid": row.machine_id, "m_status": status, "now": now}
        if together:
            writes.append((_WRITE_MACHINE, params))
        else:
            conn.execute(_WRITE_MACHINE, params)
        _machine_status_changed(row.machine_id, row.process, row.machine_status, status)
    product = {"id": row.id, "name": row.name, "code": row.code}
    outcome = Outcome(
        product=product,
        previous_state=previous,
        new_state=target,
        action=action,
        reason=reason,
        transition=transition_dict(SimpleNamespace(**transition)),
        timestamp=now,
        dispatch=_dispatch_dict(record, product) if record is not None else None,
    )
    return outcome, _item(row), writes


def _write_params(transition: dict, ended: datetime | None) -> dict:
    """_WRITE_CHANGE's parameters, from the Transition row it writes."""
    return {
        "tid": transition["id"],
        "pid": transition["product_id"],
        "jid": transition["job_id"],
        "from_state": transition["from_state"],
        "to_state": transition["to_state"],
        "t_action": transition["action"],
        "t_reason": transition["reason"],
        "t_actor": transition["actor"],
        "now": transition["created_at"],
        "ended": ended,
    }


def _dispatch_dict(record: dict, product: dict) -> dict:
    """The Dispatch as the API shows it everywhere (DispatchSchema), from the values written."""
    return DispatchSchema().dump(SimpleNamespace(**record, product=SimpleNamespace(**product)))


def emit_dispatchable_delta(product_ids: Iterable[int]) -> None:
    """One dispatchable_products_update for several changed products: each one still live comes
    in `added` (as it is now), each other one in `removed`; the same as their single deltas."""
    ids = sorted(set(product_ids))
    if not ids:
        return
    items = dispatchable_rows(ids)
    live = {item["id"] for item in items}
    _emit_dispatchable_change(items=items, removed=[i for i in ids if i not in live])


def _already(name: str, action: str, target: str) -> str:
    if action == "move_to_past":
        return f"{name} is not live: it is already past."
    if action == "reactivate":
        return f"{name} is already live."
    return f"{name} is already {target}."


def dispatch(
    *,
    product_id: int,
    job_id: int | None = None,
    quantity: int | None = None,
    destination: str | None = None,
    notes: str | None = None,
    actor: str | None = None,
) -> Outcome:
    """Record a Dispatch and move the product to past with reason 'dispatched', in one transaction."""
    details = {"destination": destination, "notes": notes}
    if quantity is not None:
        details["quantity"] = quantity
    with dispatch_conflicts():
        return change_state(
            product_id=product_id,
            action="move_to_past",
            job_id=job_id,
            reason="dispatched",
            actor=actor,
            dispatch=details,
        )


@contextmanager
def dispatch_conflicts():
    """Say "cannot be dispatched" where move_to_past would say "is not live"."""
    try:
        yield
    except Conflict as err:
        if "already past" in err.message:
            raise Conflict(err.message.replace("is not live", "cannot be dispatched")) from None
        raise


def start_job(
    *,
    product_id: int,
    machine_id: int,
    stage: str | None = None,
    operator: str | None = None,
    quantity_planned: int | None = None,
    actor: str | None = None,
) -> Job:
    """Start a job; a running latest job is finished in the same transaction (the next stage)."""
    begin_write()
    product = _lock_product(product_id)
    # Both machines whose status this may change, in id order (see _locked_row).
    machine_ids = {machine_id}
    if product.latest_job_id is not None:
        machine_ids.add(_latest_job(product).machine_id)
    db.session.execute(
        select(Machine.id).where(Machine.id.in_(machine_ids)).order_by(Machine.id).with_for_update()
    ).all()
    machine = db.session.get(Machine, machine_id)
    if machine is None:
        raise NotFound(f"No machine with id {machine_id}.")
    if machine.status in MANUAL_STATUSES:
        raise Conflict(f"{machine.name} is {machine.status}; no job can start on it.")
    previous = _latest_job(product)
    if (
        previous is not None
        and previous.state == ON
        and previous.machine_id == machine_id
        and (previous.stage or "") == (stage or "")
    ):
        raise Conflict(
            f"{product.name} is already at this stage on {machine.name} (job {previous.id})."
        )

    now = utcnow()
    previous_state = product.state
    if previous is not None and previous.state == ON:
        _write_transition(
            product,
            previous,
            to_state=OFF,
            action="complete_stage",
            reason="next stage started",
            actor=actor,
            now=now,
        )
    job = Job(
        product_id=product.id,
        machine_id=machine.id,
        stage=stage,
        operator=operator,
        quantity_planned=quantity_planned,
        state=ON,
        created_at=now,
        updated_at=now,
    )
    db.session.add(job)
    db.session.flush()
    product.latest_job_id = job.id
    product.state = ON
    if previous_state != ON:
        product.state_changed_at = now
    _audit(product, job, previous_state, ON, "start_job", stage, actor, now)
    db.session.flush()
    outbox.emit(
        "job_started",
        {
            "productId": product.id,
            "productName": product.name,
            "jobId": job.id,
            "previousJobId": previous.id if previous else None,
            "machineId": machine.id,
            "machineName": machine.name,
            "stage": stage,
            "operator": operator,
            "previousState": previous_state,
            "newState": ON,
            "actor": actor,
        },
    )
    if previous is not None and previous.machine_id != machine.id:
        _refresh_machine(previous.machine, now)
    _refresh_machine(machine, now)
    _emit_dispatchable_change(added=[product.id])
    outbox.commit()
    return job


def log_update(
    *,
    job_id: int,
    operator: str,
    quantity: int,
    scrap_quantity: int = 0,
    note: str | None = None,
) -> OperatorProductUpdate:
    """Log finished output against a running job; its running total moves in the same commit."""
    begin_write()
    job = db.session.get(Job, job_id)
    if job is None:
        raise NotFound(f"No job with id {job_id}.")
    product = _lock_product(job.product_id)
    # Its list item, read below, names the machine: a rename committing meanwhile (it locks the
    # machine, not the products) would leave the item with the old name after the new one's
    # event. Shared: output logged on other products of the machine does not wait for this.
    db.session.execute(
        select(Machine.id).where(Machine.id == job.machine_id).with_for_update(read=True)
    ).all()
    db.session.refresh(job)
    if job.state != ON:
        raise Conflict(f"Job {job.id} is OFF; output can only be logged against a running job.")
    if (job.quantity_produced or 0) + quantity > MAX_ID:
        raise InvalidInput(
            f"Job {job.id} has {job.quantity_produced} logged; {quantity} more would pass the "
            f"largest total a job can hold ({MAX_ID}).",
            details={"quantity": f"At most {MAX_ID - (job.quantity_produced or 0)} for this job."},
        )
    update = OperatorProductUpdate(
        job_id=job.id,
        product_id=product.id,
        operator=operator,
        quantity=quantity,
        scrap_quantity=scrap_quantity,
        note=note,
        created_at=utcnow(),
    )
    db.session.add(update)
    job.quantity_produced = (job.quantity_produced or 0) + quantity
    job.updated_at = update.created_at
    db.session.flush()
    outbox.emit(
        "operator_update_logged",
        {
            "productId": product.id,
            "productName": product.name,
            "jobId": job.id,
            "updateId": update.id,
            "operator": operator,
            "quantity": quantity,
            "scrapQuantity": scrap_quantity,
            "quantityProduced": job.quantity_produced,
        },
    )
    if product.latest_job_id == job.id:
        _emit_dispatchable_change(added=[product.id])
    outbox.commit()
    return update


# --- catalogue writes that touch the stream ---------------------------------------------------


def create_product(*, name: str, code: str, description: str | None = None) -> Product:
    """Add a product to the catalogue; codes are unique."""
    begin_write()
    if db.session.scalar(select(Product.id).where(Product.code == code)) is not None:
        raise Conflict(f"A product with code {code!r} already exists.")
    product = Product(name=name, code=code, description=description, created_at=utcnow())
    db.session.add(product)
    _commit_catalogue_write(f"A product with code {code!r} already exists.")
    return product


def create_machine(*, name: str, code: str, status: str | None = None) -> Machine:
    """Add a machine; it starts idle unless put in maintenance or offline."""
    begin_write()
    if db.session.scalar(select(Machine.id).where(Machine.code == code)) is not None:
        raise Conflict(f"A machine with code {code!r} already exists.")
    now = utcnow()
    machine = Machine(name=name, code=code, status=status or "idle", created_at=now, updated_at=now)
    db.session.add(machine)
    _commit_catalogue_write(f"A machine with code {code!r} already exists.")
    return machine


def update_machine(
    *, machine_id: int, name: str | None = None, status: str | None = None
) -> Machine:
    """Rename a machine or set its status; idle or running hand it back to its jobs."""
    begin_write()
    machine = db.session.scalars(
        select(Machine).where(Machine.id == machine_id).with_for_update()
    ).one_or_none()
    if machine is None:
        raise NotFound(f"No machine with id {machine_id}.")
    now = utcnow()
    renamed = False
    if name is not None and name != machine.name:
        machine.name = name
        machine.updated_at = now
        db.session.flush()
        renamed = True
        live_here = db.session.scalars(
            select(Job.product_id).where(Job.machine_id == machine.id, Job.state == ON)
        ).all()
        if live_here:
            _emit_dispatchable_change(added=list(live_here))
    if status is not None:
        if status in MANUAL_STATUSES:
            _set_machine_status(machine, status, now)
        else:
            derived = "running" if _machine_has_on_job(machine.id) else "idle"
            _set_machine_status(machine, derived, now)
    outbox.commit(last=[_catalogue_changed()] if renamed else ())
    return machine


def _commit_catalogue_write(duplicate: str) -> None:
    """Commit what was added, raising the catalogue's version last (a duplicate code: 409)."""
    try:
        outbox.commit(last=[_catalogue_changed()])
    except IntegrityError:
        raise Conflict(duplicate) from None


def _catalogue_changed() -> roundtrip.Statement:
    """The statement raising the catalogue's version (models.CatalogueVersion), for
    outbox.commit's `last`: it runs after the transaction's rows are written, so its row stays
    locked only for the commit, and on PostgreSQL it shares the commit's round trip. It inserts
    the row if it is missing, as on tables emptied by hand."""
    return _version_upsert(db.session.get_bind().dialect.name), {}


@lru_cache(maxsize=2)
def _version_upsert(dialect: str):
    """Built once per dialect: roundtrip.send compiles a statement once."""
    upsert = {"postgresql": postgresql_insert, "sqlite": sqlite_insert}[dialect]
    return (
        upsert(CatalogueVersion)
        .values(id=1, version=1)
        .on_conflict_do_update(
            index_elements=[CatalogueVersion.id], set_={"version": CatalogueVersion.version + 1}
        )
    )
