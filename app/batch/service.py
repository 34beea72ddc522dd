"""Batches: many lifecycle actions in one request, with the single call's rules and events.

Each item goes through `lifecycle.service.apply_change`, so it is checked, written and announced
exactly as `POST /api/products/lifecycle` would do it; only the `dispatchable_products_update`
is held back and sent once for the whole batch (one delta naming every product it changed).

- Not atomic: each item is its own write transaction, committed before the next begins; an item
  that fails changes nothing and the others go on. The one delta goes out in a last, short
  transaction that locks the changed products and reads them as they are then.
- Atomic: one write transaction for every item; the products (and their current machines) are
  locked first, in id order, so two batches never wait on each other in a circle. Every item is
  tried in order on the state the earlier ones left; if any fails the transaction is rolled back:
  no row and no event of the batch is written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

from sqlalchemy import select

from app.common.transactions import begin_write
from app.errors import DomainError, InvalidInput
from app.extensions import db
from app.lifecycle import service
from app.models import Job, Machine, Product
from app.realtime import outbox

log = logging.getLogger(__name__)

MAX_ITEMS = 500


class NotAllowed(DomainError):
    """The signed-in user's role does not allow this item's action."""

    status = 403


@dataclass
class BatchResult:
    """Per-item results in the order given; `applied` is False when an atomic batch rolled back."""

    atomic: bool
    results: list[dict] = field(default_factory=list)
    applied: bool = True

    @property
    def failed(self) -> list[int]:
        """0-based positions of the items that failed."""
        return [i for i, r in enumerate(self.results) if r.get("status") is not None]

    @property
    def succeeded(self) -> int:
        return sum(1 for r in self.results if r["success"])


def run(
    items: list[dict],
    *,
    atomic: bool,
    actor: str | None,
    authorize: Callable[[dict], None] | None = None,
) -> BatchResult:
    """Apply `items` (keyword arguments of apply_change) in order; see the module's docstring.

    `authorize(item)` raises NotAllowed for an item the caller's role may not do: that item fails
    like any other (403), it does not stop the batch.
    """
    if not 1 <= len(items) <= MAX_ITEMS:
        raise InvalidInput(f"A batch has 1 to {MAX_ITEMS} items.")
    if atomic:
        return _run_atomic(items, actor=actor, authorize=authorize)
    return _run_each(items, actor=actor, authorize=authorize)


def _apply(item: dict, actor: str | None) -> dict:
    """One item inside the open transaction; the result is read now, before the commit."""
    wording = service.dispatch_conflicts() if item.get("dispatch") is not None else nullcontext()
    with wording:
        outcome = service.apply_change(**item, actor=actor)
    result = {
        "productId": item["product_id"],
        "success": True,
        "previousState": outcome.previous_state,
        "newState": outcome.new_state,
        "transition": outcome.transition,
    }
    if outcome.dispatch is not None:
        result["dispatch"] = outcome.dispatch
    return result


def _failure(item: dict, err: DomainError) -> dict:
    return {
        "productId": item["product_id"],
        "success": False,
        "status": err.status,
        "error": err.message,
    }


def _run_each(items, *, actor, authorize) -> BatchResult:
    result = BatchResult(atomic=False)
    changed: list[int] = []
    try:
        for item in items:
            try:
                if authorize is not None:
                    authorize(item)
                begin_write()
                body = _apply(item, actor)
                outbox.commit()
            except DomainError as err:
                db.session.rollback()
                result.results.append(_failure(item, err))
                continue
            changed.append(item["product_id"])
            result.results.append(body)
    finally:
        # Even when an unexpected error cut the batch short, the items committed so far get their
        # delta, so the stream's list stays equal to the real one.
        if changed:
            try:
                _emit_delta(changed)
            except Exception:
                db.session.rollback()
                log.exception("the dispatchable delta of a batch could not be written")
                raise
    return result


def _emit_delta(product_ids: list[int]) -> None:
    begin_write()
    _lock_products(product_ids)
    service.emit_dispatchable_delta(product_ids)
    outbox.commit()


def _run_atomic(items, *, actor, authorize) -> BatchResult:
    result = BatchResult(atomic=True)
    changed: list[int] = []
    begin_write()
    try:
        _lock_products([item["product_id"] for item in items], with_machines=True)
        for item in items:
            try:
                if authorize is not None:
                    authorize(item)
                body = _apply(item, actor)
            except DomainError as err:
                result.results.append(_failure(item, err))
                continue
            changed.append(item["product_id"])
            result.results.append(body)
    except Exception:
        db.session.rollback()
        raise
    failed = result.failed
    if failed:
        db.session.rollback()
        result.applied = False
        positions = ", ".join(str(i + 1) for i in failed)
        for i, body in enumerate(result.results):
            if body["success"]:
                result.results[i] = {
                    "productId": body["productId"],
                    "success": False,
                    "error": f"Not applied: the batch is atomic and item(s) {positions} failed.",
                }
        return result
    service.emit_dispatchable_delta(changed)
    outbox.commit()
    return result


def _lock_products(product_ids: list[int], *, with_machines: bool = False) -> None:
    """Lock the products (and the machines of their latest jobs) in id order: no lock cycles."""
    ids = sorted(set(product_ids))
    db.session.scalars(
        select(Product.id).where(Product.id.in_(ids)).order_by(Product.id).with_for_update()
    ).all()
    if with_machines:
        machine_ids = (
            select(Job.machine_id)
            .join(Product, Product.latest_job_id == Job.id)
            .where(Product.id.in_(ids))
        )
        db.session.scalars(
            select(Machine.id)
            .where(Machine.id.in_(machine_ids))
            .order_by(Machine.id)
            .with_for_update()
        ).all()
