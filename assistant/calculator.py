"""Arithmetic from untrusted text, parsed into an AST and walked: no eval, bounded work."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

Number = int | float

_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Number], Number]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_FUNCTIONS: dict[str, Callable[..., Number]] = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": lambda x, digits=0: round(x, _bounded_digits(digits)),
    "floor": math.floor,
    "ceil": math.ceil,
    "log": math.log,
    "log10": math.log10,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "min": min,
    "max": max,
}
_CONSTANTS: dict[str, Number] = {"pi": math.pi, "e": math.e}
_MAX_LENGTH = 500
_MAX_EXPONENT = 10_000
_MAX_BITS = 13_300  # about 4,000 decimal digits


class CalculatorError(ValueError):
    """The expression is not arithmetic we accept; the message says what to change."""


def evaluate(expression: str) -> Number:
    text = expression.strip().replace("^", "**").replace("\u00d7", "*").replace("÷", "/")
    if not text:
        raise CalculatorError("the expression is empty")
    if len(text) > _MAX_LENGTH:
        raise CalculatorError(f"the expression is longer than {_MAX_LENGTH} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise CalculatorError(f"not an arithmetic expression: {expression!r}") from None
    try:
        return _eval(tree.body)
    except ZeroDivisionError:
        raise CalculatorError("division by zero") from None
    except OverflowError:
        raise CalculatorError("the result is too large") from None
    except RecursionError:
        raise CalculatorError("the expression is nested too deeply") from None


def _eval(node: ast.expr) -> Number:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        if isinstance(node.value, bool):
            raise CalculatorError("booleans are not numbers here")
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _binary(node)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return _call(node.func.id, node)
    raise CalculatorError(f"unsupported element: {_describe(node)}")


def _describe(node: ast.expr) -> str:
    text = ast.unparse(node) if not isinstance(node, ast.UnaryOp | ast.BinOp) else ""
    return repr(text) if text and len(text) <= 40 else type(node).__name__


def _binary(node: ast.BinOp) -> Number:
    left, right = _eval(node.left), _eval(node.right)
    if isinstance(node.op, ast.Pow):
        _check_power(left, right)
    result = _BINARY[type(node.op)](left, right)
    if isinstance(result, complex):
        raise CalculatorError("the result is not a real number")
    if isinstance(result, int) and result.bit_length() > _MAX_BITS:
        raise CalculatorError("the result is too large")
    return result


def _check_power(base: Number, exponent: Number) -> None:
    """Refuse a power before computing it: big-integer powers hold the GIL until done."""
    if abs(exponent) > _MAX_EXPONENT:
        raise CalculatorError(f"exponents above {_MAX_EXPONENT} are not supported")
    exact = isinstance(base, int) and isinstance(exponent, int) and abs(base) > 1
    if exact and int(base).bit_length() * exponent > _MAX_BITS:
        raise CalculatorError("the result is too large")


def _bounded_digits(digits: Number) -> int:
    """round(x, -10**8) would build 10**(10**8) first, holding the GIL for minutes."""
    if not isinstance(digits, int) or abs(digits) > 100:
        raise CalculatorError("round() takes a whole number of digits between -100 and 100")
    return digits


def _call(name: str, node: ast.Call) -> Number:
    function = _FUNCTIONS.get(name)
    if function is None or node.keywords:
        allowed = ", ".join(sorted(_FUNCTIONS))
        raise CalculatorError(f"unknown function {name!r} (available: {allowed})")
    try:
        return function(*(_eval(arg) for arg in node.args))
    except (TypeError, ValueError) as exc:
        raise CalculatorError(f"{name}: {exc}") from None
