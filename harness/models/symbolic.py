"""SymPy definitions of the element-wise functions of a model, their derivatives, and the
expression kind parsed safely.

Every element-wise function is a SymPy expression in the real symbol :data:`Z` (``z``); its
derivative is ``sympy.diff`` of it, never typed in by hand. Where PyTorch's autograd computes the
derivative from the function's *output* (``tanh``: ``1 - out**2``; ``sigmoid``: ``out (1 - out)``;
``exp``: ``out``; ``sqrt``: ``1 / (2 out)``), the derivative is also written in the symbol
:data:`OUT` (``out``), and :func:`element_function` checks that the rewritten form equals
``sympy.diff``'s after substituting ``out = f(z)`` (``sympy.simplify`` of the difference is 0), so
the rewriting is checked, not trusted.

Definitions (PyTorch's, :mod:`harness.models.spec`): ``relu(z) = max(z, 0)``;
``leaky_relu(z) = z`` for ``z > 0`` else ``slope z``; ``sigmoid(z) = 1 / (1 + exp(-z))``;
``softplus(z) = log(1 + exp(z))`` (the exact function; torch's threshold at 20 is an approximation
of the library which the bounds name); ``gelu(z) = z/2 (1 + erf(z / sqrt 2))``.

Kinks: ReLU, leaky ReLU and ``Abs`` are not differentiable at 0. Their derivative is
``sympy.diff`` away from 0 and the convention at exactly 0 (a ``Piecewise`` branch ``Eq(z, 0)``):
ReLU's is :attr:`ModelSpec.relu_grad_at_zero` (0 in PyTorch); leaky ReLU's is
``slope + relu_grad_at_zero (1 - slope)`` (so ``relu_grad_at_zero = 0`` gives PyTorch's
``slope``: torch's backward is ``z > 0 ? g : g * slope``; 1 gives the positive branch); ``Abs``'s
is ``sign(0) = 0`` (SymPy's and PyTorch's). :data:`KINK_FUNCTIONS` names them.

The expression kind (:func:`parse_expression`): the text is first checked with Python's :mod:`ast`
(numbers, the names of the inputs and parameters, ``+ - * / **`` (``^`` too), unary signs and calls
of the allowed functions :data:`ALLOWED_FUNCTIONS` with one positional argument; anything else, an
attribute, a subscript, a string, a keyword, an unknown name or function, is a ``ValueError``
naming it), and only then parsed by ``sympy.parse_expr`` with an explicit namespace of those
symbols and functions (decimals become exact rationals). Powers must have integer exponents (or
``1/2``, i.e. ``sqrt``). The parse is unevaluated (``evaluate=False``): the plan, its bounds and
``torch-model-functional`` follow the operations as written, brackets included (:func:`_mark_brackets`: a
bracketed sum or product is one node, computed first). SymPy's evaluation rewrote them
(``log(exp(a*x1))`` is ``a*x1``, ``(a*x1 + 1) - 1`` is ``a*x1``), so the bounds lacked the written
text's roundings and a correct step that evaluated the text was ``disagree`` (4.18 times the rigorous
bound; helper-65).
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import sympy as sp

from .spec import ModelSpec, kink_derivative

#: The argument symbol of every element-wise function.
Z = sp.Symbol("z", real=True)
#: The forward value, for derivatives written in it (``tanh``: ``1 - out**2``).
OUT = sp.Symbol("out", real=True)

#: Functions an expression model may call (name in the text -> SymPy function).
ALLOWED_FUNCTIONS: dict[str, sp.FunctionClass] = {
    "exp": sp.exp, "log": sp.log, "sqrt": sp.sqrt, "sin": sp.sin, "cos": sp.cos, "tanh": sp.tanh,
    "erf": sp.erf, "Abs": sp.Abs, "abs": sp.Abs,
}
#: Element-wise functions with a kink at 0 (derivative by convention there).
KINK_FUNCTIONS = ("relu", "leaky_relu", "abs")
#: Element-wise functions that map rationals to rationals (their graphs have an exact rational truth).
RATIONAL_FUNCTIONS = ("relu", "leaky_relu", "abs")


@dataclass(frozen=True)
class ElementFunction:
    """One element-wise function and its derivative.

    Attributes:
        name: ``"tanh"``, ``"relu"``, ``"exp"``, ...
        expr: ``f(z)``.
        grad: ``f'(z)`` as ``sympy.diff`` gives it (with the convention at a kink).
        grad_in_out: ``f'`` written in ``out = f(z)`` (and possibly ``z``) where autograd computes
            it from the forward value; None otherwise.
        slope: leaky ReLU's slope (exact), else None.
    """

    name: str
    expr: sp.Expr
    grad: sp.Expr
    grad_in_out: sp.Expr | None = None
    slope: Fraction | None = None

    @property
    def grad_uses_out(self) -> bool:
        """Whether the derivative node takes the forward value as a second argument."""
        return self.grad_in_out is not None

    @property
    def grad_expr(self) -> sp.Expr:
        """The derivative as the plan evaluates it (in ``out`` where autograd uses it)."""
        return self.grad_in_out if self.grad_in_out is not None else self.grad


def _with_kink(grad: sp.Expr, at_zero: sp.Expr) -> sp.Expr:
    """``grad`` away from 0 and ``at_zero`` at exactly 0."""
    return sp.Piecewise((at_zero, sp.Eq(Z, 0)), (grad, True))


def _checked_out_form(expr: sp.Expr, grad: sp.Expr, in_out: sp.Expr, name: str) -> sp.Expr:
    """``in_out`` after checking that it equals ``grad`` when ``out = expr``.

    Raises:
        AssertionError: when the rewritten derivative differs from SymPy's (a bug here).
    """
    diff = sp.simplify(in_out.subs(OUT, expr) - grad)
    if diff != 0:
        raise AssertionError(f"{name}: the derivative written in the output, {in_out}, differs from sympy.diff's {grad}")
    return in_out


#: Derivatives written in the forward value, as PyTorch's autograd computes them (its derivatives.yaml:
#: tanh_backward, sigmoid_backward, exp's ``result``, sqrt's ``grad / (2 result)``).
_IN_OUT_FORMS: dict[str, sp.Expr] = {
    "tanh": 1 - OUT**2,
    "sigmoid": OUT * (1 - OUT),
    "exp": OUT,
    "sqrt": 1 / (2 * OUT),
}


@functools.cache
def element_function(name: str, slope: Fraction = Fraction(1, 100), grad_at_zero: Fraction = Fraction(0)) -> ElementFunction:
    """The element-wise function ``name`` (an activation or an allowed function of an expression).

    Args:
        name: one of :data:`harness.models.spec.ACTIVATIONS` or ``exp``, ``log``, ``sqrt``, ``sin``,
            ``cos``, ``erf``, ``abs``.
        slope: leaky ReLU's negative slope (exact).
        grad_at_zero: ReLU's derivative at 0 (:attr:`ModelSpec.relu_grad_at_zero`).

    Raises:
        ValueError: for an unknown name.
    """
    z = Z
    exprs: dict[str, sp.Expr] = {
        "relu": sp.Piecewise((z, z > 0), (0, True)),
        "leaky_relu": sp.Piecewise((z, z > 0), (sp.Rational(slope.numerator, slope.denominator) * z, True)),
        "tanh": sp.tanh(z),
        "sigmoid": 1 / (1 + sp.exp(-z)),
        "softplus": sp.log(1 + sp.exp(z)),
        "gelu": z / 2 * (1 + sp.erf(z / sp.sqrt(2))),
        "exp": sp.exp(z), "log": sp.log(z), "sqrt": sp.sqrt(z), "sin": sp.sin(z), "cos": sp.cos(z),
        "erf": sp.erf(z), "abs": sp.Abs(z),
    }
    if name not in exprs:
        raise ValueError(f"unknown element-wise function {name!r}; known: {', '.join(exprs)}")
    expr = exprs[name]
    grad = sp.diff(expr, z)
    if name == "relu":
        grad = _with_kink(grad, sp.Rational(grad_at_zero.numerator, grad_at_zero.denominator))
    elif name == "leaky_relu":
        at0 = kink_derivative(name, slope, grad_at_zero)
        grad = _with_kink(grad, sp.Rational(at0.numerator, at0.denominator))
    elif name == "abs":
        grad = _with_kink(grad, sp.Integer(0))
    in_out = _IN_OUT_FORMS.get(name)
    if in_out is not None:
        in_out = _checked_out_form(expr, grad, in_out, name)
    return ElementFunction(name, expr, grad, in_out, slope if name == "leaky_relu" else None)


def activation(spec: ModelSpec) -> ElementFunction:
    """The activation of an ``mlp`` spec, with its constants.

    Raises:
        ValueError: when the spec has no activation.
    """
    if spec.activation is None:
        raise ValueError(f"the model {spec.describe()} has no activation")
    return element_function(spec.activation, Fraction(spec.negative_slope), Fraction(spec.relu_grad_at_zero))


# ------------------------------------------------------------------ the expression kind

_BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.BitXor)


#: The largest power of an input or a parameter an expression may take: the product of the exponents of nested powers
#: (``(x1**4)**3`` is a 12th power), in magnitude. A larger one leaves every dtype's range for any value but 1, and
#: its exact value costs memory and time in proportion (``x1**1000000000`` took 50 s and 3.7 GB to grade, helper-131).
MAX_POWER = 1024
#: The most bits a constant power in an expression may have (``2**-1074``, float64's smallest subnormal, has 1,075;
#: ``9**9**9``, 1.2 billion, took as long as ``x1**1000000000`` and ``x1**(10**10**10)`` never finished parsing).
MAX_CONSTANT_BITS = 20_000


def _const_value(node: ast.AST, text: str, src: str | None = None) -> Fraction | None:
    """The exact value of a constant subexpression of ``text`` (numbers, + - * /, powers with an integer exponent), or
    None where it is not one (a name, a call, a power with a fractional exponent, a division by zero: SymPy reads
    those); computed without building a number of more than :data:`MAX_CONSTANT_BITS` bits. A decimal literal is its
    decimal value, as SymPy's ``rationalize`` reads it (``1.01`` is 101/100, 7 bits; ``src``: the text ``node`` was
    parsed from), not its nearest binary float's (53 bits: ``1.01**400``, about 53.7, was refused as more than 20,000
    bits, helper-133).

    Raises:
        ValueError: for a constant power whose value would have more bits than that (``9**9**9``)."""
    if isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, bool) or not isinstance(v, int | float):
            return None
        seg = ast.get_source_segment(src, node) if src is not None and isinstance(v, float) else None
        try:
            return Fraction(seg.replace("_", "")) if seg is not None else Fraction(v)
        except (OverflowError, ValueError, ZeroDivisionError):  # (a float literal beyond the range: inf)
            return None
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
        inner = _const_value(node.operand, text, src)
        return None if inner is None else (-inner if isinstance(node.op, ast.USub) else inner)
    if not isinstance(node, ast.BinOp):
        return None
    left, right = _const_value(node.left, text, src), _const_value(node.right, text, src)
    if left is None or right is None:
        return None
    if isinstance(node.op, ast.Add):
        return left + right
    if isinstance(node.op, ast.Sub):
        return left - right
    if isinstance(node.op, ast.Mult):
        return left * right
    if isinstance(node.op, ast.Div):
        return None if right == 0 else left / right
    if right.denominator != 1 or (left == 0 and right < 0):
        return None
    size = max(left.numerator.bit_length(), left.denominator.bit_length())
    if abs(left) not in (0, 1) and size * abs(right) > MAX_CONSTANT_BITS:
        raise ValueError(f"expression {text!r}: the constant power {ast.unparse(node)} has more than "
                         f"{MAX_CONSTANT_BITS:,} bits (beyond every dtype's range)")
    return left ** int(right)


def _check_power_sizes(text: str, tree: ast.AST, src: str | None = None) -> None:
    """Raise ValueError for a constant power of more than :data:`MAX_CONSTANT_BITS` bits or a power of an input or a
    parameter above :data:`MAX_POWER` (nested powers multiply), before SymPy evaluates any of them."""

    def power(node: ast.AST) -> int:  # the largest power of a name within node (a constant: 0)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow | ast.BitXor):
            base = power(node.left)
            exp = _const_value(node.right, text, src)
            power(node.right)  # (a name in an exponent is refused by the parse; its constants are checked here)
            if exp is None:
                return base
            if base == 0:
                _const_value(node, text, src)
                return 0
            p = base * max(1, abs(exp.numerator) // exp.denominator)
            if p > MAX_POWER:
                raise ValueError(f"expression {text!r}: {ast.unparse(node)} is a power of {p:,}, over the limit of "
                                 f"{MAX_POWER:,} (beyond every dtype's range but at 1)")
            return p
        if isinstance(node, ast.Name):
            return 1
        if isinstance(node, ast.Constant):
            return 0
        return max((power(c) for c in ast.iter_child_nodes(node)), default=0)

    power(tree)


def input_names(d: int) -> tuple[str, ...]:
    """The input symbols' names of an expression model with D inputs: ``x1 .. xD``."""
    return tuple(f"x{j + 1}" for j in range(d))


