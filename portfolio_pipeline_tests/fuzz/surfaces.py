"""Input surfaces under fuzzing: generators (hypothesis strategies) and one runner each.

Shared by the fuzz tests (small budget, every test run) and
``benchmarks/fuzz_surfaces.py`` (>= 10,000 cases per surface).  Every runner feeds one
generated input to the real entry point and classifies what happened:

- ``ok``: accepted (and, for configuration, the accepted values hold the schema's own
  promises: no non-finite number anywhere);
- ``clean``: refused the way the CLI reports bad input (a :class:`ConfigProblem` per line,
  an import/domain error naming file and row, a usage error), exit code non-zero;
- ``traceback``: anything else (an exception the CLI would report as an internal error,
  or a non-finite number accepted).

Generators start from the shipped configuration and the importer fixtures and mutate
one value, key or byte range, with a bias to the inputs that broke the loaders before
(issue 17): non-UTF-8 bytes, impossible dates, ``!!int x``, 5,000-digit integers,
``!!bool maybe``, unhashable keys, deep nesting, directories for files, extreme dates and
Flex offsets, unknown XML encodings, 128 KiB CSV fields, NUL bytes, ``nan``/``1e308``.
"""

from __future__ import annotations

import csv
import functools
import io
import math
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from hypothesis import strategies as st
from pydantic import BaseModel

Outcome = Literal["ok", "clean", "traceback"]

ROOT: Final = Path(__file__).resolve().parents[2]
CONFIG_DIR: Final = ROOT / "config"
FIXTURES: Final = ROOT / "portfolio_pipeline_tests" / "brokers" / "history" / "fixtures"
FLEX_FIXTURE: Final = FIXTURES / "ibkr_flex_2018-02.xml"
CSV_FIXTURE: Final = FIXTURES / "tastytrade_transactions_history_5WX12345_180201_to_180228.csv"

# --- the nasty values ------------------------------------------------------------------

YAML_VALUES: Final[tuple[str, ...]] = (
    ".inf", "-.inf", ".nan", ".NaN", "nan", "'nan'", "inf", "1e400", "-1e400", "1e308",
    "!!int x", "!!float y", "!!bool maybe", "!!timestamp z", "!!binary '%%%'",
    "!!set {a, b}", "!!omap [a, b]", "!!pairs [1]", "!!python/object:os.system x",
    "!!str", "!!null x", "!!seq x", "!!map x",
    "2018-02-30", "0001-01-01", "9999-12-31", "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00+14:00", "2018-02-05 25:61:61",
    "9" * 5000, "-" + "9" * 5000, "0x" + "f" * 300, "0b" + "1" * 400, "0o" + "7" * 300,
    "1_000_000", "190:20:30", "-0", "0", "-1", "1e-320", "~", "''", "[]", "{}",
    "{? [a, b]: 1}", "[" * 300 + "]" * 300, "{a: " * 80 + "1" + "}" * 80,
    "*nope", "&a [*a]", "&b x", "'\u202e\u2066bidi'", "'\x07'", "x" * 12_000,
    "'" + "y" * 300 + "'", "yes", "no", "on", "off", "null", "true", "[1, .nan]",
    "{x: .inf}", "'2018-02-30'", "0.", "-.5e3",
)
YAML_LINES: Final[tuple[str, ...]] = (
    "? [a, b]\n: 1", "? {a: 1}\n: 2", "<<: *nope", "<<: [1, 2]", "<<: 1",
    "%TAG ! tag:x,2000:", "---\n---", "...", "- x", "\t: tab", "'\x00': nul",
    "&a a: &b [*a]", "x: &x [*x, *x]",
)
FLEX_VALUES: Final[tuple[str, ...]] = (
    "", " ", "--", "0", "-0", "-5", "-1e308", "1e308", "1e309", "nan", "inf", "-inf",
    "9" * 5000, "1,2,3", "0x10", "20180230", "00010101", "99991231", "20180205;153000",
    "00010101;000000", "99991231;235959", "00010101;000000 +9999", "99991231;235959 -9999",
    "20180205;153000 +0060", "20180205;153000 -0060", "20180205;153000 +2400",
    "20180205;153000 Mars/Olympus", "20180205;153000 EST", "2018-02-05;25:61:61",
    "2018-02-05T15:30:00+99:99", "0001-01-01;00:00:00 -1400", "9999-12-31;23:59:59 +1400",
    "P", "C", "X", "BUY", "SELL", "BUY (Ca.)", "SPX", "SPXW", "ES", "ZZZZ", "A", "Ex", "Ep",
    "STK", "OPT", "FUT", "FOP", "CASH", "BOND", "\u202e", "x" * 131_072,
    "&amp;", "&#0;", "&#xD800;", "&lt;&gt;", "&unknown;",
)
DATE_VALUES: Final[tuple[str, ...]] = (
    "20180230", "00010101", "99991231", "00000000", "2018-02-30", "0001-01-01", "9999-12-31",
    "00010101;000000", "99991231;235959", "00010101;000000 +9999", "99991231;235959 -9999",
    "20180205;153000 +0060", "20180205;153000 -0060", "20180205;153000 +2400",
    "00010101;000000 EST", "99991231;235959 EST", "99991231;235959 -1400",
    "00010101;000000 +1400", "20180205;153000 Mars/Olympus", "2018-02-05;25:61:61",
    "2018-02-30T10:00:00-0500", "0001-01-01T00:00:00+1400", "9999-12-31T23:59:59-1400",
    "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00",
    "9999-12-31T23:59:59", "2018-02-05T10:00:00+99:99", "2/30/18", "12/31/9999", "1/1/0001",
    "0/0/0", "",
)
NUMBER_VALUES: Final[tuple[str, ...]] = (
    "1e308", "-1e308", "1.7976931348623157e308", "1e309", "nan", "inf", "-0", "0", "-5",
    "-0.01", "9" * 5000, "1e-320", "5e-324", "1,0,0", "0x10", "--", "",
)
_FLEX_DATE_ATTRIBUTES: Final = frozenset({"dateTime", "tradeDate", "tradeTime", "date", "expiry",
                                          "settleDate", "reportDate"})
