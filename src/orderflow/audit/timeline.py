"""An order's history in plain language: "10:02:11 payment of £25.99 succeeded (Paydesk pay_…)".

Pure functions over entries (as `chain.as_dict` gives them): no database, so the dispute
bundle, the API, the CLI and the benchmark all say the same thing the same way.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

SYMBOLS = {"GBP": "£", "EUR": "€", "USD": "$"}
ZERO_DECIMAL = frozenset({"JPY", "KRW", "ISK", "CLP", "VND"})
CARRIERS = {"bobs_post": "Bob's Post", "bobs-post": "Bob's Post"}


def money(minor: Any, currency: str | None) -> str:
    """Minor units to people's money: 2599 GBP → £25.99; 1000 JPY → 1,000 JPY."""
    if not isinstance(minor, int):
        return "an unknown amount"
    code = (currency or "").upper()
    sign, minor = ("-", -minor) if minor < 0 else ("", minor)
    if code in ZERO_DECIMAL:
        amount = f"{minor:,}"
    else:
        major, cents = divmod(minor, 100)
        amount = f"{major:,}.{cents:02d}"
    symbol = SYMBOLS.get(code)
    return f"{sign}{symbol}{amount}" if symbol else f"{sign}{amount} {code}".strip()


def _address(value: Any) -> str:
    if not isinstance(value, dict):
        return str(value)
    parts = [value.get(k) for k in ("line1", "line2", "city", "postcode", "country")]
    return ", ".join(str(p) for p in parts if p)


def _observed(d: dict[str, Any]) -> str:
    """Where a carrier observation came from: (webhook evt_…) / (poll …)."""
    source = d.get("source")
    event = d.get("event_id")
    if source and event:
        return f" ({source} {event})"
    return f" ({source})" if source else ""


def describe(entry: dict[str, Any], currency: str | None = None) -> str:
    """One sentence for one entry."""
    d: dict[str, Any] = entry.get("details") or {}
    action: str = entry["action"]
    who = entry["actor"]
    cur = d.get("currency", currency)
    carrier = CARRIERS.get(str(d.get("carrier")), str(d.get("carrier", "the carrier")))
    match action:
        case "order.placed":
            lines = ", ".join(f"{q} x {sku}" for sku, q in d.get("lines", []))
            return f"order placed by {who}: {lines}, total {money(d.get('total'), cur)}"
        case "order.replacement_placed":
            lines = ", ".join(f"{q} x {sku}" for sku, q in d.get("lines", []))
            return (
                f"placed as a replacement of {d.get('replaces', '?')} by {who}: {lines}, "
                f"total {money(d.get('total'), cur)}"
            )
        case "order.resent":
            why = f": {d['reason']}" if d.get("reason") else ""
            return f"re-sent as {d.get('replacement', '?')} by {who}{why}"
        case "payment.covered_by_original":
            return (
                f"paid by {d.get('original', '?')}'s charge (Paydesk "
                f"{d.get('payment_id') or '?'}, {money(d.get('amount'), cur)}): not charged again"
            )
        case "payment.succeeded":
            return (
                f"payment of {money(d.get('amount'), cur)} succeeded "
                f"(Paydesk {d.get('payment_id', '?')})"
            )
        case "payment.succeeded_after_cancel":
            return (
                f"payment of {money(d.get('amount'), cur)} succeeded after the order was "
                f"cancelled (Paydesk {d.get('payment_id', '?')}): refund queued"
            )
        case "payment.declined":
            return f"payment declined by Paydesk ({d.get('code', '?')}: {d.get('message', '')})"
        case "payment.refunded":
            return (
                f"refund of {money(d.get('amount'), cur)} issued (Paydesk "
                f"{d.get('refund_id', '?')} for {d.get('payment_id', '?')}; "
                f"reason: {d.get('reason', '?')})"
            )
        case "shipment.booked":
            return (
                f"parcel booked with {carrier} (shipment {d.get('shipment_id', '?')}, "
                f"tracking {d.get('tracking_number', '?')})"
            )
        case "shipment.booked_after_cancel":
            return (
                f"parcel booked with {carrier} after the order was cancelled "
                f"(shipment {d.get('shipment_id', '?')}): cancelling the booking"
            )
        case "shipment.collected":
            return f"parcel collected by the carrier{_observed(d)}"
        case "shipment.delivered":
            return f"parcel delivered{_observed(d)}"
        case "shipment.cancelled":
            return f"booking cancelled with the carrier (shipment {d.get('shipment_id', '?')})"
        case "shipment.cancelled_by_carrier":
            return f"the carrier cancelled the booking{_observed(d)}: refund queued"
        case "shipment.unknown_status":
            return (
                f"the carrier reported an unknown status “{d.get('carrier_status')}”"
                f"{_observed(d)}: not applied"
            )
        case "order.cancelled":
            return f"order cancelled by {who}: {d.get('reason', 'no reason given')}"
        case "order.address_corrected":
            return (
                f"address corrected by {who} ({d.get('reason', 'no reason given')}): "
                f"{_address(d.get('before'))} → {_address(d.get('after'))}"
            )
        case "work.redriven":
            return (
                f"{d.get('step', '?')} work sent round again by {who} "
                f"(task {d.get('task_id', '?')}; it had failed: {d.get('cause', '?')})"
            )
        case "work.discarded":
            return (
                f"{d.get('step', '?')} work given up by {who}: {d.get('reason', '?')} "
                f"(task {d.get('task_id', '?')})"
            )
    if action.startswith("email."):
        milestone = action.removeprefix("email.").replace("_", " ")
        return (
            f"“{milestone}” e-mail sent to {d.get('to', '?')} "
            f"(Message-ID {d.get('message_id', '?')})"
        )
    if action.startswith("shipment."):
        status = d.get("carrier_status") or action.removeprefix("shipment.")
        moved = f", order now {entry['to']}" if entry.get("to") else ""
        return f"the carrier reported “{status}”{_observed(d)}{moved}"
    moved = f" ({entry['from']} → {entry['to']})" if entry.get("to") else ""
    reason = f": {d['reason']}" if isinstance(d.get("reason"), str) else ""
    return f"{action.replace('.', ' ').replace('_', ' ')} by {who}{moved}{reason}"


def item(entry: dict[str, Any], currency: str | None = None) -> dict[str, Any]:
    """A timeline row: the entry's facts plus its sentence."""
    at = datetime.fromisoformat(entry["at"])
    text = describe(entry, currency)
    correlation = (entry.get("details") or {}).get("correlation")
    return {
        "seq": entry["seq"],
        "at": entry["at"],
        "time": at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "actor": entry["actor"],
        "action": entry["action"],
        "from": entry.get("from"),
        "to": entry.get("to"),
        "text": text,
        "line": f"{at:%H:%M:%S} {text}",
        "correlation": correlation,
        "hash": entry["hash"],
    }


def timeline(entries: list[dict[str, Any]], currency: str | None = None) -> list[dict[str, Any]]:
    return [item(e, currency) for e in entries]
