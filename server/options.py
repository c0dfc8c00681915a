"""Typed training options and the command-line flags generated from them. Torch-free.

A trainer's options are a dataclass in a torch-free module of its family (``server/vision/options.py``, ...), a
subclass of :class:`TrainOptions`. A field that is a flag says so with :func:`option`: its help, how the flag's
text is read, its group of the help. :func:`add_flags` declares one flag per such field on a parser
(``batch_size`` -> ``--batch-size``), each showing its default, and :func:`from_flags` builds the options back: the
flags given over the tiny preset (``--dry-run``, :attr:`TrainOptions.DRY_RUN`) over the defaults. The options check
themselves (``validate()``, raising :class:`~server.errors.InvalidArgument` naming the field), so the command line,
the tests and the trainers share one set of checks. ``antiphon serve`` builds its settings the same way
(``server/settings.py``), with environment variables besides.

A field may be built from flags of its own (``nested``): a typed part of the options (``KWSDataConfig``), or the
dict of model config fields a model file's config takes (the config itself lives beside its module in a file that
imports torch, so the flags name its fields in a torch-free dataclass, and the family's tests check that the
defaults agree).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

from server.errors import InvalidArgument

DEVICES = ("auto", "cpu", "cuda")
BUDGET = "budget (the first reached ends the run; the learning rate decays over it)"
MAX_MINUTES = 10080.0  # a week: a --minutes budget above it is a slip of the keyboard
PARSED_BY_ARGPARSE = (int, float, str, Path)  # a bad value is argparse's usage error; other readers name the field


@dataclass(frozen=True)
class Flag:
    """How a field of an options dataclass is a command-line flag (the metadata :func:`option` attaches)."""

    help: str | None  # None: only its default is shown
    name: str | None = None  # the flag with underscores (``speed_range``); None: the field's (``no_`` + it for off)
    # reads the flag's text (the list of its texts with ``nargs``); raises InvalidArgument (or ValueError) on a bad one
    parse: Callable[[Any], Any] = str
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    group: str | None = None  # the help's heading (None: the command's own options)
    shown: str | None = None  # the default as the help writes it (None: str(default))
    switch: bool | None = None  # a flag without a value that sets the field to this (``--no-progress``: False)
    exclusive: str | None = None  # flags of the same name exclude each other (``--epochs | --steps``)
    fallback: Callable[[], Any] | None = None  # the value when the flag is not given, for a field without default
    nested: type | None = None  # a dataclass of option fields: the field is built from its flags
    nargs: str | None = None  # a flag of several values (``*``: none or more), read by ``parse`` as one list

    def dest(self, field_name: str) -> str:
        if self.name is not None:
            return self.name
        return f"no_{field_name}" if self.switch is False else field_name


def option(default: Any = dataclasses.MISSING, help: str | None = None, **flag: Any) -> Any:
    """A dataclass field that is a flag; ``flag``: the other :class:`Flag` fields, and ``default_factory``."""
    factory = flag.pop("default_factory", dataclasses.MISSING)
    metadata = {"flag": Flag(help, **flag)}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class TrainOptions:
    """What every trainer's options share: the tiny preset and the checks."""

    # A few steps of a tiny model on tiny data: seconds on one CPU core. The tests train with it, and so does
    # ``antiphon train FAMILY --dry-run`` (flags given win over it).
    DRY_RUN: ClassVar[Mapping[str, Any]] = {}

    @classmethod
    def dry_run(cls, **overrides: Any) -> Self:
        """The tiny preset (a copy: a run cannot change it), ``overrides`` over it."""
        return cls(**{**copy.deepcopy(dict(cls.DRY_RUN)), **overrides})

    def validate(self) -> None:
        """Raise InvalidArgument naming the first bad field. Here, what every run shares (:func:`check_run`);
        each family checks its own fields after calling this."""
        check_run(self)


T = TypeVar("T", bound=TrainOptions)


# -- checks of option values, raising InvalidArgument naming the field -------------------------------------------
def at_least(opts: object, low: float, *names: str) -> None:
    """Each field ``names`` of ``opts`` is ``low`` or more (None passes: the field is off)."""
    for name in names:
        value = getattr(opts, name)
        if value is not None and value < low:
            raise InvalidArgument(name, f"must be at least {low:g}, got {value}")