_FLEX_NUMBER_ATTRIBUTES: Final = frozenset({"strike", "multiplier", "quantity", "tradePrice",
                                            "ibCommission", "taxes", "amount", "commisionsAndTax"})
_CSV_NUMBER_COLUMNS: Final = frozenset({"Value", "Quantity", "Average Price", "Commissions", "Fees",
                                        "Multiplier", "Strike Price", "Total"})
CSV_VALUES: Final[tuple[str, ...]] = (
    "", " ", "--", "0", "-0", "-5", "-1e308", "1e308", "1e309", "nan", "inf", "-inf",
    "9" * 5000, "1,234.50", "-1,234.50", "0x10", "2018-02-30T10:00:00-0500",
    "0001-01-01T00:00:00+1400", "9999-12-31T23:59:59-1400", "0001-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59-23:59", "2018-02-05T10:00:00", "2018-02-05", "20180205",
    "2/30/18", "13/01/18", "0/0/0", "12/31/9999", "1/1/0001",
    "BUY_TO_OPEN", "SELL_TO_CLOSE", "BUY", "SIDEWAYS", "CALL", "PUT", "STRADDLE",
    "Trade", "Receive Deliver", "Money Movement", "Deposit", "Expiration", "Assignment",
    "Equity", "Equity Option", "Future", "Future Option", "Cryptocurrency",
    "SPY", "SPX", "./ESH8 EW4H8 180316P2600", "ZZZZ", "@ -1.00", "Bought 1 SPY @ 1e308",
    "x" * 131_072, "a\x00b", "\u202e", "\ufeff", '"', "a\nb",
)


# --- helpers -------------------------------------------------------------------------


def non_finite_paths(value: Any, path: str = "") -> Iterator[str]:
    """Key paths of non-finite floats anywhere in a model/dict/list."""
    if isinstance(value, float):
        if not math.isfinite(value):
            yield path or "(value)"
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from non_finite_paths(getattr(value, name), f"{path}.{name}" if path else name)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from non_finite_paths(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple | set | frozenset):
        for i, item in enumerate(value):
            yield from non_finite_paths(item, f"{path}[{i}]")


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    detail: str


# --- configuration ---------------------------------------------------------------------

CONFIG_FILE_NAMES: Final = tuple(sorted(p.name for p in CONFIG_DIR.glob("*.yaml") if ".example." not in p.name))


@dataclass(frozen=True, slots=True)
class ConfigCase:
    """Replace ``file_name`` by ``content`` (bytes), or by a directory when None."""

    file_name: str
    content: bytes | None


_VALUE_LINE: Final = re.compile(r"^(?P<indent>\s*(?:-\s+)?)(?P<key>[A-Za-z_][\w.]*):(?P<rest>\s*\S.*)?$")


