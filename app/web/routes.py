"""Page routes: each renders one template; the data comes from the JSON API in the browser."""

from flask import g, redirect, render_template, url_for

from app.auth.service import allows
from app.web import bp


@bp.app_context_processor
def role_checks():
    """`can('dispatcher')` in templates: whether the signed-in user's role allows it."""
    user = g.get("user")
    return {"can": lambda role: user is not None and allows(user.role, role)}


@bp.get("/")
def index():
    """Send the root to the shop-floor workpanel."""
    return redirect(url_for("web.workpanel"))


@bp.get("/workpanel")
def workpanel():
    """Live and past products, their timelines and the operator actions."""
    return render_template("web/workpanel.html", page="workpanel")


@bp.get("/dispatch")
def dispatch():
    """Dispatch a live product and see the latest dispatches."""
    return render_template("web/dispatch.html", page="dispatch")


@bp.get("/dashboard")
def dashboard():
    """Counters, machine board, live activity feed and the 30-day chart."""
    return render_template("web/dashboard.html", page="dashboard")