def _check_ast(text: str, names: set[str]) -> None:
    """Raise ValueError naming the first construct of ``text`` that is not allowed."""
    if "#" in text:  # (Python's parser drops a comment: "a*x1 # + b*x1**2" was a*x1, helper-92)
        raise ValueError(f"expression {text!r}: a comment ('#') is not allowed")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"expression {text!r} is not a formula: {exc.msg}") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Expression | ast.Load):
            continue
        if isinstance(node, ast.BinOp):
            if not isinstance(node.op, _BINOPS):
                raise ValueError(f"expression {text!r}: operator {type(node.op).__name__} is not allowed (+ - * / ** only)")
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, ast.UAdd | ast.USub):
                raise ValueError(f"expression {text!r}: operator {type(node.op).__name__} is not allowed")
        elif isinstance(node, ast.operator | ast.unaryop):
            continue
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise ValueError(f"expression {text!r}: constant {node.value!r} is not a number")
        elif isinstance(node, ast.Name):
            if node.id not in names and node.id not in ALLOWED_FUNCTIONS:
                raise ValueError(f"expression {text!r}: unknown symbol {node.id!r} (inputs and parameters: {', '.join(sorted(names))})")
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in ALLOWED_FUNCTIONS:
                what = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
                raise ValueError(f"expression {text!r}: unknown function {what!r} (allowed: {', '.join(ALLOWED_FUNCTIONS)})")
            if node.keywords or len(node.args) != 1:
                raise ValueError(f"expression {text!r}: {node.func.id} takes exactly one argument")
        else:
            raise ValueError(f"expression {text!r}: {type(node).__name__} ({ast.unparse(node)!r}) is not allowed")
    # (SymPy's convert_xor reads ``^`` as ``**``, right-associative and above ``*``: x1^10^10 is x1**(10**10), where
    # Python's tree has (x1^10)^10; the sizes are checked on the tree SymPy parses)
    src = text.strip().replace("^", "**") if "^" in text else text.strip()
    _check_power_sizes(text, ast.parse(src, mode="eval") if "^" in text else tree, src)
    for node in ast.walk(tree):  # a function name used as a value (``exp + 1``) is not a formula
        if isinstance(node, ast.Name) and node.id in ALLOWED_FUNCTIONS and node.id not in names:
            parents = [p for p in ast.walk(tree) if isinstance(p, ast.Call) and p.func is node]
            if not parents:
                raise ValueError(f"expression {text!r}: function {node.id!r} used without an argument")


