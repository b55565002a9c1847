"""Customer and product use cases (sessions in, never committing)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from orderflow.catalog.models import Customer, Product
from orderflow.errors import Conflict, NotFound


def create_customer(
    session: Session,
    *,
    name: str,
    email: str,
    phone: str | None,
    address: dict[str, Any],
    payment_method: str,
) -> Customer:
    customer = Customer(
        name=name, email=email, phone=phone, address=address, payment_method=payment_method
    )
    session.add(customer)
    session.flush()
    return customer


def get_customer(session: Session, customer_id: int) -> Customer:
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise NotFound(f"no customer with id {customer_id}")
    return customer


def search_customers(session: Session, q: str | None, limit: int = 50) -> list[Customer]:
    query = select(Customer).order_by(Customer.name, Customer.id).limit(limit)
    if q:
        pattern = f"%{q.lower()}%"
        query = query.where(
            or_(func.lower(Customer.name).like(pattern), func.lower(Customer.email).like(pattern))
        )
    return list(session.scalars(query))


def create_product(
    session: Session,
    *,
    sku: str,
    name: str,
    price: int,
    currency: str,
    weight_grams: int,
    stock: int,
) -> Product:
    if session.get(Product, sku) is not None:
        raise Conflict(f"a product with SKU {sku} already exists", code="sku_exists", field="sku")
    product = Product(
        sku=sku, name=name, price=price, currency=currency, weight_grams=weight_grams, stock=stock
    )
    session.add(product)
    session.flush()
    return product


def get_product(session: Session, sku: str) -> Product:
    product = session.get(Product, sku)
    if product is None:
        raise NotFound(f"no product with SKU {sku}")
    return product


def list_products(session: Session) -> list[Product]:
    return list(session.scalars(select(Product).order_by(Product.sku)))
