"""Accounts: which broker accounts the platform reads (``config/accounts.yaml``).

Secrets are never in configuration: a field ending in ``_env`` holds the *name* of an
environment variable, read at connection time.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from portfolio_pipeline.domain.regime import LimitOverrides
from portfolio_pipeline.domain.schema import StrictModel

BrokerName = Literal["demo", "ibkr", "tastytrade"]
EnvVarName = Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$")]


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


class AccountConfig(_Strict):
    name: str = Field(min_length=1)
    broker: BrokerName
    account_id: str = Field(min_length=1)
    base_currency: str = "USD"
    model_code: str | None = None
    ibkr: IbkrConnection | None = None
    tastytrade: TastytradeConnection | None = None
    demo: DemoConnection | None = None
    limit_overrides: LimitOverrides | None = None

    @model_validator(mode="after")
    def _connection_matches_broker(self) -> AccountConfig:
        for broker in ("ibkr", "tastytrade", "demo"):
            if getattr(self, broker) is not None and broker != self.broker:
                raise ValueError(f"section '{broker}' given for an account of broker '{self.broker}'")
        return self


class AccountsFile(_Strict):
    """Schema of ``config/accounts.yaml``."""

    accounts: list[AccountConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> AccountsFile:
        keys = [(a.broker, a.account_id) for a in self.accounts]
        if len(set(keys)) != len(keys):
            raise ValueError("each (broker, account_id) may appear once")
        names = [a.name for a in self.accounts]
        if len(set(names)) != len(names):
            raise ValueError("account names must be unique")
        return self
