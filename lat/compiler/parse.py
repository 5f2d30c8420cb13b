"""Parsing: `.lat` text → `ast.Program`, with every syntax error as a located `LatError`.

The grammar lives in `lat/grammar/lat.lark` (package data); this module builds the LALR
parser once, turns lark's tree into the frozen dataclasses of `lat.compiler.ast`, and turns
lark's exceptions into one-line messages with a plain-words hint, so no lark exception ever
reaches a user. Semantic mistakes (a repeated or missing header item, unknown names ...) are
not syntax errors: they reach the checker, which reports them with positions.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
from collections.abc import Iterable

import lark
from lark import Token, Transformer, v_args

from lat.compiler import ast
from lat.compiler.errors import Diagnostic, LatError

#: Words the grammar reserves: they can be neither names nor unquoted symbols.
RESERVED_WORDS: frozenset[str] = frozenset({
    "automaton", "memory", "machine", "alphabet", "states", "start", "accept", "default",
    "tape", "blank", "halt", "bound", "steps",
})

_DECLARATION_KEYWORDS = ("AUTOMATON", "MEMORY", "MACHINE")
_HEADER_WORDS = ("alphabet", "tape", "blank", "states", "start", "accept", "halt", "bound",
                 "default")


@functools.lru_cache(maxsize=1)
def _parser() -> lark.Lark:
    """The LALR parser, built once per process from the packaged grammar."""
    grammar = importlib.resources.files("lat.grammar").joinpath("lat.lark").read_text("utf-8")
    return lark.Lark(grammar, parser="lalr", lexer="basic", start="program")


def parse_program(text: str, filename: str = "<string>") -> ast.Program:
    """Parse a whole `.lat` file.

    Raises `LatError` (never a lark exception) for the first syntax error, located at the
    offending character or token.
    """
    if text.startswith("\ufeff"):  # a UTF-8 byte order mark, as some editors write
        text = text[1:]
    try:
        tree = _parser().parse(text)
    except lark.UnexpectedInput as error:
        raise LatError(_diagnostic(error, text, filename)) from None
    try:
        declarations = _ToAst().transform(tree)
    except lark.exceptions.VisitError as error:  # a located LatError from a transformer rule
        if isinstance(error.orig_exc, LatError):
            located = dataclasses.replace(error.orig_exc.diagnostic, filename=filename)
            raise LatError(located) from None
        raise
    return ast.Program(declarations=tuple(declarations), filename=filename)


# --------------------------------------------------------------------------- tree → AST


def _pos(token: Token) -> ast.Pos:
    return ast.Pos(token.line or 0, token.column or 0)


def _unescape(quoted: str) -> str:
    """The text of a STRING token: quotes removed, the four escapes decoded."""
    out: list[str] = []
    chars = iter(quoted[1:-1])
    for char in chars:
        if char == "\\":
            escaped = next(chars)
            out.append({"n": "\n", "t": "\t"}.get(escaped, escaped))
        else:
            out.append(char)
    return "".join(out)


#: More digits than any bound could use (a bound beyond 10**30 is refused by its size
#: estimate anyway); longer numbers are refused here, before Python's int conversion limit.
MAX_DIGITS = 30


def _number(token: Token) -> int:
    if len(str(token).lstrip("0")) > MAX_DIGITS:
        raise LatError(Diagnostic("", _pos(token), f"number of {len(str(token)):,} digits is "
                                  f"too large for a bound (at most {MAX_DIGITS} digits)",
                                  "write a bound a machine can run, e.g. 'steps 1000'"))
    return int(str(token))


def _name(token: Token) -> ast.Name:
    return ast.Name(str(token), _pos(token))


@v_args(inline=True)
class _ToAst(Transformer):
    """Bottom-up construction of the AST; header items become (keyword, value) pairs."""

    def program(self, *declarations: ast.Declaration) -> list[ast.Declaration]:
        return list(declarations)

    # symbols and lists
    def symbol(self, token: Token) -> ast.Symbol:
        if token.type == "STRING":
            return ast.Symbol(_unescape(str(token)), quoted=True, pos=_pos(token))
        return ast.Symbol(str(token), quoted=False, pos=_pos(token))

    def symbol_list(self, *symbols: ast.Symbol) -> tuple[ast.Symbol, ...]:
        return symbols

    def name_list(self, *names: Token) -> tuple[ast.Name, ...]:
        return tuple(_name(token) for token in names)

    def selection(self, *items: ast.Symbol | Token) -> tuple[ast.Symbol, ...] | ast.Star:
        first = items[0]
        if isinstance(first, Token):  # STAR
            return ast.Star(_pos(first))
        return tuple(items)  # type: ignore[arg-type]

    # header items: (HeaderItem, value)
    def _item(self, keyword: Token, value: object) -> tuple[ast.HeaderItem, object]:
        return ast.HeaderItem(str(keyword), _pos(keyword)), value

    def alphabet(self, keyword: Token, symbols: tuple[ast.Symbol, ...] | None) -> tuple:
        return self._item(keyword, symbols or ())

    def tape(self, keyword: Token, symbols: tuple[ast.Symbol, ...] | None) -> tuple:
        return self._item(keyword, symbols or ())

    def states(self, keyword: Token, names: tuple[ast.Name, ...] | None) -> tuple:
        return self._item(keyword, names or ())

    def accept(self, keyword: Token, names: tuple[ast.Name, ...] | None) -> tuple:
        return self._item(keyword, names or ())

    def halt(self, keyword: Token, names: tuple[ast.Name, ...] | None) -> tuple:
        return self._item(keyword, names or ())

    def start_state(self, keyword: Token, name: Token) -> tuple:
        return self._item(keyword, _name(name))

    def default(self, keyword: Token, symbol: ast.Symbol) -> tuple:
        return self._item(keyword, symbol)

    def blank(self, keyword: Token, symbol: ast.Symbol) -> tuple:
        return self._item(keyword, symbol)

    def bound(self, keyword: Token, _steps: Token, steps: Token, _tape: Token, cells: Token):
        return self._item(keyword, ast.Bound(_number(steps), _number(cells), _pos(keyword)))

    # body lines
    def transition(self, state: Token, symbols, target: Token) -> ast.Transition:
        return ast.Transition(_name(state), symbols, _name(target), _pos(state))

    def entry(self, key: ast.Symbol, value: ast.Symbol) -> ast.Entry:
        return ast.Entry(key, value, key.pos)

    def rule(self, state: Token, reads, write: ast.Symbol, move: Token, target: Token):
        return ast.Rule(
            _name(state), reads, write, str(move), _name(target), _pos(state), _pos(move)
        )

    # declarations
    def automaton(self, keyword: Token, name: Token, *items) -> ast.Automaton:
        header, values, body = _split_items(items)
        return ast.Automaton(
            name=_name(name),
            alphabet=values.get("alphabet", ()),
            states=values.get("states", ()),
            start=values.get("start", ast.Name("")),
            accept=values.get("accept", ()),
            transitions=body,
            pos=_pos(keyword),
            header=header,
        )

    def memory(self, keyword: Token, name: Token, *items) -> ast.Memory:
        header, values, body = _split_items(items)
        return ast.Memory(
            name=_name(name),
            entries=body,
            default=values.get("default"),
            pos=_pos(keyword),
            header=header,
        )

    def machine(self, keyword: Token, name: Token, *items) -> ast.Machine:
        header, values, body = _split_items(items)
        return ast.Machine(
            name=_name(name),
            tape=values.get("tape", ()),
            blank=values.get("blank", ast.Symbol("")),
            states=values.get("states", ()),
            start=values.get("start", ast.Name("")),
            halt=values.get("halt", ()),
            bound=values.get("bound", ast.Bound(0, 0)),
            rules=body,
            pos=_pos(keyword),
            header=header,
        )


def _split_items(items: Iterable) -> tuple[tuple[ast.HeaderItem, ...], dict, tuple]:
    """Separate header items (first occurrence wins) from body lines, keeping source order."""
    header: list[ast.HeaderItem] = []
    values: dict[str, object] = {}
    body: list = []
    for item in items:
        if isinstance(item, tuple):
            keyword, value = item
            header.append(keyword)
            values.setdefault(keyword.keyword, value)
        else:
            body.append(item)
    return tuple(header), values, tuple(body)


# --------------------------------------------------------------------------- errors

_WORDS = {
    "NAME": "a name",
    "INT": "a number",
    "STRING": "a quoted string",
    "_ARROW": "'->'",
    "_LBRACE": "'{'",
    "_RBRACE": "'}'",
    "_COLON": "':'",
    "_COMMA": "','",
    "_PIPE": "'|'",
    "STAR": "'*'",
    "$END": "the end of the file",
}
_ORDER = ["SYMBOL", "NAME", "INT", "STRING", "STAR", "_PIPE", "_ARROW", "_COMMA", "_COLON"]


def _describe(expected: Iterable[str]) -> str:
    """`{'NAME', '_RBRACE', 'STATES'}` → "a name, 'states' or '}'" (plain words, stable order)."""
    kinds = set(expected)
    if {"NAME", "INT", "STRING"} <= kinds:
        kinds -= {"NAME", "INT", "STRING"}
        kinds.add("SYMBOL")
    words = {"SYMBOL": "a symbol (a name, a number or a quoted string)", **_WORDS}

    def rank(kind: str) -> tuple[int, str]:
        if kind in _ORDER:
            return (0, f"{_ORDER.index(kind):02d}")
        if kind.lower() in RESERVED_WORDS:
            return (1, kind)
        return (2, kind)

    parts = [words.get(kind, f"'{kind.lower()}'") for kind in sorted(kinds, key=rank)]
    if not parts:
        return "nothing more"
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " or " + parts[-1]


def _end_position(text: str) -> ast.Pos:
    """The position just after the last non-blank character (where an EOF error points)."""
    stripped = text.rstrip()
    lines = stripped.split("\n")
    return ast.Pos(len(lines), len(lines[-1]) + 1)


def _unclosed_brace(text: str) -> tuple[str, ast.Pos] | None:
    """The innermost declaration whose `{` is still open at the end of the text.

    Lexes only (the lexer cannot fail here: this is asked after the text lexed up to the
    error), returning e.g. ("automaton 'parity'", Pos(1, 17)).
    """
    opened: list[tuple[str, ast.Pos]] = []
    words: list[str] = []
    try:
        for token in _parser().lex(text):
            if token.type == "_LBRACE":
                kind, name = (words[-2:] if len(words) >= 2 else ["declaration", "?"])
                opened.append((f"{kind} '{name}'", _pos(token)))
            elif token.type == "_RBRACE" and opened:
                opened.pop()
            words.append(str(token))
    except lark.UnexpectedInput:
        pass
    return opened[-1] if opened else None


def _text_before(text: str, line: int, col: int) -> str:
    lines = text.split("\n")
    return "\n".join(lines[: line - 1] + [lines[line - 1][: col - 1]]) if line else ""


def _diagnostic(error: lark.UnexpectedInput, text: str, filename: str) -> Diagnostic:
    """One located, human message for a lark error; the hint says what would fit there."""
    expected: set[str] = set()
    interactive = getattr(error, "interactive_parser", None)
    if interactive is not None:
        try:
            expected = set(interactive.accepts())
        except lark.LarkError:  # pragma: no cover - accepts() only replays the parser
            expected = set()
    if not expected:
        expected = set(getattr(error, "expected", None) or getattr(error, "allowed", None) or ())
    wanted = _describe(expected)

    if isinstance(error, lark.UnexpectedCharacters):
        pos = ast.Pos(error.line, error.column)
        char = text[error.pos_in_stream] if error.pos_in_stream < len(text) else ""
        if char == '"':
            rest = text[error.pos_in_stream + 1 :].split("\n", 1)[0]
            if '"' not in rest:
                return Diagnostic(filename, pos, "unterminated string",
                                  'close the string with \'"\' on the same line')
            return Diagnostic(filename, pos, "bad escape in string",
                              r'inside quotes only \" \\ \n and \t are escapes')
        if "_ARROW" in expected and char in "-=>":
            return Diagnostic(filename, pos, f"unexpected {char!r}",
                              f"write the arrow as '->'; expected {wanted}")
        return Diagnostic(filename, pos, f"unexpected character {char!r}", f"expected {wanted}")

    token = getattr(error, "token", None)
    incomplete = _incomplete_rule(text, token, filename)
    if incomplete is not None:
        return incomplete
    if token is None or token.type == "$END":
        pos = _end_position(text)
        unclosed = _unclosed_brace(text)
        if "_RBRACE" in expected and unclosed is not None:
            what, where = unclosed
            return Diagnostic(filename, pos, "unexpected end of file",
                              f"the '{{' of {what} at {where.line}:{where.col} is never "
                              "closed: add '}' at its end")
        return Diagnostic(filename, pos, "unexpected end of file", f"expected {wanted}")

    pos = _pos(token)
    value = str(token)
    if token.type in _DECLARATION_KEYWORDS and "_RBRACE" in expected:
        unclosed = _unclosed_brace(_text_before(text, token.line, token.column))
        if unclosed is not None:
            what, where = unclosed
            return Diagnostic(filename, pos, f"unexpected '{value}'",
                              f"the '{{' of {what} at {where.line}:{where.col} is never "
                              "closed: add '}' before this line")
    items = [word for word in _HEADER_WORDS if word.upper() in expected]
    if value in _HEADER_WORDS and items:
        unclosed = _unclosed_brace(_text_before(text, token.line, token.column))
        kind = unclosed[0].split()[0] if unclosed else "declaration"
        return Diagnostic(filename, pos, f"'{value}:' is not an item of {_article(kind)} {kind}",
                          f"{_article(kind)} {kind} has the items {_and(items)}")
    if value in RESERVED_WORDS and expected & {"NAME", "INT", "STRING"}:
        if {"NAME", "INT", "STRING"} <= expected or "NAME" not in expected:
            return Diagnostic(filename, pos,
                              f"'{value}' is a reserved word and cannot be used as a symbol",
                              f'quote it to use it as a symbol: "{value}"')
        return Diagnostic(filename, pos,
                          f"'{value}' is a reserved word and cannot be used as a name",
                          f"choose another name, e.g. '{value}_'")
    return Diagnostic(filename, pos, f"unexpected '{value}'", f"expected {wanted}")


_RULE_SHAPES = {  # per declaration keyword: the items after '->', what a line is, its shape
    "automaton": (1, "transition",
                  "a transition needs its target state after '->' (STATE SYMBOL -> STATE)"),
    "memory": (1, "entry", "an entry needs its value after '->' (KEY -> VALUE)"),
    "machine": (3, "rule",
                "a rule needs WRITE MOVE NEXT after '->' (STATE READ -> WRITE MOVE NEXT)"),
}


def _incomplete_rule(text: str, token: Token | None, filename: str) -> Diagnostic | None:
    """A rule cut short on its line, which the parser completed from the next line.

    Newlines only separate tokens, so `q a -> R q` (a machine rule missing its write) takes
    the next line's first name as NEXT and fails there; the mistake is on the rule's line.
    When the last '->' before the error sits on an earlier line, is followed there by fewer
    items than its kind needs, and the error comes within one item after the rule should
    have ended, the rule's line is reported instead.
    """
    end = len(text) if token is None or token.type == "$END" else token.start_pos
    tokens: list[Token] = []
    try:
        for lexed in _parser().lex(text[:end]):
            tokens.append(lexed)
    except lark.UnexpectedInput:
        return None
    arrows = [i for i, t in enumerate(tokens) if t.type == "_ARROW"]
    if not arrows:
        return None
    arrow = tokens[arrows[-1]]
    error_line = (token.line if token is not None and token.type != "$END"
                  else _end_position(text).line + 1)
    if arrow.line >= error_line:
        return None
    unclosed = _unclosed_brace(_text_before(text, arrow.line, arrow.column))
    if unclosed is None:
        return None
    kind = unclosed[0].split()[0]
    if kind not in _RULE_SHAPES:
        return None
    needed, line_word, shape = _RULE_SHAPES[kind]
    after = tokens[arrows[-1] + 1 :]
    same_line = [t for t in after if t.line == arrow.line]
    if len(same_line) >= needed or len(after) > needed + 1:
        return None
    last = same_line[-1] if same_line else arrow
    pos = ast.Pos(last.end_line or last.line, (last.end_column or last.column) + 1)
    found = " ".join(str(t) for t in same_line)
    message = f"incomplete {line_word}: {shape}"
    hint = (f"this line has only '{found}' after '->'" if found else
            "nothing follows '->' on this line") + "; complete it here"
    return Diagnostic(filename, pos, message, hint)


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
