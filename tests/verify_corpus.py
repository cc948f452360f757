"""One durable function, ``checkout``, as it was and as code changes would make it.

``original`` records the logs; every other version is registered under the same
recorded name, as the same function would be after a deploy, and is replayed
against those logs by ``duron verify`` / ``duron.testing`` (tests/test_verify.py,
tests/test_testing.py). Effects count their runs in ``ran``: verification must
never run one.

The original path, by position:

0. ``fetch_user(user_id=7)`` -> ``User``
1. ``charge_card(order_id=..., amount=10.0)`` -> ``str``
2. ``ship(address=Address(...))`` -> ``None``
3. ``send_receipt(order_id=...)`` -> ``str``

then the job returns ``"Ada:r-<order_id>"``.
"""

from __future__ import annotations

from uuid import UUID

from pydantic import BaseModel

import duron

ran: list[str] = []


class User(BaseModel):
    id: int
    name: str


class UserWithEmail(BaseModel):
    """``User`` after a required field was added."""

    id: int
    name: str
    email: str


class UserWithNickname(BaseModel):
    """``User`` after an optional field (with a default) was added."""

    id: int
    name: str
    nickname: str = ""


class Address(BaseModel):
    street: str
    city: str


class AddressWithCountry(BaseModel):
    """``Address`` after a field with a default was added."""

    street: str
    city: str
    country: str = "NL"


class Street(BaseModel):
    """``Address`` after its ``city`` field was dropped."""

    street: str


HOME = Address(street="Main 1", city="Delft")

# -- effects ------------------------------------------------------------------------


@duron.effect
async def fetch_user(user_id: int) -> User:
    ran.append("fetch_user")
    return User(id=user_id, name="Ada")


@duron.effect
async def charge_card(order_id: int, amount: float) -> str:
    ran.append("charge_card")
    return f"r-{order_id}"


@duron.effect
async def ship(address: Address) -> None:
    ran.append("ship")


@duron.effect
async def send_receipt(order_id: int) -> str:
    ran.append("send_receipt")
    return "sent"


@duron.effect
async def send_email(order_id: int) -> str:
    ran.append("send_email")
    return "mailed"


@duron.effect
async def notify(order_id: int) -> None:
    ran.append("notify")


@duron.effect
async def load_user(user_id: int) -> User:
    ran.append("load_user")
    return User(id=user_id, name="Ada")


@duron.effect(name="fetch_user")
async def fetch_user_with_email(user_id: int) -> UserWithEmail:
    ran.append("fetch_user")
    return UserWithEmail(id=user_id, name="Ada", email="ada@example.org")


@duron.effect(name="fetch_user")
async def fetch_user_with_nickname(user_id: int) -> UserWithNickname:
    ran.append("fetch_user")
    return UserWithNickname(id=user_id, name="Ada")


@duron.effect(name="charge_card")
async def charge_card_wider(order_id: int, amount: float | str) -> str | int:
    ran.append("charge_card")
    return f"r-{order_id}"


@duron.effect(name="ship")
async def ship_with_country(address: AddressWithCountry) -> None:
    ran.append("ship")


@duron.effect(name="ship")
async def ship_street(address: Street) -> None:
    ran.append("ship")


@duron.effect(name="fetch_user")
async def get_user(user_id: int) -> User:
    """``fetch_user`` renamed in code, its recorded name kept."""
    ran.append("get_user")
    return User(id=user_id, name="Ada")


@duron.effect(name="charge_card")
async def charge_card_in(order_id: int, amount: float, currency: str = "EUR") -> str:
    """``charge_card`` with a new parameter that has a default."""
    ran.append("charge_card")
    return f"r-{order_id}"


# -- the original and its changed versions ---------------------------------------------


@duron.durable(name="checkout")
async def original(ctx: duron.Context, order_id: int) -> str:
    user = await ctx.run(fetch_user, 7)
    receipt = await ctx.run(charge_card, order_id, 10.0)
    await ctx.run(ship, HOME)
    await ctx.run(send_receipt, order_id)
    return f"{user.name}:{receipt}"


@duron.durable(name="checkout")
async def reordered(ctx: duron.Context, order_id: int) -> str:
    receipt = await ctx.run(charge_card, order_id, 10.0)
    user = await ctx.run(fetch_user, 7)
    await ctx.run(ship, HOME)
    await ctx.run(send_receipt, order_id)
    return f"{user.name}:{receipt}"


@duron.durable(name="checkout")
async def renamed(ctx: duron.Context, order_id: int) -> str:
    user = await ctx.run(load_user, 7)
    receipt = await ctx.run(charge_card, order_id, 10.0)
    await ctx.run(ship, HOME)
    await ctx.run(send_receipt, order_id)
    return f"{user.name}:{receipt}"


