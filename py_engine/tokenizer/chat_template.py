"""A strict subset of Jinja for chat templates (tokenizer_config.json `chat_template`), in pure
Python: the tab has no jinja2 (Pyodide offline), and a chat template is code from the model's
author, so what it may do is a short list and everything else is refused by name.

It renders exactly what transformers' `apply_chat_template` renders (ImmutableSandboxedEnvironment
with trim_blocks=True, lstrip_blocks=True, its `raise_exception` and `tojson`) for templates
built from:
  {{ expr }}  {% for x in expr %}  {% if %}/{% elif %}/{% else %}  {% set x = expr %}
  {% generation %} (HF's assistant marker: renders its body)  {# comments #}
  whitespace control {%- -%} {{- -}} {%+
  expressions: literals ('..', "..", 12, 1.5, true/false/none, [..], {..: ..}), names,
  a.b, a['b'], a[1:], calls of raise_exception(msg) and of a few string/dict methods
  (METHODS), + - * / // % ~, == != < <= > >= in, not in, and/or/not, `x if c else y`,
  tests `is [not] defined/undefined/none/string/number/mapping/sequence/boolean`,
  filters trim, length, tojson(indent=..), loop.first/last/index0/index/length.
Context: messages, add_generation_prompt, bos_token, eos_token (+ any other names passed),
tools = documents = None as transformers passes them.
Scoping as Jinja: a {% set %} inside a for-loop body lives for that iteration only.
"""
import json
import re

__all__ = ["ChatTemplate", "ChatTemplateError", "render_chat"]


class ChatTemplateError(ValueError):
    """The template uses something outside the subset, or it raised (raise_exception)."""


class _Undefined:
    """Jinja's default Undefined: renders as '', is false, iterates as empty; anything else
    done with it is an error naming the missing variable."""
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __bool__(self):
        return False

    def __str__(self):
        return ""

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0


# ------------------------------------------------------------------------------------ lexer

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<float>\d+\.\d+(?:[eE][+-]?\d+)?)
  | (?P<int>\d+)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>//|==|!=|<=|>=|[-+*/%~<>()\[\]{},.:|=])
""", re.VERBOSE | re.DOTALL)
_OPENERS = ("{{", "{%", "{#")
_CLOSERS = {"{{": "}}", "{%": "%}"}


def _lex(source):
    """source -> [(kind, payload, line)]: ("text", str) | ("var", tokens) | ("block", tokens),
    with trim_blocks / lstrip_blocks / -/+ whitespace control applied as jinja2's lexer does."""
    if source.endswith("\n"):            # keep_trailing_newline=False drops one final newline
        source = source[:-1]
    out, pos, line_starting = [], 0, True
    while pos < len(source):
        starts = [i for i in (source.find(o, pos) for o in _OPENERS) if i >= 0]
        start = min(starts) if starts else -1
        if start < 0:
            out.append(("text", source[pos:], source.count("\n", 0, pos) + 1))
            break
        opener = source[start:start + 2]
        sign = source[start + 2:start + 3]
        sign = sign if sign in ("-", "+") else ""
        text = source[pos:start]
        if sign == "-":
            text = text.rstrip()
        elif sign != "+" and opener != "{{":      # lstrip_blocks: block and comment tags
            l_pos = text.rfind("\n") + 1
            if (l_pos > 0 or line_starting) and text[l_pos:] and not text[l_pos:].strip():
                text = text[:l_pos]
        line = source.count("\n", 0, start) + 1
        if text:
            out.append(("text", text, line))
        body = start + 2 + len(sign)
        if opener == "{#":
            end = source.find("#}", body)
            if end < 0:
                raise ChatTemplateError(f"chat template line {line}: a comment is never closed")
            after = end + 2
            after = _after_tag(source, after, source[end - 1] == "-" and end > body, trim=True)
        else:
            tokens, end, minus = _lex_tag(source, body, _CLOSERS[opener], line)
            out.append(("var" if opener == "{{" else "block", tokens, line))
            after = end + 2
            after = _after_tag(source, after, minus, trim=opener == "{%")
        line_starting = source[after - 1] == "\n"     # the closer ate a newline
        pos = after
    return out


