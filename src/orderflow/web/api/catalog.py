"""Customers and products."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Query

from orderflow.catalog import service
from orderflow.catalog.models import Customer, Product
from orderflow.errors import NotFound
from orderflow.web.api.schemas import SKU_PATTERN, CustomerIn, ProductIn
from orderflow.web.context import Admin, Context, ReadSession, Viewer
from orderflow.web.openapi import READ, WRITE, errors, get_operation, link, success
from orderflow.web.params import NO_NUL, known_id

router = APIRouter(tags=["catalog"])


def customer_json(c: Customer) -> dict[str, Any]:
    return {
        "id": c.id,
        "reference": c.reference,
        "name": c.name,
        "email": c.email,
        "phone": c.phone,
        "address": c.address,
        "payment_method": c.payment_method,
        "created_at": c.created_at.isoformat(),
    }


def product_json(p: Product) -> dict[str, Any]:
    return {
        "sku": p.sku,
        "name": p.name,
        "price": p.price,
        "currency": p.currency,
        "weight_grams": p.weight_grams,
        "stock": p.stock,
    }


CUSTOMER = "/api/v1/customers/{customer_id}"
PRODUCT = "/api/v1/products/{sku}"
_SKU = re.compile(SKU_PATTERN)


@router.post(
    "/customers",
    status_code=201,
    responses={
        **success(
            201,
            "the customer",
            links={
                "GetCustomer": link(
                    get_operation(CUSTOMER),
                    "the customer just created",
                    customer_id="$response.body#/id",
                )
            },
        ),
        **errors(*WRITE, 409),
    },
)
def create_customer(body: CustomerIn, ctx: Context, _: Admin) -> dict[str, Any]:
    """A new customer. An e-mail address a customer has already → 409 with that customer's id."""
    with ctx.db.transaction() as session:
        customer = service.create_customer(
            session,
            name=body.name,
            email=body.email,
            phone=body.phone,
            address=body.address.model_dump(),
            payment_method=body.payment_method,
        )
        return customer_json(customer)


@router.get("/customers/{customer_id}", responses=errors(*READ, 404, 422))
def get_customer(customer_id: int, session: ReadSession, _: Viewer) -> dict[str, Any]:
    return customer_json(service.get_customer(session, known_id(customer_id, "customer")))


@router.get("/customers", responses=errors(*READ, 422))
def search_customers(
    session: ReadSession,
    _: Viewer,
    q: str | None = Query(
        None,
        max_length=200,
        pattern=NO_NUL,
        description="part of the name or e-mail address (`%` and `_` match themselves)",
    ),
    limit: int = Query(50, ge=1, le=200),
) -> dict[str, Any]:
    return {"data": [customer_json(c) for c in service.search_customers(session, q, limit)]}


@router.post(
    "/products",
    status_code=201,
    responses={
        **success(
            201,
            "the product",
            links={
                "GetProduct": link(
                    get_operation(PRODUCT), "the product just created", sku="$response.body#/sku"
                )
            },
        ),
        **errors(*WRITE, 409),
    },
)
def create_product(body: ProductIn, ctx: Context, _: Admin) -> dict[str, Any]:
    with ctx.db.transaction() as session:
        return product_json(service.create_product(session, **body.model_dump()))


@router.get("/products/{sku}", responses=errors(*READ, 404))
def get_product(sku: str, session: ReadSession, _: Viewer) -> dict[str, Any]:
    if not _SKU.fullmatch(sku):  # no product can have it (nor a NUL, which PostgreSQL refuses)
        raise NotFound(f"no product with SKU {sku[:64]!r}")
    return product_json(service.get_product(session, sku))


@router.get("/products", responses=errors(*READ))
def list_products(session: ReadSession, _: Viewer) -> dict[str, Any]:
    return {"data": [product_json(p) for p in service.list_products(session)]}
