"""Indexes the date-range reads need on tables of app/models.py (kept here, beside their reads).

The stage figures pick jobs by when they ended; output figures and the output report pick
operator updates by when they were logged. (Transitions and dispatches are indexed by time
already.)
"""

from sqlalchemy import Index

from app.models import Job, OperatorProductUpdate

jobs_ended_at = Index("ix_jobs_ended_at", Job.ended_at)
updates_created_at = Index(
    "ix_operator_product_updates_created_at", OperatorProductUpdate.created_at
)