def _after_tag(source, after, minus, trim):
    """Where text resumes after a tag: `-` closers eat all whitespace, block/comment closers
    eat one newline (trim_blocks)."""
    if minus:
        while after < len(source) and source[after].isspace():
            after += 1
    elif trim and source.startswith("\n", after):
        after += 1
    return after


def _lex_tag(source, pos, closer, line):
    """Tokens of one {{ }} or {% %} tag from `pos`; returns (tokens, index of the closer,
    closer had a '-'). A closer inside brackets or strings does not end the tag."""
    tokens, depth = [], 0
    while pos < len(source):
        if depth == 0:
            if source.startswith("-" + closer, pos):
                return tokens, pos + 1, True
            if source.startswith("+" + closer, pos) and closer == "%}":
                return tokens, pos + 1, False
            if source.startswith(closer, pos):
                return tokens, pos, False
        m = _TOKEN.match(source, pos)
        if m is None:
            raise ChatTemplateError(f"chat template line {line}: cannot read "
                                    f"{source[pos:pos + 12]!r} inside a tag")
        kind = m.lastgroup
        value = m.group(kind)
        pos = m.end()
        if kind == "ws":
            continue
        if kind == "string":
            value = value[1:-1].encode("ascii", "backslashreplace").decode("unicode-escape")
        elif kind == "int":
            value = int(value)
        elif kind == "float":
            value = float(value)
        elif kind == "op":
            depth += value in "([{"
            depth -= value in ")]}"
        tokens.append((kind, value))
    raise ChatTemplateError(f"chat template line {line}: a tag is never closed "
                            f"(expected {closer!r})")


# ----------------------------------------------------------------------------- expressions

_COMPARE = ("==", "!=", "<", "<=", ">", ">=")
_TESTS = {
    "defined": lambda v: not isinstance(v, _Undefined),
    "undefined": lambda v: isinstance(v, _Undefined),
    "none": lambda v: v is None,
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "mapping": lambda v: isinstance(v, dict),
    "sequence": lambda v: isinstance(v, (list, tuple, str, dict)),
    "boolean": lambda v: isinstance(v, bool),
}
FILTERS = ("trim", "length", "tojson")
METHODS = {str: ("strip", "lstrip", "rstrip", "startswith", "endswith", "split", "upper",
                 "lower", "replace"),
           dict: ("get", "items", "keys", "values")}
LOOP_FIELDS = ("index0", "index", "first", "last", "length")


