"""vlm rewards: answer extraction, format checks, numeric/symbolic equivalence, the checker's time limit."""

from __future__ import annotations

import doctest
import time
from fractions import Fraction

import pytest

from shared.lm.rewards import REWARDS, score_batch
from vlm_rl import rewards
from vlm_rl.data.tasks import TASKS, demonstration, generate
from vlm_rl.rewards import (
    SymbolicChecker,
    accuracy_reward,
    answers_match,
    extract_answer,
    format_problem,
    format_reward,
    normalize_answer,
    parse_number,
)


@pytest.mark.parametrize("completion, expected", [
    ("<think>1, 2, 3.</think><answer>3</answer>", ("3", None)),
    ("<think>x</think>\n<answer>\n  3 \n</answer>\n", ("3", None)),
    ("< Answer >B</ANSWER >", ("B", None)),  # tags tolerate spaces and case
    ("<answer>2</answer> wait, recount <answer>3</answer>", ("3", None)),  # the LAST block
    ("<think>a</think><answer>1 2</answer>", ("1 2", None)),
    ("3", (None, "no <answer>...</answer> block")),
    ("<think>a</think><answer>3", (None, "<answer> is not closed (cut off at the length limit?)")),
    ("<think>a</think><answer>  </answer>", (None, "empty answer")),
    ("", (None, "empty completion")),
    ("   \n", (None, "empty completion")),
    (None, (None, "empty completion")),
])
def test_extract_answer(completion, expected):
    assert extract_answer(completion) == expected


@pytest.mark.parametrize("completion, problem", [
    ("<think>I count 1, 2.</think><answer>2</answer>", None),
    ("  <think>\nx\n</think>\n\n<answer> 2 </answer>\n", None),
    ("<think></think><answer>2</answer>", None),  # an empty think block is allowed
    ("<answer>2</answer>", "no <think>...</think> block"),
    ("<think>a</think>", "no <answer>...</answer> block"),
    ("<think>a</think><answer>2", "<answer> is not closed (cut off at the length limit?)"),
    ("<think>a</think><think>b</think><answer>2</answer>", "more than one <think> block"),
    ("<think>a</think><answer>1</answer><answer>2</answer>", "more than one <answer> block"),
    ("<answer>2</answer><think>a</think>", "<answer> comes before <think>"),
    ("Sure! <think>a</think><answer>2</answer>", "text before <think>"),
    ("<think>a</think> so: <answer>2</answer>", "text between </think> and <answer>"),
    ("<think>a</think><answer>2</answer> done", "text after </answer>"),
    ("<think>a</think><answer> </answer>", "empty answer"),
    ("", "empty completion"),
    (None, "empty completion"),
])
def test_format_problem(completion, problem):
    assert format_problem(completion) == problem
    [score] = format_reward([completion], [{}])
    assert (score.overall, score.components["format"], score.reason) == ((0.0, 0.0, problem) if problem else
                                                                        (1.0, 1.0, None))


def test_normalize_and_parse_number():
    assert normalize_answer("  $\\boxed{ 3 }$. ") == "3"
    assert normalize_answer("\\( x + 1 \\)") == "x + 1"
    assert normalize_answer("wait...") == "wait..."  # an ellipsis is not a full stop
    assert parse_number("3") == parse_number("3.0") == parse_number("+3") == parse_number("6/2") == 3
    assert parse_number("three") == parse_number("THREE") == 3 and parse_number("twenty") == 20
    assert parse_number("1,000") == 1000 and parse_number("1,00") is None
    assert parse_number("-2.5") == Fraction(-5, 2) and parse_number(".5") == parse_number("\\frac{1}{2}")
    assert parse_number("1e3") == 1000
    assert parse_number("1/0") is None and parse_number("1e999999999") is None  # no huge or undefined numbers
    assert parse_number("1+2") is None and parse_number("3 apples") is None and parse_number("twenty-one") is None


@pytest.mark.parametrize("predicted, reference, equal", [
    ("3", "3", True), ("3.0", "3", True), (" 3 ", "3", True), ("3.", "3", True), ("three", "3", True),
    ("$3$", "3", True), ("\\boxed{3}", "3", True), ("6/2", "3", True), ("0.5", "1/2", True),
    ("1000", "1,000", True), ("-0", "0", True),
    ("4", "3", False), ("1+2", "3", False), ("3 apples", "3", False), ("3.0001", "3", False),
    ("0.333", "1/3", False), ("A", "3", False),
    ("A", "A", True), ("a", "A", True), (" B. ", "B", True), ("bar A", "A", False), ("B", "A", False),
])
def test_answers_match_without_the_symbolic_checker(predicted, reference, equal):
    assert answers_match(predicted, reference)[0] is equal