#: The name :func:`parse_expression` writes before a bracketed operand (:func:`_mark_brackets`); an identity at parse time.
GROUP_CALL = "__grouped__"
#: The call :func:`_mark_brackets` writes for a unary minus of an operation (``-(x1 + 1 - 1)``): ``-1`` times its
#: operand, unevaluated (Python's ``-`` on a SymPy sum evaluated it: distributed, then ``1 - 1`` cancelled to ``-x1``).
NEGATE_CALL = "__negated__"
#: Operator families whose chains SymPy's unevaluated parse merges into one ``Add`` or ``Mul``.
_CHAIN_FAMILIES: tuple[tuple[type[ast.operator], ...], ...] = ((ast.Add, ast.Sub), (ast.Mult, ast.Div))


def _mark_brackets(text: str) -> str:
    """``text`` with :data:`GROUP_CALL` written before each bracket that holds an operand of an operator of the same
    family (``a*x1 + (b - c)``, ``(x1/a)/b``, ``a*(b*x1)``): SymPy's unevaluated parse flattens nested sums and
    products (its ``EvaluateFalseTransformer.flatten``), so without the call ``a*x1 + (2**30 - 2**30)`` became one sum
    of three terms, which the bounds may add in any order (a float32 bound about 64 wide: a gradient ten times too
    large agreed). A call keeps the operand one node, a term or factor computed first, as the text says.

    Brackets are read from Python's :mod:`ast` positions (``^`` read as ``**``, as :func:`parse_expression`'s
    ``convert_xor`` does): a left operand is bracketed when a ``(`` lies between its parent's start and its own (a
    parenthesised parent starts after its own bracket), a right one when the last character before it is ``(``.
    Chains written without brackets (``a + b - c``, ``x1/a/b``) are merged as before.

    A unary minus of an operation or a call (``-(x1 + 1 - 1)``, ``-(a*(b*c))``, ``-exp(a)``) becomes a
    :data:`NEGATE_CALL` of it: Python's ``-`` on the parsed operand evaluated it (a sum was distributed and its terms
    combined: ``-(x1 + 1 - 1)`` was ``-x1``, without the text's roundings)."""
    src = text.strip().replace("\r\n", "\n").replace("\r", "\n").replace("^", "**")
    raw = src.encode()
    starts = [0]
    for line in raw.split(b"\n")[:-1]:
        starts.append(starts[-1] + len(line) + 1)

    def at(line: int, col: int) -> int:
        return starts[line - 1] + col

    inserts: set[int] = set()
    negations: list[tuple[int, int]] = []  # (position of the '-', end of the operand)
    for node in ast.walk(ast.parse(src, mode="eval")):
        if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
                and isinstance(node.operand, ast.BinOp | ast.UnaryOp | ast.Call)):
            assert node.end_lineno is not None and node.end_col_offset is not None
            negations.append((at(node.lineno, node.col_offset), at(node.end_lineno, node.end_col_offset)))
        if not isinstance(node, ast.BinOp):
            continue
        family = next((f for f in _CHAIN_FAMILIES if isinstance(node.op, f)), None)
        if family is None:
            continue
        for child, left in ((node.left, True), (node.right, False)):
            if not (isinstance(child, ast.BinOp) and isinstance(child.op, family)):
                continue
            c0 = at(child.lineno, child.col_offset)
            if left:
                before = raw[at(node.lineno, node.col_offset):c0]
                if b"(" in before:
                    inserts.add(at(node.lineno, node.col_offset) + before.rindex(b"("))
            else:
                before = raw[:c0].rstrip()
                if before.endswith(b"("):
                    inserts.add(len(before) - 1)
    # edits at positions of the original text, applied from its end: (position, characters replaced, new text, order at
    # one position: a closing bracket goes after a replacement there)
    edits = [(pos, 0, GROUP_CALL.encode(), 1) for pos in inserts]
    for start, end in negations:  # '-' becomes '__negated__(' and a ')' closes the operand
        edits += [(start, 1, NEGATE_CALL.encode() + b"(", 0), (end, 0, b")", 1)]
    for pos, n, new, _ in sorted(edits, key=lambda e: (e[0], -e[3]), reverse=True):
        raw = raw[:pos] + new + raw[pos + n:]
    return raw.decode()


