"""Verifiable rewards for the vlm track: answer extraction, answer equivalence and a format reward.

Completions are expected as ``<think>reasoning</think><answer>final answer</answer>``.

- `extract_answer`: the LAST ``<answer>...</answer>`` block (tags tolerate spaces and case), stripped.
- `format_problem`: what keeps a completion from being exactly one think block then one answer
  block (only whitespace around them, a non-empty answer), or None when it is well formed.
- `answers_match`: whether an extracted answer equals the reference. The rules, in order:

  1. both are normalised: outer whitespace, ``$...$`` / ``\\(...\\)`` / ``\\boxed{...}`` wrappers and a
     final full stop are removed, inner whitespace is collapsed; equal strings match.
  2. a reference that is a number (``"3"``, ``"-2.5"``, ``"1/2"``, ``"1,000"``, ``"\\frac{1}{2}"``)
     matches a prediction that is the same number, compared exactly as fractions: ``"3"``,
     ``"3.0"``, ``" 3 "``, ``"6/2"``, ``"+3"``, and number words ``zero`` .. ``twenty`` (``"three"``).
     Expressions do not count (``"1+2"`` is not ``3``: in the arithmetic task that would let a model
     copy the operands instead of adding them), nor do units (``"3 apples"``).
  3. a reference without digits or operators (a bar label ``"A"``, a word) matches case-insensitively.
  4. any other reference (``"x^2+1"``, ``"2\\sqrt{2}"``, ``"\\{1, 2\\}"``) is compared symbolically by
     math-verify (sympy when math-verify is not installed), in a separate worker process with a time
     limit (`SYMBOLIC_TIMEOUT_S`). A check that runs over is killed and scores 0 with the reason; the
     next one starts a fresh worker. A process, not a signal alarm: an alarm cannot interrupt sympy
     while it is inside one long C call (a huge integer power), and it works only in the main thread.

Both rewards are registered in `shared.lm.rewards.REWARDS`; neither raises for any completion:

>>> [s.overall for s in accuracy_reward(["<think>1, 2, 3.</think><answer>3</answer>", "3", ""], [{"answer": "3"}] * 3)]
[1.0, 0.0, 0.0]
>>> accuracy_reward(["3"], [{"answer": "3"}])[0].reason
'no <answer>...</answer> block'
>>> format_reward(["<think>ok</think> <answer>A</answer>", "<answer>A</answer>"], [{}, {}])[1].reason
'no <think>...</think> block'
"""

from __future__ import annotations

import atexit
import json
import re
import select
import subprocess
import sys
import threading
from fractions import Fraction

from shared.lm.rewards import REWARDS, RewardScore

SYMBOLIC_TIMEOUT_S = 2.0
"""Wall-clock limit of one symbolic equivalence check (the worker's start-up is not counted)."""

WORKER_MEMORY_BYTES = 2 << 30
"""Address-space limit of the symbolic worker, so that a runaway expression cannot eat the machine."""

# ------------------------------------------------------------------------------------- extraction

_TAG = {name: (re.compile(rf"<\s*{name}\s*>", re.I), re.compile(rf"<\s*/\s*{name}\s*>", re.I))
        for name in ("think", "answer")}
_ANSWER_BLOCK = re.compile(r"<\s*answer\s*>(.*?)<\s*/\s*answer\s*>", re.I | re.S)
_LAYOUT = re.compile(
    r"\A(?P<pre>.*?)<\s*think\s*>(?P<think>.*?)<\s*/\s*think\s*>(?P<mid>.*?)"
    r"<\s*answer\s*>(?P<answer>.*?)<\s*/\s*answer\s*>(?P<post>.*)\Z", re.I | re.S)


