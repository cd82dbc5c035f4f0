"""THE instrument table: multipliers, exercise style, settlement and pricing model.

Every contract multiplier in the platform comes from here (loaded from
``config/instruments.yaml``).  A broker's own multiplier is checked against the table
with :meth:`InstrumentTable.checked_multiplier`; a mismatch is an error, never a guess.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from typing import Literal

from pydantic import Field, model_validator

from portfolio_pipeline.domain.errors import MultiplierMismatchError, UnknownInstrumentError
from portfolio_pipeline.domain.schema import StrictModel

UnderlyingType = Literal["index", "etf", "equity", "future", "volatility_index"]
ExerciseStyle = Literal["european", "american"]
Settlement = Literal["cash", "physical"]
SettlementTime = Literal["AM", "PM"]
PricingModel = Literal["bsm", "black76"]
SecType = Literal["STK", "IND", "FUT", "OPT", "FOP"]

_MULT_RTOL = 1e-9
_WEEK_NUMBERED = re.compile(r"^(?P<base>[A-Z]+)[1-5]$")


class _Strict(StrictModel):
    """This module's schemas share the project-wide rules of :class:`StrictModel`."""


class TradingClass(_Strict):
    """One option trading class (e.g. SPX AM monthlies vs SPXW PM weeklies)."""

    name: str = Field(min_length=1)
    settlement_time: SettlementTime
    multiplier: float | None = Field(default=None, gt=0, description="override, e.g. mini/adjusted options")
    deliverable: float | None = Field(default=None, gt=0, description="units delivered per contract")


class OptionSpec(_Strict):
    multiplier: float = Field(gt=0)
    exercise: ExerciseStyle
    settlement: Settlement
    model: PricingModel
    tick_size: float = Field(gt=0)
    strike_increment: float = Field(gt=0)
    trading_classes: list[TradingClass] = Field(min_length=1)


class FutureSpec(_Strict):
    multiplier: float = Field(gt=0)
    tick_size: float = Field(gt=0)
    exchange: str


class InstrumentSpec(_Strict):
    """One underlying root and the derivatives traded on it."""

    description: str
    underlying_type: UnderlyingType
    currency: str = "USD"
    option_underlying: Literal["spot", "future"] = Field(
        default="spot", description="what the options are written on (futures options: 'future')"
    )
    share_multiplier: float = Field(default=1.0, gt=0, description="units per share/index point")
    future: FutureSpec | None = None
    options: OptionSpec | None = None

    @model_validator(mode="after")
    def _consistent(self) -> InstrumentSpec:
        if self.underlying_type == "future" and self.future is None:
            raise ValueError("a future underlying needs a 'future' section")
        if self.option_underlying == "future" and self.future is None:
            raise ValueError("option_underlying 'future' needs a 'future' section")
        if self.options is not None and self.option_underlying == "future" and self.options.model != "black76":
            raise ValueError("options on futures are priced with model 'black76'")
        return self