@duron.durable(name="checkout")
async def renamed_keeping_name(ctx: duron.Context, order_id: int) -> str:
    user = await ctx.run(get_user, 7)
    receipt = await ctx.run(charge_card, order_id, 10.0)
    await ctx.run(ship, HOME)
    await ctx.run(send_receipt, order_id)
    return f"{user.name}:{receipt}"


@duron.durable(name="checkout")
async def new_parameter_with_default(ctx: duron.Context, order_id: int) -> str:
    user = await ctx.run(fetch_user, 7)
    receipt = await ctx.run(charge_card_in, order_id, 10.0)
    await ctx.run(ship, HOME)
    await ctx.run(send_receipt, order_id)
    return f"{user.name}:{receipt}"


@duron.durable(name="checkout")
async def new_parameter_passed(ctx: duron.Context, order_id: int) -> str:
    user = await ctx.run(fetch_user, 7)
    receipt = await ctx.run(charge_card_in, order_id, 10.0, "EUR")
    await ctx.run(ship, HOME)
    await ctx.run(send_receipt, order_id)
    return f"{user.name}:{receipt}"


@duron.durable(name="checkout")
async def changed_argument(ctx: duron.Context, order_id: int) -> str:
    user = await ctx.run(fetch_user, 7)
    receipt = await ctx.run(charge_card, order_id, 12.5)
    await ctx.run(ship, HOME)
    await ctx.run(send_receipt, order_id)
    return f"{user.name}:{receipt}"


@duron.durable(name="checkout")
async def removed_effect(ctx: duron.Context, order_id: int) -> str:
    user = await ctx.run(fetch_user, 7)
    await ctx.run(ship, HOME)
    await ctx.run(send_receipt, order_id)
    return f"{user.name}:r-{order_id}"


@duron.durable(name="checkout")
async def removed_last_effect(ctx: duron.Context, order_id: int) -> str:
    user = await ctx.run(fetch_user, 7)
    receipt = await ctx.run(charge_card, order_id, 10.0)
    await ctx.run(ship, HOME)
    return f"{user.name}:{receipt}"


@duron.durable(name="checkout")
async def added_effect(ctx: duron.Context, order_id: int) -> str:
    user = await ctx.run(fetch_user, 7)
    receipt = await ctx.run(charge_card, order_id, 10.0)
    await ctx.run(ship, HOME)
    await ctx.run(notify, order_id)
    await ctx.run(send_receipt, order_id)
    return f"{user.name}:{receipt}"


@duron.durable(name="checkout")
async def added_effect_at_end(ctx: duron.Context, order_id: int) -> str:
    user = await ctx.run(fetch_user, 7)
    receipt = await ctx.run(charge_card, order_id, 10.0)
    await ctx.run(ship, HOME)
    await ctx.run(send_receipt, order_id)
    await ctx.run(notify, order_id)
    return f"{user.name}:{receipt}"


@duron.durable(name="checkout")
async def changed_result(ctx: duron.Context, order_id: int) -> str:
    user = await ctx.run(fetch_user, 7)
    receipt = await ctx.run(charge_card, order_id, 10.0)
    await ctx.run(ship, HOME)
    await ctx.run(send_receipt, order_id)
    return f"{user.name.upper()}:{receipt}"


@duron.durable(name="checkout")
async def required_field(ctx: duron.Context, order_id: int) -> str:
    user = await ctx.run(fetch_user_with_email, 7)
    receipt = await ctx.run(charge_card, order_id, 10.0)
    await ctx.run(ship, HOME)
    await ctx.run(send_receipt, order_id)
    return f"{user.name}:{receipt}"


@duron.durable(name="checkout")
async def optional_field(ctx: duron.Context, order_id: int) -> str:
    user = await ctx.run(fetch_user_with_nickname, 7)
    receipt = await ctx.run(charge_card, order_id, 10.0)
    await ctx.run(ship, HOME)
    await ctx.run(send_receipt, order_id)
    return f"{user.nickname or user.name}:{receipt}"


@duron.durable(name="checkout")
async def wider_union(ctx: duron.Context, order_id: int) -> str:
    user = await ctx.run(fetch_user, 7)
    receipt = await ctx.run(charge_card_wider, order_id, 10.0)
    await ctx.run(ship, HOME)
    await ctx.run(send_receipt, order_id)
    return f"{user.name}:{receipt}"