def extract_answer(completion: str | None) -> tuple[str | None, str | None]:
    """``(answer, None)`` from the last ``<answer>...</answer>`` block, or ``(None, reason)``.

    >>> extract_answer("<think>1, 2, 3.</think><answer> 3 </answer>")
    ('3', None)
    >>> extract_answer("<answer>2</answer> no, wait: < ANSWER >3</answer>")
    ('3', None)
    >>> extract_answer("the answer is 3")
    (None, 'no <answer>...</answer> block')
    >>> extract_answer("<think>so</think><answer>3")
    (None, '<answer> is not closed (cut off at the length limit?)')
    """
    if not isinstance(completion, str) or not completion.strip():
        return None, "empty completion"
    blocks = _ANSWER_BLOCK.findall(completion)
    if not blocks:
        opened = _TAG["answer"][0].search(completion)
        return None, "<answer> is not closed (cut off at the length limit?)" if opened else \
            "no <answer>...</answer> block"
    answer = blocks[-1].strip()
    return (answer, None) if answer else (None, "empty answer")


def _tag_counts_problem(text: str) -> str | None:
    (think_open, think_close), (answer_open, answer_close) = (
        (len(o.findall(text)), len(c.findall(text))) for o, c in (_TAG["think"], _TAG["answer"]))
    if think_open == 0 or think_close == 0:
        return "no <think>...</think> block"
    if answer_open == 0:
        return "no <answer>...</answer> block"
    if answer_close == 0:
        return "<answer> is not closed (cut off at the length limit?)"
    if max(think_open, think_close) > 1:
        return "more than one <think> block"
    if max(answer_open, answer_close) > 1:
        return "more than one <answer> block"
    return None


def format_problem(completion: str | None) -> str | None:
    """None when `completion` is ``<think>...</think><answer>...</answer>`` (whitespace allowed around
    the blocks, the think block may be empty, the answer may not), else what is wrong.

    >>> format_problem(" <think>I count 1, 2.</think>\\n<answer>2</answer>\\n") is None
    True
    >>> format_problem("<think>a</think><answer>2</answer> because")
    'text after </answer>'
    >>> format_problem("<think>a</think><answer>1</answer><answer>2</answer>")
    'more than one <answer> block'
    """
    if not isinstance(completion, str) or not completion.strip():
        return "empty completion"
    problem = _tag_counts_problem(completion)
    if problem:
        return problem
    m = _LAYOUT.match(completion)
    if m is None:
        return "<answer> comes before <think>"
    for part, what in (("pre", "text before <think>"), ("mid", "text between </think> and <answer>"),
                       ("post", "text after </answer>")):
        if m[part].strip():
            return what
    return None if m["answer"].strip() else "empty answer"


# ------------------------------------------------------------------------------------ equivalence

_WRAPPERS = (re.compile(r"\A\\boxed\{(.*)\}\Z", re.S), re.compile(r"\A\$+(.*?)\$+\Z", re.S),
             re.compile(r"\A\\\((.*)\\\)\Z", re.S), re.compile(r"\A\\\[(.*)\\\]\Z", re.S))
