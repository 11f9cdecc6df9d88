"""Analysis conditions: a tiny, safe arithmetic/comparison language, parsed once, never ``eval``'d.

Grammar (numbers, names, ``+ - * /``, parentheses, comparisons, ``and``/``or``/``not``)::

    cond    := orexpr
    orexpr  := andexpr ("or" andexpr)*
    andexpr := notexpr ("and" notexpr)*
    notexpr := "not" notexpr | compare | "(" cond ")"
    compare := sum (("<=" | "<" | ">=" | ">" | "==" | "!=") sum)+
    sum     := product (("+" | "-") product)*
    product := unary (("*" | "/") unary)*
    unary   := "-" unary | NUMBER | NAME | "(" sum ")"

Names are bound at evaluation time: ``result`` (alias ``canary``) is the candidate's value and ``stable`` the
baseline's, so ``result <= stable * 1.5 + 0.005`` is a condition relative to the stable version.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from airflow_mlops.core.errors import SpecError

_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|([A-Za-z_][A-Za-z0-9_]*)|"
                    r"(<=|>=|==|!=|<|>|\+|-|\*|/|\(|\)))")
_COMPARE = ("<=", "<", ">=", ">", "==", "!=")
_KEYWORDS = ("and", "or", "not")
MAX_LENGTH = 500


class MissingValue(LookupError):
    """A name in a condition has no value (the metric was not measured): the measurement is inconclusive."""


@dataclass(frozen=True)
class Num:
    value: float


@dataclass(frozen=True)
class Name:
    name: str


@dataclass(frozen=True)
class BinOp:
    op: str
    left: Arith
    right: Arith


@dataclass(frozen=True)
class Neg:
    operand: Arith


@dataclass(frozen=True)
class Compare:
    """A chain ``a <= b < c`` (each adjacent pair must hold)."""

    operands: tuple[Arith, ...]
    ops: tuple[str, ...]


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    parts: tuple[Cond, ...]


@dataclass(frozen=True)
class Not:
    operand: Cond


Arith = Num | Name | BinOp | Neg
Cond = Compare | BoolOp | Not


def _tokenize(text: str, field: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise SpecError(field, "a condition of numbers, names, + - * / ( ), comparisons and and/or/not",
                            f"{text!r}: unexpected {text[pos:].strip()[:10]!r} at {pos}")
        tokens.append(next(g for g in match.groups() if g is not None))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str, field: str) -> None:
        self.field = field
        self.text = text
        self.tokens = _tokenize(text, field)
        self.pos = 0

    def error(self, what: str) -> SpecError:
        at = self.tokens[self.pos] if self.pos < len(self.tokens) else "end of condition"
        return SpecError(self.field, f"a valid condition ({what})", f"{self.text!r} at {at!r}")

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise self.error("unexpected end")
        self.pos += 1
        return token

    def parse(self) -> Cond:
        cond = self.orexpr()
        if self.peek() is not None:
            raise self.error("unexpected trailing input")
        return cond

    def orexpr(self) -> Cond:
        parts = [self.andexpr()]
        while self.peek() == "or":
            self.take()
            parts.append(self.andexpr())
        return parts[0] if len(parts) == 1 else BoolOp("or", tuple(parts))

    def andexpr(self) -> Cond:
        parts = [self.notexpr()]
        while self.peek() == "and":
            self.take()
            parts.append(self.notexpr())
        return parts[0] if len(parts) == 1 else BoolOp("and", tuple(parts))

    def notexpr(self) -> Cond:
        if self.peek() == "not":
            self.take()
            return Not(self.notexpr())
        if self.peek() == "(":
            # "(" opens either a nested condition or an arithmetic group: try the condition first.
            saved = self.pos
            self.take()
            try:
                inner = self.orexpr()
                if self.take() != ")":
                    raise self.error("missing ')'")
                if self.peek() not in _COMPARE and self.peek() not in ("+", "-", "*", "/"):
                    return inner
            except SpecError:
                pass
            self.pos = saved
        return self.compare()

    def compare(self) -> Cond:
        operands = [self.sum()]
        ops: list[str] = []
        while self.peek() in _COMPARE:
            ops.append(self.take())
            operands.append(self.sum())
        if not ops:
            raise self.error("a comparison such as 'result <= 0.01'")
        return Compare(tuple(operands), tuple(ops))

    def sum(self) -> Arith:
        node = self.product()
        while self.peek() in ("+", "-"):
            op = self.take()
            node = BinOp(op, node, self.product())
        return node

    def product(self) -> Arith:
        node = self.unary()
        while self.peek() in ("*", "/"):
            op = self.take()
            node = BinOp(op, node, self.unary())
        return node

    def unary(self) -> Arith:
        token = self.take()
        if token == "-":
            return Neg(self.unary())
        if token == "(":
            node = self.sum()
            if self.take() != ")":
                raise self.error("missing ')'")
            return node
        if token[0].isdigit() or token[0] == ".":
            return Num(float(token))
        if token[0].isalpha() or token[0] == "_":
            if token in _KEYWORDS:
                raise self.error(f"{token!r} where a value was expected")
            return Name(token)
        raise self.error(f"{token!r} where a value was expected")


@dataclass(frozen=True)
class Condition:
    """A parsed condition. ``Condition.parse("result <= stable * 1.5 + 0.005", field=...)``.

    :param text: the source text (kept for logs and records).
    :param tree: the parsed form.
    """

    text: str
    tree: Cond

    @classmethod
    def parse(cls, text: str, field: str = "condition") -> Condition:
        """Parse ``text``; raises SpecError naming ``field`` on a syntax error."""
        if not isinstance(text, str) or not text.strip():
            raise SpecError(field, "a non-empty condition string", text)
        if len(text) > MAX_LENGTH:
            raise SpecError(field, f"a condition of at most {MAX_LENGTH} characters", f"{len(text)} characters")
        return cls(text.strip(), _Parser(text, field).parse())

    @property
    def names(self) -> frozenset[str]:
        """The names the condition reads."""
        found: set[str] = set()

        def walk(node: object) -> None:
            if isinstance(node, Name):
                found.add(node.name)
            elif isinstance(node, BinOp):
                walk(node.left)
                walk(node.right)
            elif isinstance(node, Neg):
                walk(node.operand)
            elif isinstance(node, Compare):
                for operand in node.operands:
                    walk(operand)
            elif isinstance(node, BoolOp):
                for part in node.parts:
                    walk(part)
            elif isinstance(node, Not):
                walk(node.operand)

        walk(self.tree)
        return frozenset(found)

    def evaluate(self, values: Mapping[str, float | None]) -> bool:
        """True when the condition holds; raises MissingValue when a name has no (finite) value."""
        return _cond(self.tree, values)


def _arith(node: Arith, values: Mapping[str, float | None]) -> float:
    if isinstance(node, Num):
        return node.value
    if isinstance(node, Name):
        value = values.get(node.name)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            raise MissingValue(node.name)
        return float(value)
    if isinstance(node, Neg):
        return -_arith(node.operand, values)
    left, right = _arith(node.left, values), _arith(node.right, values)
    if node.op == "+":
        return left + right
    if node.op == "-":
        return left - right
    if node.op == "*":
        return left * right
    if right == 0:
        return math.copysign(math.inf, left) if left else math.nan
    return left / right


def _compare(op: str, a: float, b: float) -> bool:
    return {"<=": a <= b, "<": a < b, ">=": a >= b, ">": a > b, "==": a == b, "!=": a != b}[op]


def _cond(node: Cond, values: Mapping[str, float | None]) -> bool:
    if isinstance(node, Compare):
        results = [_arith(o, values) for o in node.operands]
        return all(_compare(op, results[i], results[i + 1]) for i, op in enumerate(node.ops))
    if isinstance(node, Not):
        return not _cond(node.operand, values)
    if node.op == "and":
        return all(_cond(p, values) for p in node.parts)
    return any(_cond(p, values) for p in node.parts)
