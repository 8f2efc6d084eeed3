"""The generation-parameter schema: every field of a generation request, its limits, and the one set of
checks that the config, the CLI, the popup, the queue and the worker share.

Each field is declared once below (:data:`FIELDS`): its type, bounds, multiple-of, what leaving it out
means, its CLI flag, whether it is a ``[generation]`` config key, its popup label and its help text. A
check names where the bad value came from (a :class:`Source`): ``config.toml: generation.height``,
``--height``, the popup's Height field, ``job abc123``. The rules of a model family (multiples of 16,
``frames = 4k+1``) are checked here too, on the *resolved* parameters, each value named by its source.

Standard library only, and cheap to import: ``vidtray --help`` loads it, and ``vidtray.config`` imports
it (so it must not import the config).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

from vidtray.errors import ConfigError, UserError

MIN_SIDE, MAX_SIDE = 32, 2048
MAX_FRAMES, MAX_STEPS = 1024, 1000
#: Below MIN_FPS a clip's frame times overflow the mp4 time base (and nobody watches 1 frame in 10 s).
MIN_FPS, MAX_FPS = 0.1, 120
MAX_SEED = 2**63 - 1
MAX_PROMPT_CHARS = 4000
SIZE_MULTIPLE = 8
DEVICES = ("auto", "cuda", "mps", "cpu")

Kind = Literal["int", "number", "text", "choice"]
#: A field's value as parsed from text (``parse_problem``): a whole number, a number or a text.
Value = int | float | str
T = TypeVar("T")


# NamedTuples, not frozen dataclasses: `vidtray --help` imports this module, and a dataclass costs about
# ten times as much to define.


class Field(NamedTuple):
    """One generation parameter. ``None`` (left out) means ``empty``; a ``required`` field has no default."""

    name: str  # the attribute of generation.Request / Params and the key of a job's request
    kind: Kind
    low: int | float = 0
    high: int | float = 0  # for text: the most characters
    multiple: int = 1
    choices: tuple[str, ...] = ()
    required: bool = False
    empty: str = ""  # what leaving it out means ("the model's default")
    blank: str = ""  # the rule a blank text breaks ("" = a blank text counts as left out)
    flag: str | None = None  # the CLI option; None for the positional PROMPT
    metavar: str = ""
    label: str = ""  # the popup's label for it
    noun: str = ""  # how a message names it outside the CLI ("the prompt"); default: the name
    help: str = ""
    config: bool = False  # also a key of the config's [generation] table

    @property
    def subject(self) -> str:
        return self.noun or self.name

    def rules(self) -> str:
        """The limits in words, for --help and the settings file: ``32-2048, a multiple of 8``."""
        if self.kind == "int":
            high = "2^63-1" if self.high == MAX_SEED else _fmt(self.high)
            text = f"{_fmt(self.low)}-{high}"
            return text + (f", a multiple of {self.multiple}" if self.multiple > 1 else "")
        if self.kind == "number":
            return f"{_fmt(self.low)}-{_fmt(self.high)}"
        if self.kind == "text" and self.high:
            return f"at most {_fmt(self.high)} characters"
        return ""

    def describe(self, *, default: bool = True) -> str:
        """Help text with the limits (and the default): ``number of frames (1-1024; default: the model's)``."""
        parts = (self.rules(), default and self.empty and f"default: {self.empty}")
        extra = "; ".join(part for part in parts if part)
        return f"{self.help} ({extra})" if extra else self.help


FIELDS: dict[str, Field] = {f.name: f for f in (
    Field("prompt", "text", high=MAX_PROMPT_CHARS, required=True,
          blank="is empty: describe the video to generate", label="Prompt", noun="the prompt",
          help="what the video should show"),
    Field("model", "text", blank="must be a Hugging Face repo id or a folder", empty="the config's model",
          flag="--model", metavar="ID_OR_PATH", label="Model",
          help="Hugging Face repo id or a diffusers folder"),
    Field("frames", "int", 1, MAX_FRAMES, empty="the model's", flag="--frames", metavar="N", label="Frames",
          help="number of frames", config=True),
    Field("steps", "int", 1, MAX_STEPS, empty="the config's", flag="--steps", metavar="N", label="Steps",
          help="denoising steps, more is slower and finer", config=True),
    Field("height", "int", MIN_SIDE, MAX_SIDE, SIZE_MULTIPLE, empty="the model's", flag="--height",
          metavar="H", label="Height", help="height in pixels", config=True),
    Field("width", "int", MIN_SIDE, MAX_SIDE, SIZE_MULTIPLE, empty="the model's", flag="--width",
          metavar="W", label="Width", help="width in pixels", config=True),
    Field("fps", "number", MIN_FPS, MAX_FPS, empty="the model's", flag="--fps", metavar="F", label="FPS",
          help="frames per second of the mp4", config=True),
    Field("seed", "int", 0, MAX_SEED, empty="a random seed", flag="--seed", metavar="S", label="Seed",
          help="seed"),
    Field("negative_prompt", "text", high=MAX_PROMPT_CHARS, empty="none", flag="--negative", metavar="TEXT",
          label="Negative prompt", noun="the negative prompt", help="negative prompt: what to avoid"),
    Field("device", "choice", choices=DEVICES, empty="the config's device", flag="--device", label="Device",
          help="where to run"),
)}
#: The keys of the config's [generation] table, in order.
CONFIG_KEYS = tuple(name for name, f in FIELDS.items() if f.config)


# -- where a value came from ----------------------------------------------------------------------------


class Source(NamedTuple):
    """Where values came from, so that an error names it: build one with the class methods."""

    kind: Literal["cli", "config", "popup", "named"]
    where: str = ""  # the config file, or a label such as "job abc123"
    table: str = ""  # the config table ("generation"), "" for a top-level key

    @classmethod
    def cli(cls) -> Source:
        return cls("cli")

    @classmethod
    def config(cls, path: str, table: str = "generation") -> Source:
        return cls("config", path, table)

    @classmethod
    def popup(cls) -> Source:
        return cls("popup")

    @classmethod
    def job(cls, job_id: str) -> Source:
        return cls("named", f"job {job_id}")

    @classmethod
    def named(cls, label: str) -> Source:
        """Any other origin (a recipe file, a web form): ``label: height must be ...``."""
        return cls("named", label)

    @classmethod
    def family(cls, family: str) -> Source:
        return cls("named", f"the {family} models' defaults")

    def error(self, field: Field, text: str) -> UserError:
        """``text`` (``must be ..., got ...``) as an error that names this source and ``field``."""
        if self.kind == "config":
            return ConfigError(self.where, text, f"{self.table}.{field.name}" if self.table else field.name)
        if self.kind == "cli" and field.flag is not None:
            return UserError(f"{field.flag}: {text}")
        if self.kind == "popup":
            return UserError(f"the popup's {field.label} field {text}")
        prefix = f"{self.where}: " if self.kind == "named" and self.where else ""
        return UserError(f"{prefix}{field.subject} {text}")

    def general(self, text: str) -> UserError:
        """An error about the whole request (unknown fields)."""
        if self.kind == "named" and self.where:
            return UserError(f"{self.where}: {text}")
        if self.kind == "config":
            return ConfigError(self.where, text, self.table or None)
        return UserError(text)


#: A request whose origin is not known more precisely (``height must be ...``).
REQUEST = Source.named("")


# -- problems -------------------------------------------------------------------------------------------


class Problem(NamedTuple):
    """What is wrong with one value: ``rule`` (``must be between 1 and 1024``), an optional ``hint``
    (``try 568 or 576``) and what was given (``got``)."""

    field: Field
    rule: str
    got: str | None = None
    hint: str = ""
    type_error: bool = False  # not even the right type (the popup then says what empty means)
    counted: bool = False  # ``got`` is a length the person cannot see (the popup shows it)

    def text(self) -> str:
        """For the CLI, the config, a job: ``must be a multiple of 8 (try 568 or 576), got 570``."""
        hint = f" ({self.hint})" if self.hint else ""
        return f"{self.rule}{hint}" + (f", got {self.got}" if self.got is not None else "")

    def short(self, *, empty_ok: bool = False) -> str:
        """For a form field, which shows the value already: ``Must be a multiple of 8 (try 568 or 576)``."""
        text = self.rule[:1].upper() + self.rule[1:]
        if self.hint:
            text += f" ({self.hint})"
        elif self.counted:
            text += f" ({self.got} now)"
        if self.type_error and empty_ok and self.field.empty:
            text += f", or empty for {self.field.empty}"
        return text

    def error(self, source: Source) -> UserError:
        return source.error(self.field, self.text())


def _fmt(number: int | float) -> str:
    return str(number) if isinstance(number, int) else f"{number:g}"


def _repr(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _neighbours(value: int, mod: int, rem: int, low: int | float, high: int | float) -> str:
    """``try 568 or 576``: the nearest values either side that keep ``value % mod == rem`` in bounds."""
    below = value - (value - rem) % mod
    options = [str(v) for v in (below, below + mod) if v != value and max(low, 1) <= v <= high]
    return f"try {' or '.join(options)}" if options else ""


def _text_problem(f: Field, value: object) -> Problem | None:
    if not isinstance(value, str):
        return Problem(f, "must be text", _repr(value), type_error=True)
    if not value.strip():
        return Problem(f, f.blank) if f.blank else None
    if f.high and len(value) > f.high:
        return Problem(f, f"must be at most {_fmt(f.high)} characters", str(len(value)), counted=True)
    return None


def _int_problem(f: Field, value: object) -> Problem | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return Problem(f, "must be a whole number", _repr(value), type_error=True)
    if not f.low <= value <= f.high:
        return Problem(f, f"must be between {_fmt(f.low)} and {_fmt(f.high)}", str(value))
    if value % f.multiple:
        return Problem(f, f"must be a multiple of {f.multiple}", str(value),
                       hint=_neighbours(value, f.multiple, 0, f.low, f.high))
    return None


def _number_problem(f: Field, value: object) -> Problem | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return Problem(f, "must be a number", _repr(value), type_error=True)
    if not f.low <= value <= f.high:  # NaN fails this too
        return Problem(f, f"must be a number from {_fmt(f.low)} to {_fmt(f.high)}", _repr(value))
    return None


def _choice_problem(f: Field, value: object) -> Problem | None:
    if value not in f.choices:
        return Problem(f, f"must be one of {', '.join(f.choices)}", _repr(value))
    return None


_PROBLEMS: dict[str, Callable[[Field, object], Problem | None]] = {
    "text": _text_problem, "int": _int_problem, "number": _number_problem, "choice": _choice_problem,
}


def problem(name: str, value: object) -> Problem | None:
    """What is wrong with ``value`` for the field ``name``; None when it is fine (or left out: None,
    where the field has a default)."""
    f = FIELDS[name]
    if value is None:
        return Problem(f, "is missing") if f.required else None
    return _PROBLEMS[f.kind](f, value)


def parse_problem(name: str, text: str) -> tuple[Value | None, Problem | None]:
    """``text`` (a CLI argument, a form field) as a value of the field ``name``, and what is wrong with it.
    A whole number of fps comes back as an int, as it would from TOML or JSON."""
    f = FIELDS[name]
    value: Value = text
    if f.kind == "int":
        try:
            value = int(text.strip())
        except ValueError:
            return None, Problem(f, "must be a whole number", _repr(text), type_error=True)
    elif f.kind == "number":
        try:
            value = float(text.strip())
        except ValueError:
            return None, Problem(f, "must be a number", _repr(text), type_error=True)
        found = problem(name, value)
        return (int(value) if found is None and value.is_integer() else value), found
    return value, problem(name, value)


# -- checks that raise ----------------------------------------------------------------------------------


def check(name: str, value: T, source: Source) -> T:
    """``value`` if it is fine for the field ``name``; else a UserError naming ``source``."""
    found = problem(name, value)
    if found is not None:
        raise found.error(source)
    return value


def parse(name: str, text: str, source: Source) -> Value | None:
    """``text`` parsed and checked (see :func:`parse_problem`); a UserError naming ``source``."""
    value, found = parse_problem(name, text)
    if found is not None:
        raise found.error(source)
    return value


def argtype(name: str) -> Callable[[str], Value | None]:
    """An argparse ``type=`` for the field ``name``: argparse's message then names the flag."""

    def parse_arg(text: str) -> Value | None:
        import argparse  # only the CLI needs it

        value, found = parse_problem(name, text)
        if found is not None:
            raise argparse.ArgumentTypeError(found.text())
        return value

    parse_arg.__name__ = name
    return parse_arg


def check_request(values: Mapping[str, object], source: Source) -> dict[str, Any]:
    """A whole request from anywhere (a job file, a recipe, a form as a dict): no unknown keys, the
    prompt there, every value within its limits. Returns the fields that were given (Any: each value is of
    its field's kind, which only ``FIELDS`` knows, so that they can be passed on as keyword arguments)."""
    if not isinstance(values, Mapping):
        raise source.general("the request must be a JSON object")
    unknown = sorted(str(k) for k in values if k not in FIELDS)
    if unknown:
        raise source.general(f"unknown job field(s): {', '.join(unknown)}")
    for name in FIELDS:
        check(name, values.get(name), source)
    return {name: values[name] for name in FIELDS if name in values}


# -- model families ---------------------------------------------------------------------------------------


class FamilyRules(Protocol):
    """What a model family asks of the parameters (generation.Family has these)."""

    @property
    def name(self) -> str: ...
    @property
    def size_multiple(self) -> int: ...
    @property
    def frames_mod(self) -> int: ...
    @property
    def frames_rem(self) -> int: ...
    @property
    def max_frames(self) -> int: ...


def family_problem(name: str, value: int, family: FamilyRules) -> Problem | None:
    """What is wrong with a (valid) ``value`` of ``name`` for models of ``family``."""
    f = FIELDS[name]
    m = family.size_multiple
    if name in ("height", "width") and value % m:
        return Problem(f, f"must be a multiple of {m} for {family.name} models", str(value),
                       hint=_neighbours(value, m, 0, f.low, f.high))
    if name != "frames":
        return None
    if value > family.max_frames:
        return Problem(f, f"must be at most {family.max_frames} for {family.name} models", str(value))
    mod, rem = family.frames_mod, family.frames_rem
    if mod > 1 and value % mod != rem:
        return Problem(f, f"must be {mod}k+{rem} for {family.name} models", str(value),
                       hint=_neighbours(value, mod, rem, f.low, family.max_frames))
    return None


def check_resolved(values: Mapping[str, object], family: FamilyRules, sources: Mapping[str, Source],
                   default: Source = REQUEST) -> None:
    """The resolved parameters (each from the request, the config or the family's defaults): every
    field's own limits, then the family's rules; an error names where the bad value came from."""
    for name, value in values.items():
        if name not in FIELDS:
            continue
        found = problem(name, value)
        # (a value that passed an int field's check is an int)
        if found is None and isinstance(value, int) and FIELDS[name].kind == "int":
            found = family_problem(name, value, family)
        if found is not None:
            raise found.error(sources.get(name, default))
