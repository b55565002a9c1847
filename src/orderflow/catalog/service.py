"""Customer and product use cases (sessions in, never committing)."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import func, or_, select, text
from sqlalchemy.orm import Session

from orderflow.catalog.emails import normalized_email
from orderflow.catalog.models import Customer, Product
from orderflow.errors import Conflict, Invalid, NotFound
from orderflow.payments.currencies import supported_currency


def create_customer(
    session: Session,
    *,
    name: str,
    email: str,
    phone: str | None,
    address: dict[str, Any],
    payment_method: str,
) -> Customer:
    """A new customer; 422 for an address that is not a valid e-mail address, 409 (naming the
    existing customer's id) when a customer with this address exists already."""
    try:
        email = normalized_email(email)
    except ValueError as exc:
        raise Invalid(str(exc), field="email") from None
    _lock_email(session, email)
    existing = session.scalar(select(Customer.id).where(Customer.email == email).limit(1))
    if existing is not None:
        raise Conflict(
            f"customer {existing} already has the e-mail address {email}",
            code="customer_exists",
            field="email",
            details={"id": existing},
        )
    customer = Customer(
        name=name, email=email, phone=phone, address=address, payment_method=payment_method
    )
    session.add(customer)
    session.flush()
    return customer


def _lock_email(session: Session, email: str) -> None:
    """Serialize creations of one address, so that two at once cannot both find it free. (On
    SQLite every writing transaction holds the database's write lock already.)"""
    if session.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(b"customer-email:" + email.encode()).digest()[:8])
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key - 2**63})


def get_customer(session: Session, customer_id: int) -> Customer:
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise NotFound(f"no customer with id {customer_id}")
    return customer


def search_customers(session: Session, q: str | None, limit: int = 50) -> list[Customer]:
    query = select(Customer).order_by(Customer.name, Customer.id).limit(limit)
    if q:
        pattern = f"%{_like_escaped(q.lower())}%"
        query = query.where(
            or_(
                func.lower(Customer.name).like(pattern, escape="\\"),
                func.lower(Customer.email).like(pattern, escape="\\"),
            )
        )
    return list(session.scalars(query))


def _like_escaped(value: str) -> str:
    """`value` matched literally inside a LIKE pattern: `%` and `_` are not wildcards."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


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
    try:
        supported_currency(currency)
    except ValueError as exc:
        raise Invalid(str(exc), field="currency") from None
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
