"""Accounts: which broker accounts the platform reads (``config/accounts.yaml``).

Secrets are never in configuration: a field ending in ``_env`` holds the *name* of an
environment variable, read at connection time.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from portfolio_pipeline.domain.regime import LimitOverrides, LimitSet, RegimeService
from portfolio_pipeline.domain.schema import StrictModel
from portfolio_pipeline.domain.structures import AccountType

BrokerName = Literal["demo", "ibkr", "tastytrade"]
EnvVarName = Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$")]
CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
Tag = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
"""An owner, household or group tag: letters, digits, ``_ . -``."""
DemoBookKind = Literal["index", "wheel", "verticals"]


class _Strict(StrictModel):
    """This module's schemas share the project-wide rules of :class:`StrictModel`."""


class IbkrConnection(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=4001, ge=1, le=65535)
    client_id: int = Field(default=17, ge=0)
    order_client_id: int | None = Field(default=None, ge=0)
    """Client id for order operations (stage/confirm/reject/reconcile) from the streaming
    service and the CLI alike; never the data id.  Default: ``client_id + 1``."""
    market_data_type: Literal["live", "frozen", "delayed", "delayed_frozen"] = "live"
    timeout_seconds: float = Field(default=10.0, gt=0)
    readonly: bool = False


    @property
    def orders_client_id(self) -> int:
        return self.client_id + 1 if self.order_client_id is None else self.order_client_id

    @model_validator(mode="after")
    def _order_id_differs(self) -> IbkrConnection:
        if self.order_client_id is not None and self.order_client_id == self.client_id:
            raise ValueError("order_client_id must differ from client_id (the streaming service holds client_id)")
        return self


class TastytradeConnection(_Strict):
    client_secret_env: EnvVarName = "TASTYTRADE_CLIENT_SECRET"
    refresh_token_env: EnvVarName = "TASTYTRADE_REFRESH_TOKEN"
    is_test: bool = False


class DemoConnection(_Strict):
    seed: int = 7
    book: DemoBookKind = "index"
    """Which simulated book the demo account trades (``brokers/demo/book.py``): ``index``
    (the full index book), ``wheel`` (IRA-style cash-secured puts / covered calls on SPY),
    ``verticals`` (NDX put credit spreads)."""


class _AccountTags(_Strict):
    """What describes an account for the views and the limits (all optional)."""

    display_name: str | None = Field(default=None, min_length=1, max_length=64)
    owner: Tag | None = None
    household: Tag | None = None
    group: Tag | None = None
    """e.g. ``retirement``, ``trading``: ``risk_matrix.yaml`` ``groups`` overrides apply."""
    account_type: AccountType | None = None
    limit_overrides: LimitOverrides | None = None


class ManagedAccount(_AccountTags):
    """One account an IBKR login manages (its ``managedAccounts``), included or excluded.

    Unset tags are inherited from the login's entry."""

    account_id: str = Field(min_length=1)
    name: str | None = Field(default=None, min_length=1)
    """Default: ``<login name>-<account_id>``."""
    include: bool = True


class AccountConfig(_AccountTags):
    """One configured account (or, with ``managed_accounts``, one IBKR login).

    With ``managed_accounts`` the entry's ``account_id`` names the login (e.g. an advisor
    master ``F...``) and the accounts read are exactly the included managed accounts
    (:meth:`AccountsFile.book`), each inheriting the connection and the unset tags."""

    name: str = Field(min_length=1)
    broker: BrokerName
    account_id: str = Field(min_length=1)
    base_currency: CurrencyCode = "USD"
    model_code: str | None = None
    ibkr: IbkrConnection | None = None
    tastytrade: TastytradeConnection | None = None
    demo: DemoConnection | None = None
    managed_accounts: list[ManagedAccount] | None = None

    @property
    def label(self) -> str:
        """What the views call the account: its display name, else its name."""
        return self.display_name or self.name

    @property
    def type(self) -> AccountType:
        """The account type (``margin`` when not configured)."""
        return self.account_type or "margin"

    @model_validator(mode="after")
    def _connection_matches_broker(self) -> AccountConfig:
        for broker in ("ibkr", "tastytrade", "demo"):
            if getattr(self, broker) is not None and broker != self.broker:
                raise ValueError(f"section '{broker}' given for an account of broker '{self.broker}'")
        managed = self.managed_accounts
        if managed is not None:
            if self.broker != "ibkr":
                raise ValueError(f"managed_accounts: only an ibkr login manages accounts, not broker '{self.broker}'")
            if not managed:
                raise ValueError("managed_accounts: list at least one account (or leave the key out)")
            ids = [m.account_id for m in managed]
            dup = sorted({a for a in ids if ids.count(a) > 1})
            if dup:
                raise ValueError(f"managed_accounts: account_id {', '.join(dup)} listed more than once")
            if not any(m.include for m in managed):
                raise ValueError("managed_accounts: every account is excluded (include: false); include one")
        return self

    def expanded(self) -> list[AccountConfig]:
        """The accounts this entry reads: itself, or its included managed accounts."""
        if self.managed_accounts is None:
            return [self]
        out: list[AccountConfig] = []
        inherited = ("owner", "household", "group", "account_type", "limit_overrides")
        for m in self.managed_accounts:
            if not m.include:
                continue
            tags = {k: getattr(m, k) if getattr(m, k) is not None else getattr(self, k) for k in inherited}
            out.append(self.model_copy(update={
                "name": m.name or f"{self.name}-{m.account_id}", "account_id": m.account_id,
                "display_name": m.display_name, "managed_accounts": None, **tags,
            }))
        return out


class AccountsFile(_Strict):
    """Schema of ``config/accounts.yaml``."""

    accounts: list[AccountConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> AccountsFile:
        read = self.book()
        keys = [(a.broker, a.account_id) for a in read]
        dup = sorted({f"{b}:{a}" for b, a in keys if keys.count((b, a)) > 1})
        if dup:
            raise ValueError(f"each (broker, account_id) may appear once; repeated: {', '.join(dup)}")
        names = [a.name for a in read] + [a.name for a in self.accounts if a.managed_accounts is not None]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"account names must be unique; repeated: {', '.join(dup)}")
        return self

    def book(self) -> list[AccountConfig]:
        """THE accounts the platform reads, in file order: every entry, an IBKR login's
        included managed accounts in its place (excluded ones are not read at all)."""
        return [a for entry in self.accounts for a in entry.expanded()]

    def by_account_id(self) -> dict[str, AccountConfig]:
        """The accounts read, keyed by account id."""
        return {a.account_id: a for a in self.book()}

    def named(self, name: str) -> AccountConfig:
        """The account read under ``name`` (its name, display name or account id)."""
        for a in self.book():
            if name in (a.name, a.account_id, a.display_name):
                return a
        known = ", ".join(a.name for a in self.book())
        raise KeyError(f"unknown account {name!r} (accounts.yaml lists {known})")


def account_limits(service: RegimeService, account: AccountConfig | None, regime_name: str) -> LimitSet:
    """THE limits of ``account`` in ``regime_name``: the risk matrix's base limits with its
    group's then its own ``risk_matrix.yaml`` overrides, scaled by the regime (or the
    account's / group's scale for it), then the regime's and ``accounts.yaml``
    ``limit_overrides`` applied.  ``None`` (the whole book): the regime's limits."""
    if account is None:
        return service.limits_for(regime_name)
    return service.limits_for(
        regime_name, account.limit_overrides, account=(account.name, account.account_id), group=account.group)