@st.composite
def config_cases(draw: st.DrawFn) -> ConfigCase:
    file_name = draw(st.sampled_from(CONFIG_FILE_NAMES))
    text = (CONFIG_DIR / file_name).read_text(encoding="utf-8")
    lines = text.splitlines()
    kind = draw(st.sampled_from(
        ["value", "value", "value", "value", "key_case", "line", "bytes", "truncate", "text", "directory"]
    ))
    if kind == "directory":
        return ConfigCase(file_name, None)
    if kind == "bytes":
        raw = bytearray(text.encode("utf-8"))
        position = draw(st.integers(0, len(raw)))
        junk = draw(st.sampled_from([b"\xff", b"\xc3(", b"\x00", b"\xe2\x82", b"\xfe\xff", b"\x80abc"]))
        return ConfigCase(file_name, bytes(raw[:position]) + junk + bytes(raw[position:]))
    if kind == "truncate":
        raw = text.encode("utf-8")
        return ConfigCase(file_name, raw[: draw(st.integers(0, len(raw)))])
    if kind == "text":
        return ConfigCase(file_name, draw(st.text(max_size=200)).encode("utf-8", "surrogatepass"))
    candidates = [i for i, line in enumerate(lines) if _VALUE_LINE.match(line)]
    index = draw(st.sampled_from(candidates))
    match = _VALUE_LINE.match(lines[index])
    assert match is not None
    if kind == "value":
        value = draw(st.sampled_from(YAML_VALUES) | st.text(max_size=30).map(repr))
        lines[index] = f"{match['indent']}{match['key']}: {value}"
    elif kind == "key_case":
        # the same key again in another case, as a sibling: `spx:` after `SPX:`
        key = match["key"]
        other = key.lower() if key != key.lower() else key.upper()
        lines.insert(index + 1, f"{match['indent']}{other}:{match['rest'] or ''}")
    else:
        indent = " " * len(match["indent"])
        lines.insert(index, indent + draw(st.sampled_from(YAML_LINES)).replace("\n", "\n" + indent))
    return ConfigCase(file_name, ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass"))


def prepare_config_dir(directory: Path) -> None:
    """Copy the shipped (non-example) configuration files into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in CONFIG_FILE_NAMES:
        shutil.copyfile(CONFIG_DIR / name, directory / name)


def run_config_case(case: ConfigCase, directory: Path) -> Result:
    """Write the case into a copy of the configuration and run ``config check``'s logic."""
    from portfolio_pipeline.config import ConfigError, check_config_dir, load_platform_config

    target = directory / case.file_name
    if target.is_dir():
        target.rmdir()
    elif target.exists():
        target.unlink()
    try:
        if case.content is None:
            target.mkdir()
        else:
            target.write_bytes(case.content)
        try:
            problems, _summary = check_config_dir(directory)
            if problems:
                bad = [str(p) for p in problems if "\n" in str(p) or not str(p).startswith(str(directory))]
                if bad:
                    return Result("traceback", f"problem not one line naming the file: {bad[0]!r}")
                return Result("clean", str(problems[0]))
            try:
                config = load_platform_config(directory)
            except ConfigError as exc:
                return Result("traceback", f"config check passed but loading failed: {exc}")
            models: list[Any] = [
                config.risk_matrix, config.accounts, config.pricing, config.notifications,
                config.stress_scenarios, config.exit_rules, config.strategies, config.streaming,
            ]
            models = [m for m in models if m is not None]
            models += [config.instruments[root] for root in config.instruments]
            for model in models:
                for path in non_finite_paths(model):
                    return Result("traceback", f"non-finite number accepted at {type(model).__name__}.{path}")
            return Result("ok", "")
        except Exception as exc:
            return Result("traceback", f"{type(exc).__name__}: {str(exc)[:200]}")
    finally:
        if target.is_dir():
            target.rmdir()
        shutil.copyfile(CONFIG_DIR / case.file_name, target)


# --- IBKR Flex XML ---------------------------------------------------------------------

FLEX_PARSED_ATTRIBUTES: Final = frozenset({
    "dateTime", "tradeDate", "tradeTime", "date", "expiry", "strike", "multiplier", "quantity",
    "tradePrice", "ibCommission", "taxes", "amount", "putCall", "buySell", "assetCategory",
    "symbol", "underlyingSymbol", "tradingClass", "currency", "notes", "levelOfDetail",
    "accountId", "tradeID", "transactionID", "type", "transactionType", "settleDate",
    "reportDate", "description", "commisionsAndTax", "ibOrderID", "orderReference",
})
_ATTRIBUTE: Final = re.compile(rb'(?P<name>[A-Za-z]+)="(?P<value>[^"]*)"')


def _xml_escape(value: str) -> str:
    if "&" in value and value.endswith(";"):
        return value  # an entity/character reference, kept as the raw text to test the parser
    return value.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")


@st.composite
def flex_cases(draw: st.DrawFn) -> bytes:
    raw = FLEX_FIXTURE.read_bytes()
    kind = draw(st.sampled_from(["attribute", "attribute", "attribute", "attribute", "encoding",
                                 "bytes", "truncate", "root"]))
    if kind == "encoding":
        encoding = draw(st.sampled_from(["x-unknown", "utf-16", "latin-1", "ascii", "UTF-32", "", "\u00e9"]))
        return raw.replace(b'encoding="UTF-8"', f'encoding="{encoding}"'.encode())
    if kind == "bytes":
        position = draw(st.integers(0, len(raw)))
        junk = draw(st.sampled_from([b"\xff", b"\x00", b"<", b"&", b"]]>", b"\xc3(", b"<!DOCTYPE x>"]))
        return raw[:position] + junk + raw[position:]
    if kind == "truncate":
        return raw[: draw(st.integers(0, len(raw)))]
    if kind == "root":
        return draw(st.sampled_from([b"", b"<x/>", b"<FlexQueryResponse/>",
                                     b"<FlexQueryResponse><FlexStatements><FlexStatement/></FlexStatements>"
                                     b"</FlexQueryResponse>"]))
    count = draw(st.integers(1, 3))
    out = raw
    for _ in range(count):
        matches = list(_ATTRIBUTE.finditer(out))
        parsed = [m for m in matches if m["name"].decode() in FLEX_PARSED_ATTRIBUTES]
        match = draw(st.sampled_from(parsed) if draw(st.integers(0, 9)) else st.sampled_from(matches))
        name = match["name"].decode()
        if name in _FLEX_DATE_ATTRIBUTES and draw(st.booleans()):
            value = draw(st.sampled_from(DATE_VALUES))
        elif name in _FLEX_NUMBER_ATTRIBUTES and draw(st.booleans()):
            value = draw(st.sampled_from(NUMBER_VALUES))
        else:
            value = draw(st.sampled_from(FLEX_VALUES) | st.text(max_size=20))
        encoded = _xml_escape(value).encode("utf-8", "surrogatepass")
        out = out[: match.start("value")] + encoded + out[match.end("value"):]
    return out


def run_flex_case(content: bytes) -> Result:
    from portfolio_pipeline.brokers.history import parse_ibkr_flex
    from portfolio_pipeline.domain.errors import DomainError

    try:
        parse_ibkr_flex(content, _instruments(), source_name="fuzz.xml")
        return Result("ok", "")
    except DomainError as exc:
        return _clean_unless_multiline(exc)
    except Exception as exc:
        return Result("traceback", f"{type(exc).__name__}: {str(exc)[:200]}")


def _clean_unless_multiline(exc: Exception) -> Result:
    text = str(exc)
    if "\n" in text or not text.strip():
        return Result("traceback", f"error is not one line: {text[:200]!r}")
    return Result("clean", text[:200])


# --- Tastytrade CSV ------------------------------------------------------------------


@st.composite
def tastytrade_cases(draw: st.DrawFn) -> bytes:
    raw = CSV_FIXTURE.read_bytes()
    kind = draw(st.sampled_from(["cell", "cell", "cell", "cell", "header", "bytes", "truncate"]))
    if kind == "bytes":
        position = draw(st.integers(0, len(raw)))
        junk = draw(st.sampled_from([b"\xff", b"\x00", b'"', b"\r", b"\xc3(", b",,,,"]))
        return raw[:position] + junk + raw[position:]
    if kind == "truncate":
        return raw[: draw(st.integers(0, len(raw)))]
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))
    if kind == "header":
        column = draw(st.integers(0, len(rows[0]) - 1))
        rows[0][column] = draw(st.sampled_from(["", "Date", "Extra", "Value", "date", "\ufeffDate"]))
    else:
        for _ in range(draw(st.integers(1, 3))):
            row = draw(st.integers(1, len(rows) - 1))
            column = draw(st.integers(0, len(rows[row]) - 1))
            name = rows[0][column] if column < len(rows[0]) else ""
            if name in ("Date", "Expiration Date") and draw(st.booleans()):
                rows[row][column] = draw(st.sampled_from(DATE_VALUES))
            elif name in _CSV_NUMBER_COLUMNS and draw(st.booleans()):
                rows[row][column] = draw(st.sampled_from(NUMBER_VALUES))
            else:
                rows[row][column] = draw(st.sampled_from(CSV_VALUES) | st.text(max_size=20))
    buffer = io.StringIO(newline="")
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue().encode("utf-8", "surrogatepass")


