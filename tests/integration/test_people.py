"""Named users, roles on every route class, personal tokens, the person in the history,
four-eyes — over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import getpass
import hashlib
import secrets
from datetime import timedelta
from typing import Any

import httpx
from click.testing import CliRunner
from sqlalchemy import select, update

from orderflow.cli import main
from orderflow.clock import now
from orderflow.orders import workflow
from orderflow.orders.models import Order
from orderflow.people.models import ApiToken, ConsoleSession
from orderflow.tasks.models import Task
from tests.support.console import log_in
from tests.support.stack import ADDRESS, PASSWORD, Stack


def _dead(stack: Stack, kind: str) -> tuple[int, int]:
    """A placed order whose `kind` work ("book": after payment, or "charge") is a dead letter."""
    customer = stack.customer()
    sku = stack.product(f"{kind.upper()}-{secrets.token_hex(3)}", stock=10)
    order = stack.place(customer, [(sku, 1)])
    with stack.db.transaction() as session:
        if kind == "book":
            session.execute(
                update(Task)
                .where(Task.order_id == order["id"], Task.kind == "charge")
                .values(status="done")
            )
            session.execute(update(Order).where(Order.id == order["id"]).values(status="paid"))
            workflow.book(session, order["id"])
        session.execute(
            update(Task)
            .where(Task.order_id == order["id"], Task.kind == kind)
            .values(
                status="dead",
                attempts=1,
                error_class="poison",
                last_error="KeyError: 'x'",
                first_failed_at=now(),
                last_failed_at=now(),
                finished_at=now(),
            )
        )
        task_id = session.scalar(
            select(Task.id).where(Task.order_id == order["id"], Task.kind == kind)
        )
    assert task_id is not None
    return order["id"], task_id


def _paid(stack: Stack, sku: str = "WIDGET") -> dict[str, Any]:
    customer = stack.customer()
    stack.product(sku, stock=10, price=1500)
    order = stack.place(customer, [(sku, 1)])
    return stack.work_until_status(order["id"], "paid", "scheduled")


def _history(stack: Stack, order_id: int) -> list[tuple[str, str, dict[str, Any]]]:
    return [(h["action"], h["actor"], h["details"]) for h in stack.order(order_id)["history"]]


def _cli(stack: Stack, *args: str, stdin: str | None = None) -> Any:
    result = CliRunner().invoke(
        main, list(args), env={"ORDERFLOW_DATABASE_URL": stack.settings.database_url}, input=stdin
    )
    return result


def test_roles_are_enforced_per_route_class(stack: Stack) -> None:
    """Viewer reads but gets 403 (JSON) on writes; support fixes and redrives non-payment work
    but may not refund, discard or touch payment work; admin can; no token is 401."""
    viewer, support, admin = (
        stack.as_user("vera", "viewer"),
        stack.as_user("sam", "support"),
        stack.as_user("ada", "admin"),
    )
    order_id, book_task = _dead(stack, "book")
    _, charge_task = _dead(stack, "charge")
    url = str(stack.api.base_url).rstrip("/")
    assert httpx.get(f"{url}/orders/{order_id}").status_code == 401

    for path in (f"/orders/{order_id}", "/orders", "/products", "/dead-letters", "/proposals"):
        assert viewer.get(path).status_code == 200, path
    for method, path, body in [
        ("POST", "/orders", {"customer_id": 1, "lines": [{"sku": "WIDGET", "quantity": 1}]}),
        ("POST", f"/orders/{order_id}/cancel", None),
        ("POST", f"/dead-letters/{book_task}/redrive", None),
        ("PATCH", f"/orders/{order_id}", {"address": ADDRESS}),
    ]:
        refused = viewer.request(method, path, json=body)
        assert refused.status_code == 403, (path, refused.text)
        assert refused.json()["error"]["code"] == "forbidden"
    assert viewer.get(f"/orders/{order_id}/investigation").status_code == 403
    assert support.get(f"/orders/{order_id}/investigation").status_code == 200

    assert support.patch(f"/orders/{order_id}", json={"address": ADDRESS}).status_code == 200
    assert support.post(f"/dead-letters/{charge_task}/redrive").status_code == 403
    assert support.post("/dead-letters/redrive", json={}).status_code == 403  # may hold payments
    assert support.post(f"/dead-letters/{book_task}/discard", json={"reason": "x"}).status_code == (
        403
    )
    refund = {"action": "refund", "params": {"order_id": order_id}, "reason": "asked"}
    assert support.post("/proposals", json=refund).status_code == 403
    assert support.post(f"/orders/{order_id}/cancel").status_code == 403
    assert support.post(f"/dead-letters/{book_task}/redrive").status_code == 200

    assert admin.post(f"/dead-letters/{charge_task}/redrive").status_code == 200
    assert admin.post("/proposals", json=refund).status_code == 201


def test_personal_token_is_shown_once_stored_hashed_expires_and_is_revoked(stack: Stack) -> None:
    """`tokens create` prints the token once; only its SHA-256 is stored; `tokens list` never
    shows it; an expired or revoked token is 401 at once."""
    stack.user("alice", "viewer")
    created = _cli(stack, "tokens", "create", "alice", "--expires", "30d")
    assert created.exit_code == 0, created.output
    token = created.output.strip().splitlines()[-1]
    assert token.startswith("oft_")
    with stack.db.read() as session:
        [row] = session.scalars(select(ApiToken)).all()
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in repr(vars(row))
    assert timedelta(days=29) < row.expires_at - now() <= timedelta(days=30)
    listed = _cli(stack, "tokens", "list")
    assert listed.exit_code == 0 and token not in listed.output and "alice" in listed.output

    alice = stack.client(token)
    assert alice.get("/orders").status_code == 200
    with stack.db.transaction() as session:
        session.execute(update(ApiToken).values(expires_at=now() - timedelta(seconds=1)))
    assert alice.get("/orders").status_code == 401

    fresh = _cli(stack, "tokens", "create", "alice", "--expires", "1h").output.splitlines()[-1]
    assert stack.client(fresh).get("/orders").status_code == 200
    with stack.db.read() as session:
        fresh_id = session.scalar(select(ApiToken.id).order_by(ApiToken.id.desc()))
    assert _cli(stack, "tokens", "revoke", str(fresh_id)).exit_code == 0
    assert stack.client(fresh).get("/orders").status_code == 401
    assert _cli(stack, "tokens", "create", "alice", "--expires", "5y").exit_code != 0


def test_a_disabled_users_session_and_tokens_die_at_once(stack: Stack) -> None:
    """`users disable`: the next API request with their token is 401, the next console request
    with their cookie goes to the login page, and they can no longer log in."""
    alice = stack.as_user("alice", "admin")
    console = log_in(stack, "alice")
    assert alice.get("/orders").status_code == 200
    assert console.page("/console/orders").status_code == 200

    result = _cli(stack, "users", "disable", "alice")
    assert result.exit_code == 0, result.output
    assert alice.get("/orders").status_code == 401
    gone = console.page("/console/orders")
    assert gone.status_code == 303 and "/console/login" in gone.headers["location"]
    with stack.db.read() as session:
        assert session.scalars(select(ConsoleSession)).all() == []
    again = httpx.post(
        f"{stack.server.url}/console/login",
        data={"name": "alice", "password": PASSWORD},
        headers={"Origin": stack.server.url},
    )
    assert again.status_code == 401


def test_the_actor_in_the_history_is_the_person(stack: Stack) -> None:
    """API (personal token), console and CLI actions are recorded as the person who acted."""
    alice, bob = stack.as_user("alice", "admin"), stack.as_user("bob", "support")
    customer = stack.customer()
    stack.product("WIDGET", stock=10)
    placed = alice.post(
        "/orders", json={"customer_id": customer, "lines": [{"sku": "WIDGET", "quantity": 1}]}
    )
    assert placed.status_code == 202, placed.text
    order_id = placed.json()["id"]
    assert bob.patch(f"/orders/{order_id}", json={"address": ADDRESS}).status_code == 200
    stack.user("carol", "admin")
    console = log_in(stack, "carol")
    cancelled = console.post(f"/console/orders/{order_id}/cancel", {"reason": "customer asked"})
    assert cancelled.status_code == 303, cancelled.text

    _, task_id = _dead(stack, "book")
    assert _cli(stack, "dead-letters", "redrive", str(task_id)).exit_code == 0
    actors = {action: actor for action, actor, _ in _history(stack, order_id)}
    assert actors["order.placed"] == "user:alice"
    assert actors["order.address_corrected"] == "user:bob"
    assert actors["order.cancelled"] == "user:carol"
    with stack.db.read() as session:
        redriven_order = session.scalar(select(Task.order_id).where(Task.id == task_id))
    assert redriven_order is not None
    redriven = [a for a in _history(stack, redriven_order) if a[0] == "work.redriven"]
    assert [actor for _, actor, _ in redriven] == [f"cli:{getpass.getuser()}"]


def test_four_eyes_refund_needs_a_second_person_and_runs_once(stack: Stack) -> None:
    """A named admin cannot refund alone nor approve their own proposal; another approves, the
    order is cancelled and refunded once, both names are in its history."""
    alice, bob = stack.as_user("alice"), stack.as_user("bob")
    order = _paid(stack)
    alone = alice.post(f"/orders/{order['id']}/cancel")
    assert alone.status_code == 409 and alone.json()["error"]["code"] == "four_eyes_required"

    body = {"action": "refund", "params": {"order_id": order["id"]}, "reason": "damaged"}
    proposal = alice.post("/proposals", json=body)
    assert proposal.status_code == 201, proposal.text
    pid = proposal.json()["id"]
    assert alice.post("/proposals", json=body).json()["error"]["code"] == "already_proposed"
    assert stack.order(order["id"])["status"] in ("paid", "scheduled")  # nothing ran yet
    own = alice.post(f"/proposals/{pid}/approve")
    assert own.status_code == 403 and own.json()["error"]["code"] == "forbidden"
    assert stack.api.post(f"/proposals/{pid}/approve").status_code == 403  # not a person

    approved = bob.post(f"/proposals/{pid}/approve")
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved" and approved.json()["decided_by"] == "user:bob"
    assert bob.post(f"/proposals/{pid}/approve").status_code == 409
    stack.work_until(lambda: (stack.order(order["id"])["payment"] or {}).get("refund") is not None)
    stack.work_until(lambda: stack.worker.run_once() == 0)
    paid_back = stack.outside.paydesk_stats()["refunded_amount_by_order_reference"]
    assert paid_back == {order["reference"]: 1500}
    history = _history(stack, order["id"])
    [proposed] = [
        d for a, actor, d in history if a == "four_eyes.proposed" and actor == "user:alice"
    ]
    [approval] = [d for a, actor, d in history if a == "four_eyes.approved" and actor == "user:bob"]
    assert proposed["proposal"] == pid
    assert approval["proposed_by"] == "user:alice" and approval["approved_by"] == "user:bob"
    assert ("order.cancelled", "user:bob") in [(a, actor) for a, actor, _ in history]
    listed = stack.api.get("/proposals", params={"status": "all"}).json()["data"]
    assert [(p["id"], p["status"]) for p in listed] == [(pid, "approved")]


def test_four_eyes_discard_and_payment_bulk_redrive_and_rejection(stack: Stack) -> None:
    """Discard and a bulk redrive that may hold payment work are proposed and approved by two
    people; a rejected proposal runs nothing; a non-payment bulk redrive needs no second."""
    alice, bob = stack.as_user("alice"), stack.as_user("bob")
    order_id, book_task = _dead(stack, "book")
    _, charge_task = _dead(stack, "charge")
    assert alice.post(f"/dead-letters/{book_task}/discard", json={"reason": "x"}).status_code == (
        409
    )
    assert alice.post("/dead-letters/redrive", json={}).status_code == 409
    assert alice.post("/dead-letters/redrive", json={"step": "charge"}).status_code == 409

    discard = {"action": "discard", "params": {"task_id": book_task}, "reason": "moved abroad"}
    pid = alice.post("/proposals", json=discard).json()["id"]
    rejected = bob.post(f"/proposals/{pid}/reject", json={"note": "call them first"})
    assert rejected.json()["status"] == "rejected"
    assert bob.post(f"/proposals/{pid}/approve").status_code == 409
    assert stack.api.get(f"/dead-letters/{book_task}").status_code == 200  # still dead

    pid = alice.post("/proposals", json=discard).json()["id"]
    assert bob.post(f"/proposals/{pid}/approve").status_code == 200
    assert stack.order(order_id)["status"] == "cancelled"
    actors = [(a, actor) for a, actor, _ in _history(stack, order_id)]
    assert ("four_eyes.rejected", "user:bob") in actors
    assert ("work.discarded", "user:bob") in actors

    redrive = {"action": "bulk_redrive", "params": {"step": "charge"}, "reason": "bad deploy"}
    pid = bob.post("/proposals", json=redrive).json()["id"]
    outcome = alice.post(f"/proposals/{pid}/approve").json()["outcome"]
    progress = stack.api.get(f"/dead-letters/redrives/{outcome['redrive_id']}").json()
    assert progress["four_eyes"] == {
        "proposal": pid,
        "proposed_by": "user:bob",
        "approved_by": "user:alice",
    }
    stack.work_until(lambda: stack.api.get("/dead-letters").json()["total"] == 0)
    charge = stack.api.get(f"/dead-letters/{charge_task}")
    assert charge.status_code == 404  # redriven: no longer a dead letter

    _dead(stack, "book")
    assert alice.post("/dead-letters/redrive", json={"step": "book"}).status_code == 202


def test_bootstrap_token_acts_alone_only_while_no_user_exists(stack: Stack) -> None:
    """With no users the admin token refunds alone; once a user exists it may propose but
    neither act alone nor approve; the CLI follows the same rule."""
    first = _paid(stack, "FIRST")
    assert stack.api.post(f"/orders/{first['id']}/cancel").status_code == 200

    stack.user("alice")
    second = _paid(stack, "SECOND")
    alone = stack.api.post(f"/orders/{second['id']}/cancel")
    assert alone.status_code == 409 and alone.json()["error"]["code"] == "four_eyes_required"
    body = {"action": "refund", "params": {"order_id": second["id"]}, "reason": "asked"}
    pid = stack.api.post("/proposals", json=body).json()["id"]
    assert stack.api.post(f"/proposals/{pid}/approve").status_code == 403

    _, task_id = _dead(stack, "book")
    refused = _cli(stack, "dead-letters", "discard", str(task_id), "--reason", "x")
    assert refused.exit_code != 0 and "second person" in refused.output
    approved = _cli(
        stack,
        "proposals",
        "approve",
        str(pid),
        "--as",
        "alice",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert approved.exit_code == 0, approved.output
    assert stack.order(second["id"])["status"] == "cancelled"


def test_cli_proposals_need_the_users_password_and_a_second_person(stack: Stack) -> None:
    """`proposals propose/approve --as NAME` checks NAME's password; the proposer cannot approve."""
    stack.user("alice")
    stack.user("bob")
    _, task_id = _dead(stack, "book")
    wrong = _cli(
        stack,
        "proposals",
        "propose",
        "discard",
        str(task_id),
        "--reason",
        "gone",
        "--as",
        "alice",
        "--password-stdin",
        stdin="wrong password!\n",
    )
    assert wrong.exit_code != 0
    proposed = _cli(
        stack,
        "proposals",
        "propose",
        "discard",
        str(task_id),
        "--reason",
        "gone",
        "--as",
        "alice",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert proposed.exit_code == 0, proposed.output
    [pending] = stack.api.get("/proposals").json()["data"]
    own = _cli(
        stack,
        "proposals",
        "approve",
        str(pending["id"]),
        "--as",
        "alice",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert own.exit_code != 0 and "another person" in own.output
    ok = _cli(
        stack,
        "proposals",
        "approve",
        str(pending["id"]),
        "--as",
        "bob",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert ok.exit_code == 0, ok.output
    assert stack.api.get(f"/proposals/{pending['id']}").json()["status"] == "approved"
    with stack.db.read() as session:
        task = session.get(Task, task_id)
        assert task is not None and task.status == "discarded"


def test_users_cli_adds_lists_and_refuses_bad_input(stack: Stack) -> None:
    """`users add` hashes the password with argon2id; short passwords, bad names, duplicates
    are refused; `users list` shows roles."""
    added = _cli(
        stack,
        "users",
        "add",
        "alice",
        "--role",
        "support",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert added.exit_code == 0, added.output
    with stack.db.read() as session:
        from orderflow.people.models import User

        [user] = session.scalars(select(User)).all()
    assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash
    assert (
        _cli(
            stack,
            "users",
            "add",
            "alice",
            "--role",
            "viewer",
            "--password-stdin",
            stdin=PASSWORD + "\n",
        ).exit_code
        != 0
    )
    assert (
        _cli(
            stack, "users", "add", "bob", "--role", "viewer", "--password-stdin", stdin="short\n"
        ).exit_code
        != 0
    )
    assert (
        _cli(
            stack,
            "users",
            "add",
            "Bad Name",
            "--role",
            "viewer",
            "--password-stdin",
            stdin=PASSWORD + "\n",
        ).exit_code
        != 0
    )
    listed = _cli(stack, "users", "list")
    assert "alice" in listed.output and "support" in listed.output