_NUMBER_WORDS = {w: i for i, w in enumerate((
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"))}
_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d{1,3})?")
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d+)?")
_FRACTION = re.compile(r"([+-]?\d+)\s*/\s*([+-]?\d+)|\\[dt]?frac\{([+-]?\d+)\}\{([+-]?\d+)\}")
_MATHY = re.compile(r"[\d\\^*/()+=\[\]{}<>|_-]")
_MAX_NUMBER_CHARS = 64


def normalize_answer(text: str) -> str:
    """Strip whitespace, ``$``/``\\(\\)``/``\\[\\]``/``\\boxed{}`` wrappers and a final full stop.

    >>> normalize_answer(" $\\\\boxed{ 3 }$. ")
    '3'
    """
    s, previous = " ".join(str(text).split()), None
    while s != previous:
        previous = s
        for wrapper in _WRAPPERS:
            m = wrapper.match(s)
            if m:
                s = m.group(1).strip()
        s = s.rstrip(".").strip() if not s.endswith("..") else s
    return s


def parse_number(text: str) -> Fraction | None:
    """The exact value of a plain number (integer, decimal, fraction, ``1,000``, ``three``), else None.

    >>> parse_number("3.0") == 3, parse_number("1/2"), parse_number("Three"), parse_number("1+2")
    (True, Fraction(1, 2), Fraction(3, 1), None)
    """
    s = normalize_answer(text).lower()
    if s in _NUMBER_WORDS:
        return Fraction(_NUMBER_WORDS[s])
    if len(s) > _MAX_NUMBER_CHARS:  # no 10**999999 from a hostile "1e999999"
        return None
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    if _DECIMAL.fullmatch(s):
        return Fraction(s)
    m = _FRACTION.fullmatch(s)
    if m:
        num, den = (int(g) for g in (m.groups()[:2] if m[1] is not None else m.groups()[2:]))
        return Fraction(num, den) if den else None
    return None


def answers_match(predicted: str, reference: str, timeout_s: float | None = None) -> tuple[bool, str | None]:
    """``(equal, None)``, or ``(False, why)`` for a wrong answer or a failed check (rules in the module doc);
    `timeout_s` limits a symbolic check (default `SYMBOLIC_TIMEOUT_S`).

    >>> answers_match("3.0", "3"), answers_match("b", "B"), answers_match("1+2", "3")
    ((True, None), (True, None), (False, "'1+2' is not a number (expected 3)"))
    >>> answers_match("4", "3")
    (False, "got '4', expected '3'")
    """
    pred, ref = normalize_answer(predicted), normalize_answer(reference)
    if pred == ref:
        return True, None
    ref_value = parse_number(ref)
    if ref_value is not None:
        pred_value = parse_number(pred)
        if pred_value is None:
            return False, f"{pred!r} is not a number (expected {ref})"
        return (True, None) if pred_value == ref_value else (False, f"got {pred!r}, expected {ref!r}")
    if not _MATHY.search(ref):
        return (True, None) if pred.casefold() == ref.casefold() else (False, f"got {pred!r}, expected {ref!r}")
    equal, problem = symbolic_equal(pred, ref, SYMBOLIC_TIMEOUT_S if timeout_s is None else timeout_s)
    if problem:
        return False, problem
    return (True, None) if equal else (False, f"got {pred!r}, expected {ref!r} (not equivalent)")


# ---------------------------------------------------------------------------------- symbolic check

_WORKER_SOURCE = r'''
import json, sys
replies, sys.stdout = sys.stdout, sys.stderr  # stray prints from libraries must not garble the replies
try:
    import resource
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
except Exception:
    pass
try:
    from math_verify import parse, verify
except ImportError:
    parse = verify = None
import re
import sympy
from sympy.parsing.sympy_parser import (convert_xor, implicit_multiplication_application, parse_expr,
                                        standard_transformations)
SAFE = re.compile(r"[0-9a-zA-Z+\-*/^()., ]*")
NAMES = {"sqrt", "pi", "e", "sin", "cos", "tan", "log", "exp", "x", "y", "z", "n", "k", "a", "b", "c", "i"}
TRANSFORMS = standard_transformations + (implicit_multiplication_application, convert_xor)

def with_sympy(pred, ref):
    # parse_expr evaluates Python: only plain arithmetic with known names gets that far.
    for s in (pred, ref):
        if not SAFE.fullmatch(s) or not set(re.findall(r"[a-zA-Z_]+", s)) <= NAMES:
            raise ValueError(f"{s!r} is not a plain expression")
    diff = parse_expr(pred, transformations=TRANSFORMS) - parse_expr(ref, transformations=TRANSFORMS)
    return sympy.simplify(diff) == 0

def check(pred, ref):
    if parse is not None:
        wrap = lambda s: s if s.lstrip().startswith("$") else "$" + s + "$"
        gold, target = parse(wrap(ref), parsing_timeout=None), parse(wrap(pred), parsing_timeout=None)
        if gold and target:
            return bool(verify(gold, target, timeout_seconds=None))
    return bool(with_sympy(pred, ref))

print("ready", file=replies, flush=True)
for line in sys.stdin:
    try:
        out = {"equal": check(*json.loads(line))}
    except BaseException as err:
        out = {"error": f"{type(err).__name__}: {err}"[:300]}
    print(json.dumps(out), file=replies, flush=True)
'''


class SymbolicChecker:
    """Symbolic equivalence in a long-lived worker process (math-verify, else sympy), with a time limit.

    The worker starts on first use (a Python start and the sympy import, not counted in the limit);
    a check that runs over `check`'s limit kills it, and the next check starts a new one. Thread-safe.
    POSIX only (``select`` on a pipe).
    """

    def __init__(self, memory_bytes: int = WORKER_MEMORY_BYTES, startup_timeout_s: float = 60.0):
        self.memory_bytes, self.startup_timeout_s = memory_bytes, startup_timeout_s
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        atexit.register(self.close)

    def _readline(self, timeout_s: float) -> str | None:
        assert self._proc is not None and self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout_s)
        return self._proc.stdout.readline() if ready else None

    def _start(self) -> str | None:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER_SOURCE, str(self.memory_bytes)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        if (self._readline(self.startup_timeout_s) or "").strip() != "ready":
            self.close()
            return "the symbolic checker did not start"
        return None

    def check(self, predicted: str, reference: str, timeout_s: float = SYMBOLIC_TIMEOUT_S) -> tuple[bool, str | None]:
        """``(equal, None)`` or ``(False, why)`` when the check timed out, failed or the worker died."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                problem = self._start()
                if problem:
                    return False, problem
            assert self._proc is not None and self._proc.stdin is not None
            try:
                self._proc.stdin.write(json.dumps([predicted, reference]) + "\n")
                self._proc.stdin.flush()
                line = self._readline(timeout_s)
            except OSError:  # a broken pipe: the worker is gone
                line = ""
            if line is None:
                self.close()
                return False, f"symbolic check timed out after {timeout_s:g} s"
            if not line:
                self.close()
                return False, "the symbolic checker died (out of memory?)"
            try:
                out = json.loads(line)
            except ValueError:
                self.close()
                return False, f"the symbolic checker replied {line[:80]!r}"
            if "error" in out:
                return False, f"symbolic check failed ({out['error']})"
            return bool(out["equal"]), None

    def close(self) -> None:
        """Stop the worker (it restarts on the next check)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdin, proc.stdout) if proc is not None else ():
            if stream is not None:
                stream.close()


