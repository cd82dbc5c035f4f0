"""Load and validate the YAML files of a configuration directory.

Each file has exactly one schema (a pydantic model with ``extra="forbid"``), shared by
the shipped ``*.example.yaml`` and the user's file.  Every problem is reported as one
line naming the file, the key path and what is wrong; duplicate keys are errors too
(plain YAML would silently keep the last one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from portfolio_pipeline.config.flow import DEFAULT_FLOW, FlowConfig
from portfolio_pipeline.config.notifications import NotificationsFile
from portfolio_pipeline.config.pricing import DEFAULT_PRICING, PricingConfig
from portfolio_pipeline.config.safe_yaml import YamlProblem, load_yaml_file
from portfolio_pipeline.config.streaming import DEFAULT_STREAMING, StreamingConfig
from portfolio_pipeline.domain.accounts import AccountsFile
from portfolio_pipeline.domain.instruments import InstrumentsFile, InstrumentTable
from portfolio_pipeline.domain.lifecycle import ExitRulesFile
from portfolio_pipeline.domain.regime import RiskMatrix
from portfolio_pipeline.domain.strategies.settings import StrategiesFile
from portfolio_pipeline.quant.scenario_config import StressScenariosFile

M = TypeVar("M", bound=BaseModel)

#: file name -> (schema, required): the one registry of configuration files (a constant;
#: a feature that adds a file adds its line here).
CONFIG_FILES: Mapping[str, tuple[type[BaseModel], bool]] = {
    "instruments.yaml": (InstrumentsFile, True),
    "risk_matrix.yaml": (RiskMatrix, True),
    "accounts.yaml": (AccountsFile, True),
    "pricing.yaml": (PricingConfig, False),
    "notifications.yaml": (NotificationsFile, False),
    "stress_scenarios.yaml": (StressScenariosFile, False),
    "exit_rules.yaml": (ExitRulesFile, False),
    "strategies.yaml": (StrategiesFile, False),
    "streaming.yaml": (StreamingConfig, False),
    "flow.yaml": (FlowConfig, False),
}


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    file: str
    key_path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.key_path}" if self.key_path else self.file
        return f"{where}: {self.message}"


class ConfigError(ValueError):
    """One or more configuration problems; ``str()`` gives one line per problem."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def _key_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def _problems_from_validation(file: str, err: ValidationError) -> list[ConfigProblem]:
    problems = []
    for e in err.errors():
        loc = tuple(x for x in e["loc"] if not (isinstance(x, str) and x.startswith("function-after")))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif "input" in e and e["type"] not in ("model_type",) and not isinstance(e["input"], Mapping):
            shown = repr(e["input"])
            msg = f"{msg} (got {shown if len(shown) <= 80 else shown[:77] + '...'})"
        problems.append(ConfigProblem(file, _key_path(loc), msg))
    return problems


def load_config_file(path: Path, model: type[M]) -> M:
    """Parse and validate one YAML file; raise :class:`ConfigError` naming every problem."""
    name = str(path)
    try:
        data = load_yaml_file(path)
    except YamlProblem as exc:
        raise ConfigError([ConfigProblem(name, exc.where, exc.message)]) from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError([ConfigProblem(name, "(top level)", "must be a mapping of keys")])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_problems_from_validation(name, exc)) from None
    except (TypeError, KeyError, AttributeError, ArithmeticError, RecursionError) as exc:
        # a validator tripped over a value of an unexpected shape: still one line, no traceback
        raise ConfigError([ConfigProblem(name, "", f"invalid value ({type(exc).__name__}: {exc})")]) from None


@dataclass(frozen=True)
class PlatformConfig:
    """The validated configuration directory: one typed attribute per file.

    Loaded and validated once (:func:`load_platform_config`).  An optional file that is
    absent takes its documented default (``pricing``, ``stress_scenarios``,
    ``streaming``, ``flow``) or is None where "not configured" means something different from
    any default (``notifications``: alerts go to the log; ``exit_rules``: no exit
    signals; ``strategies``: no manual overrides).
    """

    directory: Path
    instruments: InstrumentTable
    risk_matrix: RiskMatrix
    accounts: AccountsFile
    pricing: PricingConfig = field(default_factory=lambda: DEFAULT_PRICING)
    notifications: NotificationsFile | None = None
    stress_scenarios: StressScenariosFile = field(default_factory=StressScenariosFile)
    exit_rules: ExitRulesFile | None = None
    strategies: StrategiesFile | None = None
    streaming: StreamingConfig = field(default_factory=lambda: DEFAULT_STREAMING)
    flow: FlowConfig = field(default_factory=lambda: DEFAULT_FLOW)