class _Parser:
    """Recursive descent over one tag's tokens, with Jinja's precedence:
    cond-expr < or < and < not < compare < + - < ~ < * / // % < unary < postfix/filters."""

    def __init__(self, tokens, line):
        self.t, self.i, self.line = tokens, 0, line

    def fail(self, msg):
        raise ChatTemplateError(f"chat template line {self.line}: {msg}")

    def peek(self, k=0):
        j = self.i + k
        return self.t[j] if j < len(self.t) else (None, None)

    def at(self, value, kind=None):
        k, v = self.peek()
        return v == value and (kind is None or k == kind) and k in ("op", "name")

    def take(self, value=None):
        k, v = self.peek()
        if k is None:
            self.fail(f"the tag ends where {value!r} was expected" if value else
                      "the tag ends too early")
        if value is not None and v != value:
            self.fail(f"expected {value!r}, found {v!r}")
        self.i += 1
        return k, v

    def name(self):
        k, v = self.take()
        if k != "name":
            self.fail(f"expected a name, found {v!r}")
        return v

    def done(self):
        if self.i != len(self.t):
            self.fail(f"unexpected {self.t[self.i][1]!r}")

    def expression(self):
        node = self.or_()
        if self.at("if", "name"):
            self.take()
            cond = self.or_()
            other = None
            if self.at("else", "name"):
                self.take()
                other = self.expression()
            return ("cond", node, cond, other)
        return node

    def or_(self):
        node = self.and_()
        while self.at("or", "name"):
            self.take()
            node = ("or", node, self.and_())
        return node

    def and_(self):
        node = self.not_()
        while self.at("and", "name"):
            self.take()
            node = ("and", node, self.not_())
        return node

    def not_(self):
        if self.at("not", "name"):
            self.take()
            return ("not", self.not_())
        return self.compare()

    def compare(self):
        node = self.math1()
        ops = []
        while True:
            k, v = self.peek()
            if k == "op" and v in _COMPARE:
                self.take()
                ops.append((v, self.math1()))
            elif self.at("in", "name"):
                self.take()
                ops.append(("in", self.math1()))
            elif self.at("not", "name") and self.peek(1) == ("name", "in"):
                self.i += 2
                ops.append(("not in", self.math1()))
            else:
                break
        return ("compare", node, ops) if ops else node

    def math1(self):
        node = self.concat()
        while self.peek() in (("op", "+"), ("op", "-")):
            op = self.take()[1]
            node = ("bin", op, node, self.concat())
        return node

    def concat(self):
        node = self.math2()
        while self.peek() == ("op", "~"):
            self.take()
            node = ("bin", "~", node, self.math2())
        return node

    def math2(self):
        node = self.unary()
        while self.peek() in (("op", "*"), ("op", "/"), ("op", "//"), ("op", "%")):
            op = self.take()[1]
            node = ("bin", op, node, self.unary())
        return node

    def unary(self, with_filter=True):
        if self.peek() == ("op", "-"):
            self.take()
            node = ("neg", self.unary(False))
        elif self.peek() == ("op", "+"):
            self.take()
            node = self.unary(False)
        else:
            node = self.postfix(self.primary())
        return self.filters(node) if with_filter else node

    def primary(self):
        k, v = self.take()
        if k in ("string", "int", "float"):
            node = ("lit", v)
            while self.peek()[0] == "string":           # 'a' 'b' is one string in Jinja
                node = ("lit", node[1] + self.take()[1])
            return node
        if k == "name":
            if v in ("true", "True"):
                return ("lit", True)
            if v in ("false", "False"):
                return ("lit", False)
            if v in ("none", "None"):
                return ("lit", None)
            return ("name", v)
        if v == "(":
            items = self.items(")")
            return items[0] if len(items) == 1 and not self._trailing_comma else ("tuple", items)
        if v == "[":
            return ("list", self.items("]"))
        if v == "{":
            pairs = []
            while not self.at("}"):
                key = self.expression()
                self.take(":")
                pairs.append((key, self.expression()))
                if not self.at("}"):
                    self.take(",")
            self.take("}")
            return ("dict", pairs)
        self.fail(f"unexpected {v!r}")

    def items(self, close):
        items, self._trailing_comma = [], False
        while not self.at(close):
            items.append(self.expression())
            self._trailing_comma = False
            if not self.at(close):
                self.take(",")
                self._trailing_comma = True
        self.take(close)
        return items

    def postfix(self, node):
        while True:
            if self.at("."):
                self.take()
                k, v = self.take()
                if k not in ("name", "int"):
                    self.fail(f"expected an attribute after '.', found {v!r}")
                node = ("getattr", node, v)
            elif self.at("["):
                self.take()
                node = self.subscript(node)
            elif self.at("("):
                self.take()
                args, kwargs = self.call_args()
                node = ("call", node, args, kwargs)
            else:
                return node

    def subscript(self, node):
        parts, cur = [], None
        while True:
            if self.at("]"):
                self.take()
                parts.append(cur)
                break
            if self.at(":"):
                self.take()
                parts.append(cur)
                cur = None
                continue
            cur = self.expression()
        if len(parts) == 1:
            if parts[0] is None:
                self.fail("empty subscript []")
            return ("getitem", node, parts[0])
        if len(parts) > 3:
            self.fail("a slice takes at most start:stop:step")
        return ("slice", node, parts + [None] * (3 - len(parts)))

    def call_args(self):
        args, kwargs = [], {}
        while not self.at(")"):
            if self.peek()[0] == "name" and self.peek(1) == ("op", "="):
                key = self.name()
                self.take("=")
                kwargs[key] = self.expression()
            else:
                args.append(self.expression())
            if not self.at(")"):
                self.take(",")
        self.take(")")
        return args, kwargs

    def filters(self, node):
        while True:
            if self.at("|"):
                self.take()
                name = self.name()
                if name not in FILTERS:
                    self.fail(f"the filter '{name}' is not supported (supported: "
                              f"{', '.join(FILTERS)})")
                args, kwargs = [], {}
                if self.at("("):
                    self.take()
                    args, kwargs = self.call_args()
                node = ("filter", name, node, args, kwargs)
            elif self.at("is", "name"):
                self.take()
                negate = self.at("not", "name")
                if negate:
                    self.take()
                test = self.name()
                if test not in _TESTS:
                    self.fail(f"the test 'is {test}' is not supported (supported: "
                              f"{', '.join(_TESTS)})")
                node = ("test", test, node, negate)
            else:
                return node


