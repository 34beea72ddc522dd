"""The shop floor's tables. Rows are never deleted by a transition: history stays."""

from __future__ import annotations

from contextvars import ContextVar
from datetime import UTC, datetime

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db

# Set only by the demo loader, to write a believable past; None means the real clock.
clock_override: ContextVar[datetime | None] = ContextVar("clock_override", default=None)


def utcnow() -> datetime:
    """Naive UTC: SQLite keeps no zone, so every timestamp is stored as UTC without one."""
    return clock_override.get() or datetime.now(UTC).replace(tzinfo=None)


ON, OFF = "ON", "OFF"
MACHINE_STATUSES = ("idle", "running", "maintenance", "offline")


class Product(db.Model):
    __tablename__ = "products"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    code: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Maintained by the lifecycle service in the same transaction as the job it points at,
    # so "latest job" and "live or past" never need a scan of the job history.
    latest_job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", use_alter=True, name="fk_products_latest_job_id_jobs")
    )
    state: Mapped[str | None] = mapped_column(String(3))
    state_changed_at: Mapped[datetime | None] = mapped_column()

    latest_job: Mapped[Job | None] = relationship(foreign_keys=[latest_job_id], post_update=True)

    __table_args__ = (
        Index("ix_products_state_changed", "state", "state_changed_at"),
        # The live products in name order (the dashboard's first 50, the dispatchable list):
        # read in order from this small index instead of sorting every live product.
        Index(
            "ix_products_on_name_id",
            "name",
            "id",
            postgresql_where=text("state = 'ON'"),
            sqlite_where=text("state = 'ON'"),
        ),
    )


class Machine(db.Model):
    __tablename__ = "machines"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    code: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="idle")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(db.Model):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    machine_id: Mapped[int] = mapped_column(ForeignKey("machines.id"))
    stage: Mapped[str | None] = mapped_column(String(200))
    operator: Mapped[str | None] = mapped_column(String(120))
    quantity_planned: Mapped[int | None] = mapped_column()
    # Running total of the operator updates logged against this job, kept in their transaction.
    quantity_produced: Mapped[int] = mapped_column(default=0, server_default="0")
    state: Mapped[str] = mapped_column(String(3), default=ON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column()

    product: Mapped[Product] = relationship(foreign_keys=[product_id])
    machine: Mapped[Machine] = relationship()

    __table_args__ = (
        Index("ix_jobs_product_id_id", "product_id", "id"),
        Index("ix_jobs_machine_state", "machine_id", "state"),
        Index(
            "ix_jobs_on",
            "id",
            postgresql_where=text("state = 'ON'"),
            sqlite_where=text("state = 'ON'"),
        ),
    )


class OperatorProductUpdate(db.Model):
    __tablename__ = "operator_product_updates"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    operator: Mapped[str] = mapped_column(String(120))
    quantity: Mapped[int] = mapped_column()
    scrap_quantity: Mapped[int] = mapped_column(default=0)
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_operator_product_updates_job_id_id", "job_id", "id"),)


class Dispatch(db.Model):
    __tablename__ = "dispatches"

    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), index=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    quantity: Mapped[int | None] = mapped_column()
    destination: Mapped[str | None] = mapped_column(String(200))
    notes: Mapped[str | None] = mapped_column(Text)
    dispatched_by: Mapped[str | None] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

    product: Mapped[Product] = relationship()


class Transition(db.Model):
    """The audit trail: one row per state change, never edited or deleted."""

    __tablename__ = "transitions"

    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    from_state: Mapped[str | None] = mapped_column(String(3))
    to_state: Mapped[str] = mapped_column(String(3))
    action: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(String(500))
    actor: Mapped[str | None] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

    __table_args__ = (Index("ix_transitions_product_id_id", "product_id", "id"),)


class Event(db.Model):
    """The outbox and replay log of the stream; ids commit in id order (see realtime.outbox)."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(primary_key=True)
    type: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class CatalogueVersion(db.Model):
    """One row: a number raised, in their own transactions, by the catalogue writes that send no
    event (a product or machine added, a machine renamed). Raising it locks the row until the
    commit, so the numbers commit in order: a reader that sees a number has also seen every
    write that drew a smaller one, which the greatest product or machine id does not promise
    (ids are drawn before the commit). The dashboard's ETag reads it."""

    __tablename__ = "catalogue_version"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)


class IdempotencyRecord(db.Model):
    """The first response to a write sent with an Idempotency-Key."""

    __tablename__ = "idempotency_keys"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column()
    body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


ROLES = ("operator", "dispatcher", "manager")


class User(db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(db.Model):
    """A bearer token for scripts; only its SHA-256 is stored, the token is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(120))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()

    user: Mapped[User] = relationship()