class InstrumentsFile(_Strict):
    """Schema of ``config/instruments.yaml``."""

    instruments: dict[str, InstrumentSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_regardless_of_case(self) -> InstrumentsFile:
        # lookups are case-insensitive, so `spx:` after `SPX:` would silently replace SPX
        roots: dict[str, str] = {}
        classes: dict[str, str] = {}
        for root, spec in self.instruments.items():
            if not root.strip():
                raise ValueError("an instrument key is empty")
            earlier = roots.setdefault(root.upper(), root)
            if earlier != root:
                raise ValueError(f"instrument {root!r} repeats {earlier!r} (keys are case-insensitive)")
            for tc in spec.options.trading_classes if spec.options is not None else []:
                owner = classes.get(tc.name.upper())
                if owner is not None:
                    raise ValueError(
                        f"trading class {tc.name!r} of {root!r} is also defined under {owner!r} "
                        "(names are case-insensitive)"
                    )
                classes[tc.name.upper()] = root
        return self


class InstrumentTable(Mapping[str, InstrumentSpec]):
    """Read-only lookup of :class:`InstrumentSpec` by root symbol (upper case)."""

    def __init__(self, specs: Mapping[str, InstrumentSpec], *, source: str = "instruments.yaml") -> None:
        self._specs = {k.upper(): v for k, v in specs.items()}
        self._source = source
        self._class_index: dict[str, tuple[str, TradingClass]] = {}
        for root, spec in self._specs.items():
            if spec.options is None:
                continue
            for tc in spec.options.trading_classes:
                self._class_index[tc.name.upper()] = (root, tc)

    @classmethod
    def from_file_model(cls, model: InstrumentsFile, *, source: str = "instruments.yaml") -> InstrumentTable:
        return cls(model.instruments, source=source)

    def __getitem__(self, root: str) -> InstrumentSpec:
        return self.spec(root)

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def spec(self, root: str) -> InstrumentSpec:
        try:
            return self._specs[root.upper()]
        except KeyError:
            raise UnknownInstrumentError(
                f"unknown instrument {root!r}: not defined in {self._source}"
            ) from None

    def root_for_trading_class(self, trading_class: str) -> str:
        """The root symbol owning an option trading class (``SPXW`` -> ``SPX``)."""
        try:
            return self._class_index[trading_class.upper()][0]
        except KeyError:
            raise UnknownInstrumentError(
                f"unknown option trading class {trading_class!r}: not defined in {self._source}"
            ) from None

    def table_class_name(self, root: str, trading_class: str | None) -> str | None:
        """The table's name for a broker's option trading class of ``root``, or None.

        The one place broker class names are mapped: an exact match first; CME numbers its
        end-of-week weeklies by week (ES ``EW1``..``EW4``) and brokers report that class, so
        a week-numbered class missing from the table maps to its un-numbered class of the
        same root (``EW``) when the table defines it.  None when neither is listed.
        """
        spec = self.spec(root)
        if trading_class is None or spec.options is None:
            return None
        names = {tc.name.upper() for tc in spec.options.trading_classes}
        raw = trading_class.strip().upper()
        if raw in names:
            return raw
        m = _WEEK_NUMBERED.match(raw)
        if m is not None and m["base"] in names:
            return m["base"]
        return None

    def trading_class(self, root: str, trading_class: str | None) -> TradingClass:
        opts = self._option_spec(root)
        if trading_class is None:
            return opts.trading_classes[0]
        for tc in opts.trading_classes:
            if tc.name.upper() == trading_class.upper():
                return tc
        raise UnknownInstrumentError(
            f"unknown trading class {trading_class!r} for {root!r}: not defined in {self._source}"
        )

    def _option_spec(self, root: str) -> OptionSpec:
        spec = self.spec(root)
        if spec.options is None:
            raise UnknownInstrumentError(f"{root!r} has no options section in {self._source}")
        return spec.options

    def multiplier(self, root: str, sec_type: SecType, trading_class: str | None = None) -> float:
        """Contract multiplier for ``sec_type`` on ``root`` (the single source of multipliers)."""
        spec = self.spec(root)
        if sec_type in ("STK", "IND"):
            return spec.share_multiplier
        if sec_type == "FUT":
            if spec.future is None:
                raise UnknownInstrumentError(f"{root!r} has no future section in {self._source}")
            return spec.future.multiplier
        tc = self.trading_class(root, trading_class)
        if tc.multiplier is not None:
            return tc.multiplier
        return self._option_spec(root).multiplier

    def checked_multiplier(
        self,
        root: str,
        sec_type: SecType,
        broker_multiplier: float | None,
        *,
        trading_class: str | None = None,
        source: str,
    ) -> float:
        """The table's multiplier, after checking the broker's own against it.

        ``broker_multiplier`` None means the broker did not say; the table is used.
        """
        expected = self.multiplier(root, sec_type, trading_class)
        if broker_multiplier is not None and not math.isclose(
            float(broker_multiplier), expected, rel_tol=_MULT_RTOL
        ):
            raise MultiplierMismatchError(
                f"{source}: multiplier {broker_multiplier!r} for {root} {sec_type}"
                f"{' ' + trading_class if trading_class else ''} disagrees with {self._source} "
                f"({expected!r}); add the trading class with its multiplier if it is a mini or "
                "adjusted option"
            )
        return expected

    def known_multipliers(self) -> set[float]:
        """Every multiplier the table defines (a stored multiplier outside it is unknown)."""
        values: set[float] = set()
        for spec in self._specs.values():
            values.add(spec.share_multiplier)
            if spec.future is not None:
                values.add(spec.future.multiplier)
            if spec.options is not None:
                values.add(spec.options.multiplier)
                values.update(tc.multiplier for tc in spec.options.trading_classes if tc.multiplier)
        return values

    def exercise_style(self, root: str) -> ExerciseStyle:
        return self._option_spec(root).exercise

    def pricing_model(self, root: str) -> PricingModel:
        return self._option_spec(root).model