#: The names the unevaluated parse writes (numbers, symbols and the operators): no parameter may take one.
_PARSER_NAMES: dict[str, object] = {"Integer": sp.Integer, "Float": sp.Float, "Rational": sp.Rational, "Symbol": sp.Symbol,
                                    "Add": sp.Add, "Mul": sp.Mul, "Pow": sp.Pow}


def _unevaluated(fn: sp.FunctionClass) -> Any:
    """``fn`` applied without evaluation (whatever keywords the parse passes)."""
    return lambda e, **_: fn(e, evaluate=False)


def _numeric_exponents(e: sp.Basic) -> sp.Basic:
    """``e`` with each constant exponent written as an expression (``x1**(1/2)``: the unevaluated parse keeps ``1/2``
    as ``1 * 2**-1``) replaced by its value, the rest of the tree kept as parsed (unevaluated)."""
    if not e.args:
        return e
    args = [_numeric_exponents(a) for a in e.args]
    if isinstance(e, sp.Pow) and not args[1].free_symbols and not args[1].is_Number:
        args[1] = sp.sympify(args[1].doit())
    if all(a is b for a, b in zip(args, e.args, strict=True)):
        return e
    return e.func(*args, evaluate=False)


def _check_powers(expr: sp.Expr, text: str) -> None:
    """Raise ValueError for a power that is not an integer or ``1/2`` (``-1/2``) power."""
    for p in expr.atoms(sp.Pow):
        e = p.exp
        if not (e.is_Integer or (e.is_Rational and e.q == 2 and abs(e.p) == 1)):
            raise ValueError(f"expression {text!r}: power {p} is not an integer power (nor a square root)")