# ------------------------------------------------------------------------------ statements

_BLOCKS_SUPPORTED = "for, if/elif/else, set, generation"


def _parse(items):
    """Lexed items -> a tree: [("text", s) | ("out", expr) | ("if", [(cond, body)], else) |
    ("for", names, expr, body) | ("set", name, expr)], line numbers kept for errors."""
    pos = 0

    def block_kw(item):
        tokens = item[1]
        if not tokens or tokens[0][0] != "name":
            raise ChatTemplateError(f"chat template line {item[2]}: an empty or unreadable "
                                    "{% %} tag")
        return tokens[0][1]

    def body(stops):
        nonlocal pos
        nodes = []
        while pos < len(items):
            kind, payload, line = items[pos]
            if kind == "text":
                nodes.append(("text", payload))
                pos += 1
                continue
            p = _Parser(payload, line)
            if kind == "var":
                expr = p.expression()
                p.done()
                nodes.append(("out", expr, line))
                pos += 1
                continue
            kw = block_kw(items[pos])
            if kw in stops:
                return nodes, kw
            pos += 1
            p.take()
            if kw == "if":
                branches, other = [], None
                cond = p.expression()
                p.done()
                while True:
                    nodes_, stop = body(("elif", "else", "endif"))
                    branches.append((cond, nodes_))
                    _, tag, tline = items[pos]
                    pos += 1
                    q = _Parser(tag, tline)
                    q.take()
                    if stop == "elif":
                        cond = q.expression()
                        q.done()
                        continue
                    q.done()
                    if stop == "else":
                        other, _ = body(("endif",))
                        pos += 1
                    break
                nodes.append(("if", branches, other or [], line))
            elif kw == "for":
                names = [p.name()]
                while p.at(","):
                    p.take()
                    names.append(p.name())
                p.take("in")
                it = p.or_()                # as Jinja: no conditional expression here
                if p.at("if", "name"):
                    p.fail("a filtered for-loop (`for x in y if c`) is not supported")
                if p.at("recursive", "name"):
                    p.fail("a recursive for-loop is not supported")
                p.done()
                nodes_, stop = body(("endfor", "else"))
                if stop == "else":
                    p.fail("{% for %}...{% else %} is not supported")
                pos += 1
                nodes.append(("for", names, it, nodes_, line))
            elif kw == "set":
                name = p.name()
                if p.at("."):
                    p.fail(f"assigning to an attribute ({name}.…) needs namespace(), which is "
                           "not supported")
                if not p.at("="):
                    p.fail("a {% set %} block is not supported; write {% set x = value %}")
                p.take("=")
                expr = p.expression()
                p.done()
                nodes.append(("set", name, expr, line))
            elif kw == "generation":
                p.done()
                nodes_, _ = body(("endgeneration",))
                pos += 1
                nodes.extend(nodes_)
            elif kw in ("endif", "endfor", "elif", "else", "endgeneration"):
                p.fail(f"{{% {kw} %}} without its opening tag")
            else:
                p.fail(f"{{% {kw} %}} is not supported by this renderer (supported: "
                       f"{_BLOCKS_SUPPORTED})")
        if stops:
            raise ChatTemplateError(f"chat template: the template ends inside a block "
                                    f"(expected {{% {stops[-1]} %}})")
        return nodes, None

    tree, _ = body(())
    return tree


# ------------------------------------------------------------------------------ evaluation

