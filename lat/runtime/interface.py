"""How an artifact talks to the world: token fields, output fields, prompt, feedback, halting.

The runtime knows nothing of the DSL. An `Interface` is plain data (it serialises to JSON
inside the artifact) that says how to turn an input word into tokens, how to read the
model's output vector, and which decoded values are fed back as the next token. The
feedback rule only re-embeds decoded values; it never computes program logic — that lives
in the weights V and Q alone.

Token layout. A token z ∈ R^d is the concatenation of its fields' blocks, in order:
- ``onehot``: one-hot over ``values`` (all-zero when the field is absent from a token);
- ``product``: one-hot over the pairs ``values × values2`` (pair (a, b) at a·|values2|+b);
- ``const``: a single coordinate, 1 when present.

Outputs. y ∈ R^{d_out} is the concatenation of output fields, each decoded by argmax over
its block. The *margin* of a decode is top-1 minus top-2 in that block.

Sources, used by prompt and feedback token specs: ``"input"`` (the next input symbol; it
is consumed), ``"input:C"`` (the symbol in cell C of the input, or `input_fill` past its
end; nothing is consumed), ``"output:NAME"`` (the value decoded for output field NAME at the
previous position), ``"const:VALUE"`` (a fixed value). Values are matched by name, so a
source's value set need not equal the field's. A product field takes two sources, or three:
(a, b, c) embeds e_(a,b) − e_(a,c) — the sum-of-deltas write of docs/ARCHITECTURE.md, "The model"
(zero when b = c).

Feedback. `feed` is a cycle of token specs: a program that spends k tokens per step lists k
specs, used in turn. Each output field must be decoded at every position; a construction
writes a one-hot into every output block at every position, so every decode has a margin.
"""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from lat.runtime.errors import ArtifactError, InputError

TOKEN_FIELD_KINDS = ("onehot", "product", "const", "embedding")


@dataclass(frozen=True)
class TokenField:
    name: str
    kind: str
    values: tuple[str, ...] = ()
    values2: tuple[str, ...] = ()
    vectors: tuple[tuple[float, ...], ...] = ()  # embedding: one row per value

    @property
    def width(self) -> int:
        if self.kind == "const":
            return 1
        if self.kind == "product":
            return len(self.values) * len(self.values2)
        if self.kind == "embedding":
            return len(self.vectors[0]) if self.vectors else 0
        return len(self.values)

    def index(self, value: str | tuple[str, str]) -> int:
        """Position of `value` inside this field's block."""
        if self.kind == "const":
            return 0
        if self.kind == "product":
            first, second = value
            return self.values.index(first) * len(self.values2) + self.values2.index(second)
        return self.values.index(value)


@dataclass(frozen=True)
class OutputField:
    name: str
    values: tuple[str, ...]

    @property
    def width(self) -> int:
        return len(self.values)


TokenSpec = Mapping[str, tuple[str, ...]]  # field name -> its sources (two for a product)


