from flask import render_template

from app.auth.guard import requires
from app.webhooks import bp


@bp.get("/webhooks")
@requires("manager")
def webhooks_page():
    """Register webhooks, switch them on and off, read their delivery logs."""
    return render_template("webhooks/webhooks.html", page="webhooks")