def within(opts: object, name: str, low: float, high: float, ends: str = "[]", unit: str = "") -> None:
    """The field ``name`` of ``opts`` lies between ``low`` and ``high``, each end included (``[``, ``]``) or not
    (``(``, ``)``); None passes."""
    value = getattr(opts, name)
    if value is None:
        return
    above = value >= low if ends[0] == "[" else value > low
    below = value <= high if ends[1] == "]" else value < high
    if not (above and below):
        shown = f"{ends[0]}{low:g}, {high:g}{ends[1]}" + (f" {unit}" if unit else "")
        raise InvalidArgument(name, f"must be in {shown}, got {value}")


def check_budget(opts: Any, other: str) -> None:
    """A trainer's budget: its ``steps`` or its field ``other`` (epochs, minutes), at least one of them given."""
    if opts.steps is None and getattr(opts, other) is None:
        raise InvalidArgument("steps", f"give --steps or --{other}")
    at_least(opts, 1, "steps")


def check_snapshot(opts: Any) -> None:
    """``--snapshot`` reads the state of a run, so it comes with ``--resume``."""
    if opts.snapshot is not None and not opts.resume:
        raise InvalidArgument("snapshot", "writes the state a run saved beside --out: give --resume too")


def check_init(opts: Any) -> None:
    """``--init`` names a checkpoint to start a new run from; ``--resume`` continues a run (and keeps its start)."""
    if opts.init is None:
        return
    if opts.resume:
        raise InvalidArgument("init", "--resume continues a run and its weights; --init starts a run from one")
    if opts.init.is_dir():
        raise InvalidArgument("init", f"{opts.init} is a directory, not a checkpoint")
    if not opts.init.is_file():
        raise InvalidArgument("init", f"no such checkpoint: {opts.init}")


MAX_SEED = 2**63 - 1  # NumPy's generators take no negative seed, torch's none above 2**64 - 1


def check_run(opts: Any) -> None:
    """What every trainer's options share: a ``seed`` NumPy and torch both take, and the files the run writes
    (``out``, and ``snapshot`` where it has one) writable, checked before any work so that a run of hours does
    not fail at its end; the training loop's ``checkpoint_minutes``, where it has one, positive."""
    if not 0 <= opts.seed <= MAX_SEED:
        raise InvalidArgument("seed", f"must be in 0..2**63-1, got {opts.seed}")
    check_output(opts.out, "out")
    check_output(getattr(opts, "snapshot", None), "snapshot")
    minutes = getattr(opts, "checkpoint_minutes", 1.0)
    if not 0 < minutes < math.inf:
        raise InvalidArgument("checkpoint_minutes", f"must be a positive number of minutes, got {minutes}")