@duron.durable(name="checkout")
async def input_field_default(ctx: duron.Context, order_id: int) -> str:
    user = await ctx.run(fetch_user, 7)
    receipt = await ctx.run(charge_card, order_id, 10.0)
    await ctx.run(ship_with_country, AddressWithCountry(street="Main 1", city="Delft"))
    await ctx.run(send_receipt, order_id)
    return f"{user.name}:{receipt}"


@duron.durable(name="checkout")
async def input_field_set(ctx: duron.Context, order_id: int) -> str:
    user = await ctx.run(fetch_user, 7)
    receipt = await ctx.run(charge_card, order_id, 10.0)
    await ctx.run(
        ship_with_country,
        AddressWithCountry(street="Main 1", city="Delft", country="BE"),
    )
    await ctx.run(send_receipt, order_id)
    return f"{user.name}:{receipt}"


@duron.durable(name="checkout")
async def input_field_dropped(ctx: duron.Context, order_id: int) -> str:
    user = await ctx.run(fetch_user, 7)
    receipt = await ctx.run(charge_card, order_id, 10.0)
    await ctx.run(ship_street, Street(street="Main 1"))
    await ctx.run(send_receipt, order_id)
    return f"{user.name}:{receipt}"


@duron.durable(name="checkout")
async def argument_type_changed(ctx: duron.Context, order_id: UUID) -> str:
    return str(order_id)


@duron.durable(name="checkout")
async def argument_renamed(ctx: duron.Context, order: int) -> str:
    return str(order)


# -- versioning with ctx.patched: the deploy-and-migrate steps ---------------------------


@duron.durable(name="checkout")
async def patched(ctx: duron.Context, order_id: int) -> str:
    """Step 1: the receipt becomes an email; jobs recorded before keep the old path."""
    user = await ctx.run(fetch_user, 7)
    receipt = await ctx.run(charge_card, order_id, 10.0)
    await ctx.run(ship, HOME)
    if await ctx.patched("email-receipt"):
        await ctx.run(send_email, order_id)
    else:
        await ctx.run(send_receipt, order_id)
    return f"{user.name}:{receipt}"


@duron.durable(name="checkout")
async def patch_kept(ctx: duron.Context, order_id: int) -> str:
    """Step 2: no old job is left: the old branch goes, the marker stays."""
    user = await ctx.run(fetch_user, 7)
    receipt = await ctx.run(charge_card, order_id, 10.0)
    await ctx.run(ship, HOME)
    await ctx.patched("email-receipt")
    await ctx.run(send_email, order_id)
    return f"{user.name}:{receipt}"


@duron.durable(name="checkout")
async def patch_removed(ctx: duron.Context, order_id: int) -> str:
    """Step 3: no job recorded under steps 1-2 is left: the call goes too."""
    user = await ctx.run(fetch_user, 7)
    receipt = await ctx.run(charge_card, order_id, 10.0)
    await ctx.run(ship, HOME)
    await ctx.run(send_email, order_id)
    return f"{user.name}:{receipt}"


# -- another function --------------------------------------------------------------------


@duron.effect(
    name="charge_card",
    retry=duron.RetryPolicy(max_attempts=3, initial_interval=0.01, jitter=0.0),
)
async def charge_card_flaky(order_id: int, amount: float) -> str:
    """``charge_card`` with a retry policy, failing its first attempt."""
    ran.append("charge_card")
    if duron.current_operation().attempt == 1:
        raise ConnectionError("bank down")
    return f"r-{order_id}"


@duron.effect(
    name="charge_card",
    retry=duron.RetryPolicy(max_attempts=10, initial_interval=5.0),
    timeout=30.0,
)
async def charge_card_patient(order_id: int, amount: float) -> str:
    """``charge_card`` with another retry policy and a timeout."""
    ran.append("charge_card")
    return f"r-{order_id}"


@duron.durable(name="checkout")
async def retrying(ctx: duron.Context, order_id: int) -> str:
    """Records the ``retried`` log: ``charge_card`` fails once, then succeeds."""
    user = await ctx.run(fetch_user, 7)
    receipt = await ctx.run(charge_card_flaky, order_id, 10.0)
    await ctx.run(ship, HOME)
    await ctx.run(send_receipt, order_id)
    return f"{user.name}:{receipt}"


@duron.durable(name="checkout")
async def retry_changed(ctx: duron.Context, order_id: int) -> str:
    user = await ctx.run(fetch_user, 7)
    receipt = await ctx.run(charge_card_patient, order_id, 10.0)
    await ctx.run(ship, HOME)
    await ctx.run(send_receipt, order_id)
    return f"{user.name}:{receipt}"


@duron.durable
async def refund(ctx: duron.Context, order_id: int) -> str:
    return await ctx.run(send_receipt, order_id)