@dataclass(frozen=True)
class ParsedExpression:
    """An expression model's prediction, parsed.

    Attributes:
        expr: the SymPy expression.
        inputs: the input symbols ``x1 .. xD`` (in order).
        parameters: the parameter symbols, in the spec's order.
    """

    expr: sp.Expr
    inputs: tuple[sp.Symbol, ...]
    parameters: tuple[sp.Symbol, ...]


@functools.lru_cache(maxsize=256)
def parse_expression(text: str, parameters: tuple[str, ...], d: int) -> ParsedExpression:
    """Parse an expression model's text safely (module docstring).

    Args:
        text: the expression, e.g. ``"a * tanh(w * x1 + c)"``.
        parameters: the scalar parameter names.
        d: the number of inputs D (``x1 .. xD``; ``x`` means ``x1`` when D = 1).

    Returns:
        the parsed expression with its symbols.

    Raises:
        ValueError: naming the construct, symbol or function that is not allowed, or a parameter
            that clashes with an input or function name.
    """
    from sympy.parsing.sympy_parser import convert_xor, parse_expr, rationalize, standard_transformations

    ins = input_names(d)
    for p in parameters:
        if p in ins or p in ALLOWED_FUNCTIONS or p in ("x", GROUP_CALL, NEGATE_CALL, *_PARSER_NAMES):
            raise ValueError(f"parameter name {p!r} clashes with an input, a function or a name of the parser")
    syms = {n: sp.Symbol(n, real=True) for n in (*ins, *parameters)}
    names = set(syms)
    if d == 1:
        names.add("x")
    _check_ast(text, names)
    local: dict[str, object] = dict(syms)
    if d == 1:
        local["x"] = syms["x1"]
    # every allowed function unevaluated: the parse adds evaluate=False only to the names SymPy knows (not abs, erf), so
    # abs((a*x1 + 1) - 1) was Abs(a*x1) and abs(exp(1)) the constant E, which the plan cannot run (helper-92)
    local.update({name: _unevaluated(fn) for name, fn in ALLOWED_FUNCTIONS.items()})
    local[GROUP_CALL] = lambda e: e  # (a bracketed operand: the call stops the parse from merging it into its parent)
    local[NEGATE_CALL] = lambda e: sp.Mul(sp.Integer(-1), e, evaluate=False)
    global_ns: dict[str, object] = {"__builtins__": {}, **_PARSER_NAMES}
    expr = parse_expr(_mark_brackets(text), local_dict=local, global_dict=global_ns,
                      transformations=(*standard_transformations, convert_xor, rationalize), evaluate=False)
    if not isinstance(expr, sp.Expr):
        raise ValueError(f"expression {text!r} is not a scalar formula")
    extra = {s.name for s in expr.free_symbols} - set(syms)
    if extra:
        raise ValueError(f"expression {text!r}: unknown symbol {sorted(extra)[0]!r}")
    expr = _numeric_exponents(expr)
    _check_powers(expr, text)
    return ParsedExpression(expr, tuple(syms[n] for n in ins), tuple(syms[p] for p in parameters))