def run_tastytrade_case(content: bytes) -> Result:
    from portfolio_pipeline.brokers.history import parse_tastytrade_csv
    from portfolio_pipeline.domain.errors import DomainError

    try:
        parse_tastytrade_csv(content, _instruments(), source_name=CSV_FIXTURE.name)
        return Result("ok", "")
    except DomainError as exc:
        return _clean_unless_multiline(exc)
    except Exception as exc:
        return Result("traceback", f"{type(exc).__name__}: {str(exc)[:200]}")


@functools.cache
def _instruments() -> Any:
    from portfolio_pipeline.config import load_platform_config

    return load_platform_config(CONFIG_DIR).instruments


# --- command lines ---------------------------------------------------------------------

ARG_VALUES: Final[tuple[str, ...]] = (
    "", "nan", "inf", "-inf", "1e308", "-1", "0", "60", "1e-320", "9" * 5000, "x", "--",
    "2018-02-30", "1900-01-01", "0001-01-01", "9999-12-31", "2018-02-05", "2018-2-5",
    "20180205", "2018-02-05T00:00:00", "\u202e", "a\x00b", "/", "/dev/null", ".", "..",
    "-v", "--help", "ORD-1", "' OR 1=1 --", "x" * 10_000,
)

#: commands run in-process (cheap: parse, validate, read the database); ``demo``/``run``
#: would start the pipeline on valid input, so for them only the arguments are parsed
#: unless the configuration they check first is broken.
CLI_SHAPES: Final[tuple[tuple[str, ...], ...]] = (
    ("config", "check", "{v}"),
    ("import", "ibkr-flex", "{v}"),
    ("import", "tastytrade-csv", "{v}", "--account", "{v}"),
    ("import", "ibkr-flex", "{path}", "--tz", "{v}"),
    ("orders", "list", "--status", "{v}"),
    ("orders", "show", "{v}"),
    ("orders", "stage", "{v}", "--ttl-minutes", "{v}"),
    ("orders", "reject", "{v}", "--reason", "{v}"),
    ("orders", "confirm", "{v}", "{v}"),
    ("orders", "expire", "{v}"),
    ("alerts", "list", "--limit", "{v}"),
    ("alerts", "ack", "{v}"),
    ("demo", "--start", "{v}", "--end", "{v}"),
    ("run", "--date", "{v}"),
    ("db", "{v}"),
    ("{v}",),
)