@dataclass(frozen=True)
class Interface:
    """Everything needed to run and decode an artifact, independent of how it was made.

    `kind` and `program` are descriptive labels (the runtime does not branch on them);
    `result_field` names the output field whose value at the last position is the run's
    output, `trace_field` the one whose values over the answer positions form the trace.
    """

    kind: str
    program: str
    input_alphabet: tuple[str, ...]
    token_fields: tuple[TokenField, ...]
    output_fields: tuple[OutputField, ...]
    prompt: tuple[TokenSpec, ...]
    feed: TokenSpec | tuple[TokenSpec, ...]
    result_field: str
    trace_field: str | None = None
    halt_on: tuple[tuple[str, str], ...] = ()
    max_steps: int | None = None
    input_fill: str | None = None  # value of "input:C" past the end of the input
    input_other: str | None = None  # value an unknown input symbol takes (else an error)
    max_input_length: int | None = None
    single_symbol_input: bool = False  # the whole command-line text is one symbol
    extra: Mapping[str, object] = field(default_factory=dict)

    @property
    def feed_cycle(self) -> tuple[TokenSpec, ...]:
        """The feedback specs in the order they are used (one spec: a cycle of one)."""
        return (self.feed,) if isinstance(self.feed, Mapping) else tuple(self.feed)

    # -- layout -------------------------------------------------------------------------
    @property
    def d(self) -> int:
        return sum(f.width for f in self.token_fields)

    @property
    def d_out(self) -> int:
        return sum(f.width for f in self.output_fields)

    def token_offset(self, name: str) -> int:
        offset = 0
        for f in self.token_fields:
            if f.name == name:
                return offset
            offset += f.width
        raise KeyError(name)

    def token_field(self, name: str) -> TokenField:
        for f in self.token_fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def output_slices(self) -> list[tuple[OutputField, int]]:
        """Each output field with the offset of its block in y."""
        slices, offset = [], 0
        for f in self.output_fields:
            slices.append((f, offset))
            offset += f.width
        return slices

    def output_field(self, name: str) -> OutputField:
        for f in self.output_fields:
            if f.name == name:
                return f
        raise KeyError(name)

    # -- inputs ---------------------------------------------------------------------------
    @property
    def sampling_alphabet(self) -> tuple[str, ...]:
        """Symbols that exercise every input token: the alphabet, plus the `input_other`
        value when unknown symbols map to it (a memory's default is part of its domain)."""
        if self.input_other is None or self.input_other in self.input_alphabet:
            return self.input_alphabet
        return (*self.input_alphabet, self.input_other)

    def split_word(self, text: str) -> tuple[str, ...]:
        """Split a command-line word into symbols (the README's input rules) and check every one.

        Whitespace splits when there is any; otherwise single characters when every symbol
        of the alphabet is one character; otherwise the whole text is one symbol. "" is the
        empty word.
        """
        if self.single_symbol_input:
            symbols = (text,)
        elif any(c.isspace() for c in text):
            symbols = tuple(text.split())
        elif all(len(s) == 1 for s in self.input_alphabet):
            symbols = tuple(text)
        else:
            symbols = (text,) if text else ()
        self.check_word(symbols)
        return symbols

    @functools.cached_property
    def _known_symbols(self) -> frozenset[str]:
        # built once: checking every key of a 50,000-key memory is then linear, not quadratic
        return frozenset(self.input_alphabet)

    def check_word(self, symbols: Sequence[str]) -> None:
        """Raise InputError (one line) unless every symbol may be given to this program."""
        if self.max_input_length is not None and len(symbols) > self.max_input_length:
            raise InputError(
                f"input of {len(symbols)} symbols is longer than the {self.max_input_length} "
                f"cells program '{self.program}' has"
            )
        known = self._known_symbols
        for position, symbol in enumerate(symbols):
            if symbol == self.input_fill:
                raise InputError(
                    f"the blank symbol '{symbol}' cannot be part of the input "
                    f"(position {position}); inputs are written on a blank tape"
                )
            if symbol not in known and self.input_other is None:
                close = difflib.get_close_matches(symbol, self.input_alphabet, n=1, cutoff=0.5)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                shown = ", ".join(self.input_alphabet[:20])
                more = ", ..." if len(self.input_alphabet) > 20 else ""
                raise InputError(
                    f"unknown symbol '{symbol}' at input position {position} of program "
                    f"'{self.program}' (alphabet: {shown}{more}){hint}"
                )

    # -- serialisation ----------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(
            {
                "kind": self.kind,
                "program": self.program,
                "input_alphabet": list(self.input_alphabet),
                "token_fields": [
                    {"name": f.name, "kind": f.kind, "values": list(f.values),
                     "values2": list(f.values2), "vectors": [list(v) for v in f.vectors]}
                    for f in self.token_fields
                ],
                "output_fields": [
                    {"name": f.name, "values": list(f.values)} for f in self.output_fields
                ],
                "prompt": [{k: list(v) for k, v in spec.items()} for spec in self.prompt],
                "feed": [{k: list(v) for k, v in spec.items()} for spec in self.feed_cycle],
                "result_field": self.result_field,
                "trace_field": self.trace_field,
                "halt_on": [list(pair) for pair in self.halt_on],
                "max_steps": self.max_steps,
                "input_fill": self.input_fill,
                "input_other": self.input_other,
                "max_input_length": self.max_input_length,
                "single_symbol_input": self.single_symbol_input,
                "extra": dict(self.extra),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Interface:
        try:
            raw = json.loads(text)
            interface = cls(
                kind=str(raw["kind"]),
                program=str(raw["program"]),
                input_alphabet=tuple(raw["input_alphabet"]),
                token_fields=tuple(
                    TokenField(f["name"], f["kind"], tuple(f["values"]), tuple(f["values2"]),
                               tuple(tuple(float(x) for x in v) for v in f.get("vectors", ())))
                    for f in raw["token_fields"]
                ),
                output_fields=tuple(
                    OutputField(f["name"], tuple(f["values"])) for f in raw["output_fields"]
                ),
                prompt=tuple({k: tuple(v) for k, v in s.items()} for s in raw["prompt"]),
                feed=_feed_from_json(raw["feed"]),
                result_field=str(raw["result_field"]),
                trace_field=raw["trace_field"],
                halt_on=tuple((str(a), str(b)) for a, b in raw["halt_on"]),
                max_steps=raw["max_steps"],
                input_fill=raw.get("input_fill"),
                input_other=raw.get("input_other"),
                max_input_length=raw.get("max_input_length"),
                single_symbol_input=bool(raw.get("single_symbol_input", False)),
                extra=dict(raw["extra"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"artifact interface is malformed: {exc}") from None
        interface.validate()
        return interface

    def validate(self) -> None:
        """Reject an inconsistent interface early, with a message naming the problem."""
        names = [f.name for f in self.token_fields]
        if len(set(names)) != len(names):
            raise ArtifactError("interface has duplicate token field names")
        for f in self.token_fields:
            if f.kind not in TOKEN_FIELD_KINDS:
                raise ArtifactError(f"token field '{f.name}' has unknown kind '{f.kind}'")
            if f.kind == "embedding" and (
                len(f.vectors) != len(f.values) or len({len(v) for v in f.vectors}) > 1
            ):
                raise ArtifactError(f"embedding field '{f.name}' needs one vector per value, "
                                    "all of one length")
        outputs = {f.name for f in self.output_fields}
        if self.result_field not in outputs:
            raise ArtifactError(f"result field '{self.result_field}' is not an output field")
        for spec in (*self.prompt, *self.feed_cycle):
            for name, sources in spec.items():
                if name not in names:
                    raise ArtifactError(f"token spec names unknown field '{name}'")
                for source in sources:
                    if source.startswith("output:") and source[7:] not in outputs:
                        raise ArtifactError(f"source '{source}' names no output field")


def _feed_from_json(raw: object) -> TokenSpec | tuple[TokenSpec, ...]:
    """A feed written as one spec (older artifacts) or a list of specs (a cycle)."""
    if isinstance(raw, dict):
        return {k: tuple(v) for k, v in raw.items()}
    specs = tuple({k: tuple(v) for k, v in spec.items()} for spec in raw)
    return specs[0] if len(specs) == 1 else specs  # one spec is written as a mapping