def check_output(path: Path | None, field: str) -> None:
    """A file to be written (None passes): not a folder, and inside a folder that exists or can be made, and
    that this user may write in."""
    if path is None:
        return
    if path.is_dir():
        raise InvalidArgument(field, f"{path} is a directory; name the file to write")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:  # the folders the run would make
        folder = folder.parent
    if not folder.is_dir():
        raise InvalidArgument(field, f"cannot write {path}: {folder} is not a directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InvalidArgument(field, f"cannot write {path}: {folder} is not writable")


def written_to(opts: Any) -> Path:
    """Where a run writes its checkpoint and card: ``--snapshot`` if given, else ``--out``."""
    snapshot: Path | None = getattr(opts, "snapshot", None)
    return snapshot if snapshot is not None else opts.out


# -- the training loop's options (server/training.py), alike in every trainer that runs it ----------------------
_LOOP: dict[str, dict[str, Any]] = {
    "steps": {"help": "optimizer steps", "group": BUDGET, "parse": int},
    "minutes": {"help": "wall-clock minutes of training", "group": BUDGET, "parse": float},
    "out": {"help": "checkpoint to write", "parse": Path},
    "resume": {"help": "continue from the training state saved beside --out", "switch": True},
    "snapshot": {
        "help": "with --resume: write the checkpoint and card of the saved state to PATH now, without training "
        "(the run goes on with --resume)",
        "parse": Path,
        "metavar": "PATH",
    },
    "device": {"help": "auto: CUDA when present", "choices": DEVICES},
    "precision": {
        "help": "auto: bf16 autocast where the hardware runs it natively",
        "choices": ("auto", "fp32", "bf16"),
    },
    "seed": {"help": "initialization and data order", "parse": int},
    "lr": {"help": "peak learning rate ({optimizer}, cosine decay)", "parse": float},
    "warmup_steps": {"help": "linear learning-rate warm-up", "parse": int},
    "eval_every": {"help": "steps between held-out estimates", "parse": int},
    "checkpoint_minutes": {"help": "minutes between resumable saves", "parse": float},
    "progress": {"help": "no progress bar (logs only)", "switch": False},
}


def loop_flag(name: str, optimizer: str = "") -> Flag:
    """The flag of the loop option ``name`` (``optimizer`` names the optimizer in ``--lr``'s help)."""
    spec = dict(_LOOP[name])
    return Flag(spec.pop("help").format(optimizer=optimizer), **spec)


def loop_option(name: str, default: Any, optimizer: str = "") -> Any:
    """A field of the loop's options (:class:`server.training.LoopOptions`) with the flag every trainer gives it."""
    return dataclasses.field(default=default, metadata={"flag": loop_flag(name, optimizer)})


@dataclass
class LoopTrainOptions(TrainOptions):
    """The options of a trainer that runs :class:`server.training.TrainingLoop`: its flags and their checks. A
    family redeclares the defaults that are its own (``out``, ``lr`` with its optimizer's name, ...); a redeclared
    field keeps its place among the flags. ``--precision`` is declared by the families whose loop casts."""

    steps: int | None = loop_option("steps", None)  # stop after this many optimizer steps...
    minutes: float | None = loop_option("minutes", None)  # ...or after this much wall time (whichever comes first)
    out: Path = loop_option("out", Path("runs/model.safetensors"))  # noqa: RUF009
    resume: bool = loop_option("resume", False)
    snapshot: Path | None = loop_option("snapshot", None)  # noqa: RUF009
    device: str = loop_option("device", "auto")
    seed: int = loop_option("seed", 0)
    lr: float = loop_option("lr", 1e-3)
    warmup_steps: int = loop_option("warmup_steps", 100)
    eval_every: int = loop_option("eval_every", 500)
    checkpoint_minutes: float = loop_option("checkpoint_minutes", 5.0)
    progress: bool = loop_option("progress", True)

    def validate(self) -> None:
        super().validate()
        check_budget(self, "minutes")
        within(self, "minutes", 0, MAX_MINUTES, "(]")  # NaN too: the budget would never end
        check_snapshot(self)


# -- readers of flag values ------------------------------------------------------------------------------------
def comma_list(value: str) -> tuple[str, ...]:
    """``"a, b,"`` -> ``("a", "b")``."""
    return tuple(part.strip() for part in value.split(",") if part.strip())


def float_pair(text: str, field: str) -> tuple[float, float]:
    """ "LOW,HIGH" -> (low, high); the ranges themselves are checked by the options they fill."""
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise InvalidArgument(field, f"give two numbers as LOW,HIGH, got {text!r}") from None
    return low, high


def optional_path(raw: str) -> Path | None:
    """A path, or None for ``none``."""
    return None if raw == "none" else Path(raw)


# -- flags from options, options from flags --------------------------------------------------------------------
def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _flags(cls: type) -> Iterator[tuple[dataclasses.Field[Any], Flag, str | None]]:
    """Every flag field of ``cls`` with its group, a nested dataclass's after its parent's place."""
    for f in fields(cls):
        flag: Flag | None = f.metadata.get("flag")
        if flag is None:
            continue
        if flag.nested is None:
            yield f, flag, flag.group
            continue
        for sub, sub_flag, group in _flags(flag.nested):
            yield sub, sub_flag, group or flag.group


def _help(f: dataclasses.Field[Any], flag: Flag) -> str:
    """The flag's help and its default (none where it is off; not again where the help says it)."""
    if flag.help is not None and "(default" in flag.help:
        return flag.help.replace("%", "%%")
    shown = flag.shown
    if shown is None:
        default = _default(f)
        shown = "False" if flag.switch is not None else "none" if default is None else str(default)
    said = f"{flag.help} " if flag.help is not None else ""  # a flag without help still shows its default
    return f"{said}(default: {shown})".replace("%", "%%")


def add_flags(parser: argparse.ArgumentParser, cls: type[TrainOptions], dry_run: str | None = None) -> None:
    """One flag per option field of ``cls`` (and ``--dry-run``, described by ``dry_run``, where ``cls`` has a
    preset). A flag not given is absent from the parsed namespace, so :func:`from_flags` can tell it from the
    default."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    exclusive: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for f, flag, group in _flags(cls):
        container: argparse._ActionsContainer = parser
        if flag.exclusive is not None:
            if flag.exclusive not in exclusive:
                exclusive[flag.exclusive] = parser.add_mutually_exclusive_group()
            container = exclusive[flag.exclusive]
        elif group is not None:
            if group not in groups:
                groups[group] = parser.add_argument_group(group)
            container = groups[group]
        dest = flag.dest(f.name)
        kwargs: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS, "help": _help(f, flag)}
        if flag.switch is not None:
            kwargs |= {"action": "store_const", "const": flag.switch}
        else:
            kwargs |= {"metavar": flag.metavar, "choices": flag.choices}
            if flag.nargs is not None:
                kwargs["nargs"] = flag.nargs
            if flag.parse in PARSED_BY_ARGPARSE:
                kwargs["type"] = flag.parse
        container.add_argument("--" + dest.replace("_", "-"), **kwargs)
    if cls.DRY_RUN:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            default=argparse.SUPPRESS,
            help=f"{dry_run or 'the tiny preset the tests train with'}; flags given win over it (default: False)",
        )


def _read(f: dataclasses.Field[Any], flag: Flag, raw: Any) -> Any:
    """The value of a given flag: argparse read the plain types; other readers run here and name the field."""
    if flag.switch is not None or flag.parse in PARSED_BY_ARGPARSE:
        return raw
    try:
        return flag.parse(raw)
    except InvalidArgument:
        raise
    except ValueError as exc:
        raise InvalidArgument(flag.dest(f.name), f"cannot read {raw!r}: {exc}") from None


def _given(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The fields of ``cls`` (one level) whose flags were given, read."""
    values: dict[str, Any] = {}
    for f in fields(cls):
        flag: Flag | None = f.metadata.get("flag")
        if flag is not None and flag.nested is None and hasattr(args, flag.dest(f.name)):
            values[f.name] = _read(f, flag, getattr(args, flag.dest(f.name)))
    return values


def _nested_value(base: Any, nested: type, args: argparse.Namespace) -> Any:
    """A nested field: ``base`` (the preset's or the default) with the given flags over it. A typed part is
    replaced field by field; a dict of model config fields gets every flag's default first (None: left out, the
    config's own default then applies)."""
    given = _given(nested, args)
    if dataclasses.is_dataclass(base) and not isinstance(base, type):
        return dataclasses.replace(base, **given)
    defaults = {f.name: _default(f) for f in fields(nested)}
    merged = {**defaults, **(base or {}), **given}
    return {k: v for k, v in merged.items() if v is not None}


def from_flags(cls: type[T], args: argparse.Namespace) -> T:
    """The options the parsed flags ask for: each flag given, else the preset's value (with ``--dry-run``), else
    the field's default. Not validated: the trainer validates what it is given."""
    preset = copy.deepcopy(dict(cls.DRY_RUN)) if getattr(args, "dry_run", False) else {}
    given = _given(cls, args)
    flags: dict[str, Flag | None] = {f.name: f.metadata.get("flag") for f in fields(cls)}  # type: ignore[arg-type]
    # A flag given also sets aside the preset's value of the flags it excludes (--epochs over the preset's --steps).
    excluded = {flag.exclusive for name in given if (flag := flags[name]) is not None and flag.exclusive}
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]  # TrainOptions subclasses are dataclasses
        flag = flags[f.name]
        if flag is not None and flag.nested is not None:
            base = preset[f.name] if f.name in preset else _default(f)
            values[f.name] = _nested_value(base, flag.nested, args)
        elif f.name in given:
            values[f.name] = given[f.name]
        elif f.name in preset and (flag is None or flag.exclusive not in excluded):
            values[f.name] = preset[f.name]
        elif flag is not None and flag.fallback is not None:
            values[f.name] = flag.fallback()
    return cls(**values)