class _Loop:
    __slots__ = ("index0", "length")

    def __init__(self, index0, length):
        self.index0, self.length = index0, length


def _str(v):
    return "" if isinstance(v, _Undefined) else str(v)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # transformers' own tojson: json.dumps, no HTML escaping
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


class _Renderer:
    def __init__(self, context):
        self.scopes = [dict(context)]
        self.out = []

    def fail(self, line, msg):
        raise ChatTemplateError(f"chat template line {line}: {msg}")

    def run(self, nodes):
        for node in nodes:
            kind = node[0]
            if kind == "text":
                self.out.append(node[1])
            elif kind == "out":
                self.out.append(_str(self.eval(node[1], node[2])))
            elif kind == "if":
                for cond, body in node[1]:
                    if self.eval(cond, node[3]):
                        self.run(body)
                        break
                else:
                    self.run(node[2])
            elif kind == "for":
                self.loop(node)
            elif kind == "set":
                self.scopes[-1][node[1]] = self.eval(node[2], node[3])

    def loop(self, node):
        _, names, it, body, line = node
        seq = self.eval(it, line)
        if isinstance(seq, dict):
            seq = list(seq)
        elif not isinstance(seq, (list, tuple, str, _Undefined)):
            self.fail(line, f"cannot loop over a {type(seq).__name__}")
        seq = list(seq)
        for i, item in enumerate(seq):
            scope = {"loop": _Loop(i, len(seq))}
            if len(names) == 1:
                scope[names[0]] = item
            else:
                if not isinstance(item, (list, tuple)) or len(item) != len(names):
                    self.fail(line, f"cannot unpack {item!r} into {', '.join(names)}")
                scope.update(zip(names, item))
            self.scopes.append(scope)
            try:
                self.run(body)
            finally:
                self.scopes.pop()

    def lookup(self, name):
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return _Undefined(name)

    def eval(self, node, line):
        kind = node[0]
        ev = lambda n: self.eval(n, line)  # noqa: E731
        if kind == "lit":
            return node[1]
        if kind == "name":
            return self.lookup(node[1])
        if kind == "list":
            return [ev(n) for n in node[1]]
        if kind == "tuple":
            return tuple(ev(n) for n in node[1])
        if kind == "dict":
            return {ev(k): ev(v) for k, v in node[1]}
        if kind == "getattr":
            return self.attr(ev(node[1]), node[2], line)
        if kind == "getitem":
            return self.item(ev(node[1]), ev(node[2]), line)
        if kind == "slice":
            obj = ev(node[1])
            if isinstance(obj, _Undefined):
                self.fail(line, f"'{obj.name}' is undefined")
            a, b, c = (None if n is None else ev(n) for n in node[2])
            return obj[a:b:c]
        if kind == "call":
            return self.call(node, line)
        if kind == "filter":
            return self.filter(node, line)
        if kind == "test":
            result = _TESTS[node[1]](ev(node[2]))
            return not result if node[3] else result
        if kind == "not":
            return not ev(node[1])
        if kind == "and":
            left = ev(node[1])
            return ev(node[2]) if left else left
        if kind == "or":
            left = ev(node[1])
            return left if left else ev(node[2])
        if kind == "cond":
            if ev(node[2]):
                return ev(node[1])
            return ev(node[3]) if node[3] is not None else _Undefined("else")
        if kind == "neg":
            return -self.defined(ev(node[1]), line)
        if kind == "bin":
            return self.binary(node[1], ev(node[2]), ev(node[3]), line)
        if kind == "compare":
            left = ev(node[1])
            for op, rhs in node[2]:
                right = ev(rhs)
                if not self.compare(op, left, right, line):
                    return False
                left = right
            return True
        self.fail(line, f"cannot evaluate {kind}")

    def defined(self, v, line):
        if isinstance(v, _Undefined):
            self.fail(line, f"'{v.name}' is undefined")
        return v

    def attr(self, obj, name, line):
        if isinstance(obj, _Undefined):
            self.fail(line, f"'{obj.name}' is undefined (reading .{name})")
        if isinstance(obj, _Loop):
            if name not in LOOP_FIELDS:
                self.fail(line, f"loop.{name} is not supported (supported: "
                                f"{', '.join(LOOP_FIELDS)})")
            i, n = obj.index0, obj.length
            return {"index0": i, "index": i + 1, "first": i == 0, "last": i == n - 1,
                    "length": n}[name]
        if isinstance(obj, dict) and name in obj:
            return obj[name]
        for typ, names in METHODS.items():
            if isinstance(obj, typ) and name in names:
                return getattr(obj, name)
        if isinstance(obj, (dict, str, list, tuple)) or obj is None:
            return _Undefined(name)
        self.fail(line, f"reading .{name} of a {type(obj).__name__} is not supported")

    def item(self, obj, key, line):
        if isinstance(obj, _Undefined):
            self.fail(line, f"'{obj.name}' is undefined (reading [{key!r}])")
        if isinstance(obj, _Loop) or isinstance(key, str) and not isinstance(obj, dict):
            return self.attr(obj, key, line) if isinstance(key, str) else _Undefined(str(key))
        try:
            return obj[key]
        except (KeyError, IndexError, TypeError):
            return _Undefined(str(key))

    def call(self, node, line):
        _, fn, args, kwargs = node
        args = [self.eval(a, line) for a in args]
        kwargs = {k: self.eval(v, line) for k, v in kwargs.items()}
        if fn[0] == "name":
            if fn[1] == "raise_exception":
                raise ChatTemplateError(f"the chat template refused this conversation: "
                                        f"{_str(args[0]) if args else ''}")
            self.fail(line, f"the function {fn[1]}() is not supported (only raise_exception "
                            "and the methods " + ", ".join(sum(METHODS.values(), ())) + ")")
        target = self.eval(fn, line)
        if not callable(target) or isinstance(target, _Undefined):
            self.fail(line, f"calling {fn[2] if fn[0] == 'getattr' else fn[0]} is not "
                            "supported")
        return target(*args, **kwargs)

    def filter(self, node, line):
        _, name, value, args, kwargs = node
        v = self.eval(value, line)
        args = [self.eval(a, line) for a in args]
        kwargs = {k: self.eval(x, line) for k, x in kwargs.items()}
        if name == "trim":
            return _str(v).strip(*args)
        if name == "length":
            return len(v)
        return _tojson(self.defined(v, line), *args, **kwargs)

    def binary(self, op, a, b, line):
        if op == "~":
            return _str(a) + _str(b)
        self.defined(a, line)
        self.defined(b, line)
        try:
            if op == "+":
                return a + b
            if op == "-":
                return a - b
            if op == "*":
                return a * b
            if op == "/":
                return a / b
            if op == "//":
                return a // b
            return a % b
        except (TypeError, ZeroDivisionError) as e:
            self.fail(line, f"{type(a).__name__} {op} {type(b).__name__}: {e}")

    def compare(self, op, a, b, line):
        if op == "in":
            return a in self.defined(b, line)
        if op == "not in":
            return a not in self.defined(b, line)
        if op == "==":
            return a == b
        if op == "!=":
            return a != b
        try:
            if op == "<":
                return a < b
            if op == "<=":
                return a <= b
            return a > b if op == ">" else a >= b
        except TypeError as e:
            self.fail(line, f"cannot compare: {e}")


class ChatTemplate:
    """A compiled chat template. ChatTemplate(source).render(messages=..., ...) -> str."""

    def __init__(self, source):
        if not isinstance(source, str):
            raise ChatTemplateError(f"chat_template must be a string, found "
                                    f"{type(source).__name__}")
        self.source = source
        self.tree = _parse(_lex(source))

    def render(self, **context):
        context.setdefault("tools", None)
        context.setdefault("documents", None)
        r = _Renderer(context)
        r.run(self.tree)
        return "".join(r.out)


def render_chat(template, messages, add_generation_prompt=False, bos_token="", eos_token="",
                **extra):
    """Render `messages` ([{role, content}, ...]) as apply_chat_template(tokenize=False)."""
    tpl = template if isinstance(template, ChatTemplate) else ChatTemplate(template)
    return tpl.render(messages=messages, add_generation_prompt=add_generation_prompt,
                      bos_token=bos_token, eos_token=eos_token, **extra)