def sum_chain(e: sp.Add) -> tuple[sp.Basic, list[tuple[str, sp.Basic]]]:
    """How a parsed sum is computed, left to right, by the plan (:mod:`harness.models.plan`) and by
    ``torch-model-functional`` alike: its first term, then ``("add", term)`` for the other terms SymPy orders
    first and ``("sub", term)`` for those with a minus sign (``a - b`` is ``a`` then ``("sub", b)``)."""
    terms = list(e.as_ordered_terms())
    pos = [t for t in terms if not t.could_extract_minus_sign()]
    neg = [t for t in terms if t.could_extract_minus_sign()]
    first, neg = (pos[0], neg) if pos else (neg[0], neg[1:])  # (all terms negative: the first as written)
    return first, [("add", t) for t in pos[1:]] + [("sub", negated(t)) for t in neg]


def negated(t: sp.Basic) -> sp.Basic:
    """``-t`` of a term with a minus sign, without SymPy's evaluation (``-t`` distributes a coefficient over a sum and
    combines its terms: ``-(-1*(x1 + 1 - 1))`` must stay ``x1 + 1 - 1``): its negative number factor flipped, or
    ``-1 * t`` unevaluated."""
    if t.is_Number:
        return -t
    if isinstance(t, sp.Mul):
        args = list(t.args)
        i = next((j for j, a in enumerate(args) if a.is_Number and a.is_negative), None)
        if i is not None:
            flipped = -args[i]
            rest = args[:i] + ([flipped] if flipped != 1 else []) + args[i + 1:]
            return rest[0] if len(rest) == 1 else sp.Mul(*rest, evaluate=False)
    return sp.Mul(sp.Integer(-1), t, evaluate=False)