def _load_all(directory: Path) -> tuple[dict[str, BaseModel], list[ConfigProblem]]:
    loaded: dict[str, BaseModel] = {}
    problems: list[ConfigProblem] = []
    try:
        found = directory.is_dir()
    except (ValueError, OSError) as exc:  # a NUL byte or an over-long name
        return loaded, [ConfigProblem(repr(str(directory)), "", f"not a usable directory name ({exc})")]
    if not found:
        return loaded, [ConfigProblem(str(directory), "", "configuration directory not found")]
    for file_name, (model, required) in CONFIG_FILES.items():
        path = directory / file_name
        if not path.exists():
            if required:
                problems.append(ConfigProblem(str(path), "", "required file is missing"))
            continue
        try:
            loaded[file_name] = load_config_file(path, model)
        except ConfigError as exc:
            problems.extend(exc.problems)
    known = set(CONFIG_FILES) | {f.replace(".yaml", ".example.yaml") for f in CONFIG_FILES}
    for path in sorted(directory.glob("*.y*ml")):
        if path.name not in known:
            problems.append(ConfigProblem(str(path), "", "unknown configuration file"))
    if not problems:
        from portfolio_pipeline.config.references import reference_problems

        problems.extend(reference_problems(directory, loaded))
    for file_name, (model, _required) in CONFIG_FILES.items():
        example = directory / file_name.replace(".yaml", ".example.yaml")
        if example.exists():
            try:
                load_config_file(example, model)
            except ConfigError as exc:
                problems.extend(exc.problems)
    return loaded, problems


def check_config_dir(directory: Path) -> tuple[list[ConfigProblem], str]:
    """Validate a directory: (problems, one-line summary)."""
    loaded, problems = _load_all(directory)
    if problems:
        return problems, f"{len(problems)} problem(s) in {directory}"
    instruments = _required(loaded, "instruments.yaml", InstrumentsFile)
    accounts = _required(loaded, "accounts.yaml", AccountsFile)
    matrix = _required(loaded, "risk_matrix.yaml", RiskMatrix)
    summary = (
        f"ok: {directory}: {len(loaded)} files, {len(instruments.instruments)} instruments, "
        f"{len(matrix.regimes)} regimes, {len(accounts.book())} account(s) "
        f"({', '.join(sorted({a.broker for a in accounts.book()}))})"
    )
    return [], summary


def _optional(loaded: Mapping[str, BaseModel], file_name: str, model: type[M]) -> M | None:
    found = loaded.get(file_name)
    if found is not None and not isinstance(found, model):  # pragma: no cover - CONFIG_FILES
        raise TypeError(f"{file_name}: loaded as {type(found).__name__}, expected {model.__name__}")
    return found


def _required(loaded: Mapping[str, BaseModel], file_name: str, model: type[M]) -> M:
    found = _optional(loaded, file_name, model)
    if found is None:  # pragma: no cover - _load_all reports a missing required file
        raise KeyError(file_name)
    return found


def load_platform_config(directory: Path) -> PlatformConfig:
    """Load a configuration directory; raise :class:`ConfigError` listing every problem."""
    loaded, problems = _load_all(directory)
    if problems:
        raise ConfigError(problems)
    instruments = _required(loaded, "instruments.yaml", InstrumentsFile)
    return PlatformConfig(
        directory=directory,
        instruments=InstrumentTable.from_file_model(instruments, source=str(directory / "instruments.yaml")),
        risk_matrix=_required(loaded, "risk_matrix.yaml", RiskMatrix),
        accounts=_required(loaded, "accounts.yaml", AccountsFile),
        pricing=_optional(loaded, "pricing.yaml", PricingConfig) or DEFAULT_PRICING,
        notifications=_optional(loaded, "notifications.yaml", NotificationsFile),
        stress_scenarios=_optional(loaded, "stress_scenarios.yaml", StressScenariosFile) or StressScenariosFile(),
        exit_rules=_optional(loaded, "exit_rules.yaml", ExitRulesFile),
        strategies=_optional(loaded, "strategies.yaml", StrategiesFile),
        streaming=_optional(loaded, "streaming.yaml", StreamingConfig) or DEFAULT_STREAMING,
        flow=_optional(loaded, "flow.yaml", FlowConfig) or DEFAULT_FLOW,
    )