def test_wrong_answers_say_why():
    assert answers_match("4", "3") == (False, "got '4', expected '3'")
    assert answers_match("1+2", "3") == (False, "'1+2' is not a number (expected 3)")
    assert answers_match("C", "A") == (False, "got 'C', expected 'A'")


def test_symbolic_equivalence():
    assert answers_match("(x+1)^2", "x^2+2x+1") == (True, None)
    assert answers_match("\\sqrt{8}", "2\\sqrt{2}") == (True, None)
    assert answers_match("\\frac{\\pi}{2}", "\\pi/2") == (True, None)
    equal, why = answers_match("x+2", "x+1")
    assert not equal and "not equivalent" in why
    equal, why = answers_match("__import__('os').system('true')", "x+1")  # parsed, never evaluated as Python
    assert not equal and why


def test_a_hanging_check_is_cut_off_and_the_checker_recovers():
    checker = SymbolicChecker()
    try:
        assert checker.check("2", "1+1", timeout_s=10) == (True, None)  # warm: the worker has started
        start = time.perf_counter()
        # (10^10)! makes sympy multiply ten billion integers: it would run for hours
        assert checker.check("1", "(10^{10})!", timeout_s=1.0) == (False, "symbolic check timed out after 1 s")
        assert time.perf_counter() - start < 5
        assert checker.check("x^2", "x \\cdot x", timeout_s=10) == (True, None)  # a fresh worker answers
    finally:
        checker.close()


def test_the_registered_accuracy_reward_times_out_with_a_reason(monkeypatch):
    monkeypatch.setattr(rewards, "SYMBOLIC_TIMEOUT_S", 1.0)
    [score] = REWARDS.get("vlm.accuracy")(["<think>big</think><answer>1</answer>"], [{"answer": "(10^{10})!"}])
    assert (score.overall, score.correct) == (0.0, False) and "timed out" in score.reason


def test_accuracy_reward_components_and_reasons():
    completions = [
        "<think>1, 2, 3.</think><answer>3</answer>",  # right and well formed
        "<answer>3</answer>",  # right, no think block: accuracy 1, format 0
        "<think>1, 2.</think><answer>2</answer>",  # wrong
        "the answer is 3",  # no answer block
        "",
    ]
    scores = accuracy_reward(completions, [{"answer": "3"}] * 5)
    assert [s.overall for s in scores] == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert [s.components for s in scores] == [
        {"accuracy": 1.0, "format": 1.0}, {"accuracy": 1.0, "format": 0.0}, {"accuracy": 0.0, "format": 1.0},
        {"accuracy": 0.0, "format": 0.0}, {"accuracy": 0.0, "format": 0.0}]
    assert [s.correct for s in scores] == [True, True, False, False, False]
    assert [s.reason for s in scores] == [None, None, "got '2', expected '3'", "no <answer>...</answer> block",
                                          "empty completion"]


def test_rewards_never_raise():
    odd = [None, "", "<answer>" * 500, "<answer>\x00</answer>", "<think>" + "x" * 100_000 + "</think>",
           "<answer>1e999999999</answer>", "<answer>" + "9" * 5000 + "</answer>", "<answer>😀</answer>"]
    for fn in (accuracy_reward, format_reward):
        scores = fn(odd, [{"answer": "3"}] * len(odd))
        assert len(scores) == len(odd) and all(s.overall == 0.0 and s.reason for s in scores)
    [no_reference] = accuracy_reward(["<think>a</think><answer>3</answer>"], [{"question": "?"}])
    assert no_reference.overall == 0.0 and no_reference.reason == "the item has no reference answer"


def test_registered_and_usable_by_score_batch():
    assert REWARDS.get("vlm.accuracy") is accuracy_reward and REWARDS.get("vlm.format") is format_reward
    batch = score_batch(["vlm.accuracy"], [1.0], ["<think>a</think><answer>A</answer>", "<answer>B</answer>"],
                        [{"answer": "A"}, {"answer": "A"}])
    assert batch.overall == [1.0, 0.0] and batch.correct == [True, False] and batch.failures == 0
    assert batch.components["vlm.accuracy/format"] == [1.0, 0.0]


@pytest.mark.parametrize("task", list(TASKS))
def test_every_demonstration_scores_full_marks(task):
    rows = [row for split in ("train", "test_ood") for row, _ in generate(task, split, 15, seed=0)]
    demos = [demonstration(row) for row in rows]
    assert all(s.overall == 1.0 and s.correct for s in accuracy_reward(demos, rows))
    assert all(s.overall == 1.0 for s in format_reward(demos, rows))


def test_module_doctests():
    assert doctest.testmod(rewards).failed == 0