_CHECKER = SymbolicChecker()


def symbolic_equal(predicted: str, reference: str, timeout_s: float = SYMBOLIC_TIMEOUT_S) -> tuple[bool, str | None]:
    """Symbolic equivalence in the shared worker process; ``(False, why)`` when it timed out or failed."""
    return _CHECKER.check(predicted, reference, timeout_s)


# --------------------------------------------------------------------------------------- rewards


def score_answer(completion: str | None, reference: object, timeout_s: float | None = None) -> RewardScore:
    """One completion against its reference answer: overall = accuracy (1/0); components accuracy, format."""
    fmt = 0.0 if format_problem(completion) else 1.0
    if reference is None or not str(reference).strip():
        return RewardScore(0.0, {"accuracy": 0.0, "format": fmt}, "the item has no reference answer", False)
    answer, problem = extract_answer(completion)
    if answer is None:
        return RewardScore(0.0, {"accuracy": 0.0, "format": fmt}, problem, False)
    equal, why = answers_match(answer, str(reference), timeout_s)
    return RewardScore(float(equal), {"accuracy": float(equal), "format": fmt}, why, equal)


@REWARDS.register("vlm.accuracy")
def accuracy_reward(completions: list[str], items: list[dict]) -> list[RewardScore]:
    """1 when the last ``<answer>`` block equals the item's ``answer`` (see `answers_match`), else 0
    with the reason; components ``accuracy`` and ``format`` (1 for a well-formed completion)."""
    return [score_answer(c, item.get("answer")) for c, item in zip(completions, items, strict=True)]


@REWARDS.register("vlm.format")
def format_reward(completions: list[str], items: list[dict]) -> list[RewardScore]:
    """1 for a well-formed ``<think>...</think><answer>...</answer>`` completion, else 0 with the reason."""
    scores = []
    for completion in completions:
        problem = format_problem(completion)
        scores.append(RewardScore(0.0 if problem else 1.0, {"format": 0.0 if problem else 1.0}, problem))
    return scores
