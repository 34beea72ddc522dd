from sqlalchemy import select

from app.auth.guard import requires
from app.catalog import bp
from app.catalog.schemas import (
    MachineCreateSchema,
    MachineEnvelope,
    MachineListArgs,
    MachinesEnvelope,
    MachineUpdateSchema,
    ProductCreateSchema,
    ProductEnvelope,
    ProductListArgs,
    ProductsEnvelope,
)
from app.common.http import page
from app.errors import InvalidInput, NotFound
from app.extensions import db
from app.lifecycle import service
from app.lifecycle.reads import get_product
from app.models import Machine, Product


@bp.post("/products")
@requires("manager")
@bp.arguments(ProductCreateSchema)
@bp.response(201, ProductEnvelope)
def create_product(body):
    """Add a product to the catalogue."""
    return {"product": service.create_product(**body)}


@bp.get("/products")
@bp.arguments(ProductListArgs, location="query")
@bp.response(200, ProductsEnvelope)
def list_products(args):
    """List products, newest first; ?state=ON|OFF filters live or past ones."""
    stmt = select(Product)
    if args["state"]:
        stmt = stmt.where(Product.state == args["state"])
    products, next_cursor = page(stmt, Product.id, limit=args["limit"], cursor=args["cursor"])
    return {"products": products, "nextCursor": next_cursor}


@bp.get("/products/<int:product_id>")
@bp.response(200, ProductEnvelope)
def show_product(product_id):
    """One product."""
    return {"product": get_product(product_id)}


@bp.post("/machines")
@requires("manager")
@bp.arguments(MachineCreateSchema)
@bp.response(201, MachineEnvelope)
def create_machine(body):
    """Add a machine to the shop floor."""
    return {"machine": service.create_machine(**body)}


@bp.get("/machines")
@bp.arguments(MachineListArgs, location="query")
@bp.response(200, MachinesEnvelope)
def list_machines(args):
    """List machines, newest first."""
    machines, next_cursor = page(
        select(Machine), Machine.id, limit=args["limit"], cursor=args["cursor"]
    )
    return {"machines": machines, "nextCursor": next_cursor}


@bp.get("/machines/<int:machine_id>")
@bp.response(200, MachineEnvelope)
def show_machine(machine_id):
    """One machine."""
    machine = db.session.get(Machine, machine_id)
    if machine is None:
        raise NotFound(f"No machine with id {machine_id}.")
    return {"machine": machine}


@bp.patch("/machines/<int:machine_id>")
@requires("manager")
@bp.arguments(MachineUpdateSchema)
@bp.response(200, MachineEnvelope)
def update_machine(body, machine_id):
    """Rename a machine or set its status (maintenance, offline; idle or running give it back to its jobs)."""
    if not body:
        raise InvalidInput("Send name or status to change.")
    return {"machine": service.update_machine(machine_id=machine_id, **body)}