def product_chain(e: sp.Mul) -> tuple[list[sp.Basic], list[sp.Basic]]:
    """How a parsed product is computed, by the plan and by ``torch-model-functional`` alike: the numerator's
    factors multiplied left to right, divided by the product of the denominator's (``x**-k`` read as ``x**k``)."""
    num: list[sp.Basic] = []
    den: list[sp.Basic] = []
    for fac in e.as_ordered_factors():
        if isinstance(fac, sp.Pow) and fac.exp.is_negative:
            den.append(sp.Pow(fac.base, -fac.exp, evaluate=False))  # ((a*b)**-2: not a**2*b**2)
        else:
            num.append(fac)
    return num, den


def power_form(e: sp.Pow) -> tuple[str, sp.Basic, int]:
    """How a parsed power is computed, by the plan and by ``torch-model-functional`` alike: ``(form, operand,
    exponent)`` with form ``"base"`` (``x**1``: the base itself), ``"one"`` (``x**0``: 1 for every x, derivative 0, as
    torch's ``pow(x, 0)``), ``"reciprocal"`` (``x**-k``: 1 over the operand ``x**k``, rebuilt unevaluated, so that
    ``(a*b)**-2`` is not ``a**-2*b**-2``), ``"sqrt"``, ``"square"`` or ``"pow"`` (the integer exponent >= 3).

    Raises:
        ValueError: for another exponent (:func:`parse_expression` refuses them)."""
    base, ex = e.base, e.exp
    if ex == 1:
        return "base", base, 1
    if ex == 0:
        return "one", base, 0
    if ex.is_negative:
        return "reciprocal", sp.Pow(base, -ex, evaluate=False), -1
    if ex == sp.Rational(1, 2):
        return "sqrt", base, 0
    if ex.is_Integer and int(ex) >= 2:
        return ("square", base, 2) if int(ex) == 2 else ("pow", base, int(ex))
    raise ValueError(f"power {e} is not supported")


def function_name(f: sp.Basic) -> str:
    """The element-wise function name (as :func:`element_function` knows it) of a SymPy function
    application in a parsed expression (``exp(...)`` -> ``"exp"``, ``Abs(...)`` -> ``"abs"``).

    Raises:
        ValueError: for a function outside :data:`ALLOWED_FUNCTIONS`.
    """
    for name, cls in ALLOWED_FUNCTIONS.items():
        if f.func == cls:
            return "abs" if name == "Abs" else name
    raise ValueError(f"function {f.func} is not allowed in an expression model")
