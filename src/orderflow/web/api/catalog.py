"""Customers and products."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from orderflow.catalog import service
from orderflow.catalog.models import Customer, Product
from orderflow.web.api.schemas import CustomerIn, ProductIn
from orderflow.web.context import Admin, Context, ReadSession, Viewer

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


@router.post("/customers", status_code=201)
def create_customer(body: CustomerIn, ctx: Context, _: Admin) -> dict[str, Any]:
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


@router.get("/customers/{customer_id}")
def get_customer(customer_id: int, session: ReadSession, _: Viewer) -> dict[str, Any]:
    return customer_json(service.get_customer(session, customer_id))


@router.get("/customers")
def search_customers(
    session: ReadSession,
    _: Viewer,
    q: str | None = Query(None, max_length=200),
    limit: int = Query(50, ge=1, le=200),
) -> dict[str, Any]:
    return {"data": [customer_json(c) for c in service.search_customers(session, q, limit)]}


@router.post("/products", status_code=201)
def create_product(body: ProductIn, ctx: Context, _: Admin) -> dict[str, Any]:
    with ctx.db.transaction() as session:
        return product_json(service.create_product(session, **body.model_dump()))


@router.get("/products/{sku}")
def get_product(sku: str, session: ReadSession, _: Viewer) -> dict[str, Any]:
    return product_json(service.get_product(session, sku))


@router.get("/products")
def list_products(session: ReadSession, _: Viewer) -> dict[str, Any]:
    return {"data": [product_json(p) for p in service.list_products(session)]}