@st.composite
def cli_cases(draw: st.DrawFn) -> list[str]:
    shape = draw(st.sampled_from(CLI_SHAPES))
    args: list[str] = []
    for part in shape:
        if part == "{v}":
            args.append(draw(st.sampled_from(ARG_VALUES) | st.text(max_size=12)))
        elif part == "{path}":
            args.append(str(FLEX_FIXTURE))
        else:
            args.append(part)
    if draw(st.booleans()):
        args.insert(0, "-v")
    return args


def run_cli_case(args: list[str]) -> Result:
    """Run ``portfolio ARGS`` in-process (``PORTFOLIO_HOME`` must point at a temp dir)."""
    from click.testing import CliRunner

    from portfolio_pipeline.cli import main

    name = args[1] if args[:1] == ["-v"] and len(args) > 1 else (args[0] if args else "")
    parse_only = name in ("demo", "run") and not {"--help", "-h"} & set(args)
    if parse_only:
        return _parse_only(args)
    result = CliRunner().invoke(main, args, catch_exceptions=True)
    return _classify(result.exit_code, result.output, result.exception)


def _parse_only(args: list[str]) -> Result:
    import click

    from portfolio_pipeline.cli import main

    rest = list(args[1:] if args[:1] == ["-v"] else args)
    command = main.commands[rest[0]]
    try:
        command.make_context(rest[0], rest[1:])
        return Result("ok", "parsed")
    except click.exceptions.Exit as exc:
        return Result("ok" if exc.exit_code == 0 else "clean", "")
    except click.ClickException as exc:
        return _clean_unless_multiline(exc)
    except Exception as exc:
        return Result("traceback", f"{type(exc).__name__}: {str(exc)[:200]}")


def _classify(exit_code: int, output: str, exception: BaseException | None) -> Result:
    if exception is not None and not isinstance(exception, SystemExit):
        return Result("traceback", f"{type(exception).__name__}: {str(exception)[:200]}")
    # -v asks for the traceback; it must still come with the one-line error
    if "Traceback (most recent call last)" in output and "\nerror: " not in "\n" + output:
        return Result("traceback", output[-300:])
    if "internal error (" in output:
        return Result("traceback", output.strip().splitlines()[-1][:300])
    if exit_code == 0:
        return Result("ok", "")
    return Result("clean", output.strip().splitlines()[-1][:200] if output.strip() else f"exit {exit_code}")
