"""Judge protocols against their anchors, character for character (issue 16).

AlpacaEval 2: the prompt, the decoding, the order switch and the log-prob parsing are
compared with the installed `alpaca_eval` 0.6.6 package itself: its own template file, its
configs, its `SinglePairwiseAnnotator` run end to end with a fake completion function, and
its `logprob_parser` (skipped, with the reason, when the package is not installed).

MT-Bench: the prompt texts are a committed fixture (FastChat@0e6d3e4 judge_prompts.jsonl,
see tests/fixtures/judge_protocols/SOURCE.md); the verdict parsing and the combination of
the two orders are FastChat's code, transcribed below with its file and lines.

All backends are fakes: no model is loaded.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from evaluators.llm_judge import (
    PROTOCOLS,
    LLMJudge,
    Reply,
    alpaca_eval_preference,
    alpaca_eval_switched,
    load_template,
    resolve_settings,
)
from evaluators.scoring import judgment_key
from harness.errors import InputError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "judge_protocols"
NO_AE = "alpaca_eval is not installed: the original AlpacaEval templates, configs and parser " \
        "come from it (pip install alpaca_eval==0.6.6)"

# instructions and answers with what could trip a renderer: JSON-ish braces, triple quotes,
# line breaks, trailing spaces, non-ASCII, a placeholder-looking word in an answer
INSTRUCTIONS = ["What is the capital of France?", "Write a haiku\nabout autumn.  ",
                'Return {"a": 1} as YAML', "Übersetze: 'Guten Tag' ✓", 'Say """hi"""',
                "List three primes", "Explain {x} in one line", "Why is the sky blue?",
                "2+2?", "Name a colour", "Tell a joke", "Sort [3, 1, 2]", "Define entropy",
                "Spell 'cat' backwards"]


def _answers(i: int) -> tuple[str, str]:
    base = ["Paris.", "Leaves fall\nquietly", "a: 1", "Good day", "hi", "2, 3, 5", "x is x",
            "Rayleigh scattering.", "4", "blue", "A pun.", "[1, 2, 3]", "Disorder.", "tac"][i]
    return f"base: {base}", f"model {{says}}: {base} (longer)\n"


def _alpaca():
    ae = pytest.importorskip("alpaca_eval", reason=NO_AE)
    return ae, Path(ae.__file__).parent / "evaluators_configs"


class FakeBackend:
    """Records every call; answers each request with decide(messages) -> Reply."""

    def __init__(self, decide):
        self.decide, self.calls = decide, []

    def complete(self, requests, max_new_tokens, labels, logprobs, **kwargs):
        self.calls.append({"requests": requests, "max_new_tokens": max_new_tokens,
                           "logprobs": logprobs, **kwargs})
        return [self.decide(r) for r in requests]


def _api_judge(**params) -> LLMJudge:
    """A judge on the openai backend: nothing is loaded or contacted until a call, and the
    tests replace the backend by a fake before that."""
    return LLMJudge(None, backend="openai", model="judge-model", **params)


# ---------------------------------------------------------------------------- AlpacaEval 2

def _ae_top_logprobs(user: str, instruction_index: int) -> list[tuple[str, float]]:
    """A fake judge model's top-5 of its first token, from what it is shown: the table row
    of the instruction, and whether the base answer is shown first (so a wrong switch or a
    wrong label mapping changes the result)."""
    base_first = user.index('"""base: ') < user.index('"""model ')
    lp = math.log
    rows = [
        {"m": lp(0.6), "M": lp(0.3), "x": lp(0.1)},          # both labels
        {"M": lp(0.9), "The": lp(0.05)},                      # only M
        {"m": lp(0.7), "Both": lp(0.2)},                      # only m
        {"x": lp(0.8), "y": lp(0.1)},                         # both labels missing: NaN
        {"m": lp(0.4), "M": lp(0.4), "x": lp(0.2)},           # equal: clf ties go to M
        {" m": lp(0.5), "M": lp(0.2), " M": lp(0.3)},         # spaced: not the exact tokens
        {"x": lp(0.5), "m": lp(0.01), "M": lp(0.02)},         # neither emitted, both listed
        {"M": lp(0.55), "m": lp(0.45)},
        {"m": lp(0.2), "M": lp(0.1), "m ": lp(0.7)},
        {"M": lp(0.999), "m": lp(0.001)},
        {"m": lp(0.5), "M": lp(0.25), "A": lp(0.25)},
        {"m": lp(0.35), "M": lp(0.65)},
        {"m": lp(0.01), "M": lp(0.98)},
        {"y": lp(0.3), "m": lp(0.3), "M": lp(0.3)},
    ]
    top = rows[instruction_index]
    if not base_first:  # the same judge, shown the answers the other way round
        top = {{"m": "M", "M": "m"}.get(k, k): v for k, v in top.items()}
    return sorted(top.items(), key=lambda kv: -kv[1])[:5]


def _index_of(user: str) -> int:
    return next(i for i, t in enumerate(INSTRUCTIONS) if f'"""{t}"""' in user)


@pytest.mark.parametrize(("protocol", "annotator"), [
    ("alpaca_eval_2", "weighted_alpaca_eval_gpt4_turbo"),
    ("alpaca_eval_2_clf", "alpaca_eval_clf_gpt4_turbo")])
def test_alpaca_eval_2_equals_the_annotator_end_to_end(protocol: str, annotator: str):
    """The same fake judge model behind AlpacaEval's own annotator and behind our protocol:
    the same prompts (as chat messages), decoding, order switch and preferences."""
    import pandas as pd
    import yaml
    from alpaca_eval import utils
    from alpaca_eval.annotators.pairwise_evaluator import SinglePairwiseAnnotator

    _, configs = _alpaca()
    config = yaml.safe_load((configs / annotator / "configs.yaml").read_text())[annotator]
    ae_seen: dict[int, list[dict]] = {}

    def ae_completions(prompts, **kwargs):
        assert kwargs == {"model_name": "gpt-4-1106-preview", "max_tokens": 1,
                          "temperature": 1, "logprobs": True, "top_logprobs": 5}
        out = []
        for prompt in prompts:
            messages = utils.prompt_to_chatml(prompt)  # what openai_completions sends
            i = _index_of(messages[-1]["content"])
            ae_seen[i] = messages
            top = _ae_top_logprobs(messages[-1]["content"], i)
            out.append({"logprobs": {"content": [{"token": top[0][0], "logprob": top[0][1],
                                                  "top_logprobs": [{"token": t, "logprob": v}
                                                                   for t, v in top]}]}})
        return {"completions": [c["logprobs"]["content"][0]["token"] for c in out],
                "completions_all": out, "price_per_example": [0.0] * len(out),
                "time_per_example": [0.0] * len(out)}

    # seed 0: PairwiseAnnotator's default, which alpaca_eval.evaluate passes on
    ae = SinglePairwiseAnnotator(seed=0, base_dir=configs, annotation_column="preference",
                                 completion_column="raw_completion",
                                 **{**config, "fn_completions": ae_completions})
    rows = [{"instruction": t, "output_1": _answers(i)[0], "output_2": _answers(i)[1]}
            for i, t in enumerate(INSTRUCTIONS)]
    annotated = ae(pd.DataFrame(rows))
    expected = {r.instruction: r.preference - 1 for r in annotated.itertuples()}

    ours_seen: dict[int, list[dict]] = {}

    def decide(messages):
        i = _index_of(messages[-1]["content"])
        ours_seen[i] = messages
        top = _ae_top_logprobs(messages[-1]["content"], i)
        return Reply(top[0][0], top_logprobs=[top])

    judge = _api_judge(protocol=protocol)
    judge._backend = fake = FakeBackend(decide)
    results = judge.judge_pairs([(t, *_answers(i)) for i, t in enumerate(INSTRUCTIONS)])

    assert ours_seen == ae_seen and len(ae_seen) == len(INSTRUCTIONS)  # the very same prompts
    assert fake.calls[0]["max_new_tokens"] == 1 and fake.calls[0]["top_logprobs"] == 5
    assert fake.calls[0]["temperature"] == 1
    switched = [info["swapped"] for _, info in results]
    assert any(switched) and not all(switched)  # both orders occur: the switch is exercised
    for t, (p, info) in zip(INSTRUCTIONS, results):
        assert info["calls"] == 1 and info["protocol"] == protocol
        if t not in expected:  # AlpacaEval: no annotation (NaN, filtered out)
            assert p is None and "neither 'm' nor 'M'" in info["error"]
        else:
            assert p == pytest.approx(expected[t], abs=1e-12), t
    assert INSTRUCTIONS[3] not in expected  # the both-missing row really is NaN there


def test_alpaca_eval_template_text_is_the_original_file():
    """Our template, rendered, equals AlpacaEval's `alpaca_eval_clf.txt` as make_prompts
    fills it and prompt_to_chatml turns it into the messages it sends."""
    import pandas as pd
    from alpaca_eval import utils

    _, configs = _alpaca()
    original = (configs / "alpaca_eval_clf_gpt4_turbo" / "alpaca_eval_clf.txt").read_text()
    ours = load_template("alpaca_eval")
    for i, instruction in enumerate(INSTRUCTIONS):
        out_1, out_2 = _answers(i)
        df = pd.DataFrame([{"instruction": instruction, "output_1": out_1, "output_2": out_2}])
        (prompt,), _ = utils.make_prompts(df, original)
        assert ours.render(instruction, out_1, out_2) == utils.prompt_to_chatml(prompt)
    assert "(LLMs) based on the quality of their responses" in ours.system
    # the one deliberate difference: an answer that itself contains a placeholder. AlpacaEval
    # fills the placeholders one after the other with str.replace(..., 1), so a literal
    # "{output_2}" inside output_1 is replaced (and the real slot stays empty); we fill in
    # one pass and show the answers as they are (as FastChat's str.format does)
    df = pd.DataFrame([{"instruction": "q", "output_1": "see {output_2}", "output_2": "B"}])
    (prompt,), _ = utils.make_prompts(df, original)
    theirs = utils.prompt_to_chatml(prompt)[-1]["content"]
    assert '"""see B"""' in theirs and '"""{output_2}"""' in theirs
    assert '"""see {output_2}"""' in ours.render("q", "see {output_2}", "B")[-1]["content"]
    for protocol in ("alpaca_eval_2", "alpaca_eval_2_clf"):
        assert _api_judge(protocol=protocol).template == ours


LOGPROB_TABLE = [
    [("m", -0.5), ("M", -1.2), ("x", -3.0)],
    [("M", -0.1), ("The", -2.5)],                       # m missing: -inf
    [("m", -0.2)],                                      # M missing
    [("x", -0.1), ("y", -2.0)],                         # both missing: NaN / None
    [("m", -0.9), ("M", -0.9)],                         # equal: clf -> 2 (the second)
    [(" m", -0.3), (" M", -1.0), ("M", -4.0)],          # spaced tokens do not count
    [("x", -0.01), ("m", -5.0), ("M", -6.0)],           # neither emitted, both listed
    [("m", -2.0), ("m", -0.1), ("M", -1.0)],            # a repeat: the last one counts
    [("M", -0.7), ("m", -0.7), ("mm", -0.1)],
    [("M", -30.0), ("m", -0.0001)],
    [],                                                 # an empty list
]


@pytest.mark.parametrize("binarize", [False, True])
def test_logprob_reading_agrees_with_logprob_parser(binarize: bool):
    _alpaca()
    from alpaca_eval.completion_parsers import logprob_parser

    for top in LOGPROB_TABLE:
        completion = {"logprobs": {"content": [
            {"token": "x", "logprob": -1.0,
             "top_logprobs": [{"token": t, "logprob": v} for t, v in top]}]}}
        (want,) = logprob_parser(completion, numerator_token="m", denominator_tokens=["m", "M"],
                                 is_binarize=binarize)
        got = alpaca_eval_preference(top, "m", "M", binarize)
        if math.isnan(want):
            assert got is None, top
        else:
            assert got == pytest.approx(want, abs=1e-12), top


def test_alpaca_eval_order_is_drawn_per_instruction_like_the_processor():
    """The switch is AlpacaEval's RandomSwitchTwoColumnsProcessor decision: seeded on the
    instruction and the seed only, so every model gets the same order for an instruction."""
    _alpaca()
    import pandas as pd
    from alpaca_eval.processors import RandomSwitchTwoColumnsProcessor

    prompts = [f"instruction {i}" for i in range(200)] + INSTRUCTIONS
    for seed in (0, 7):
        proc = RandomSwitchTwoColumnsProcessor(two_columns_to_switch=["output_1", "output_2"],
                                               random_seed_columns=["instruction"],
                                               _switch_column="is_switched_outputs", seed=seed)
        df = pd.DataFrame([{"instruction": p, "output_1": "b", "output_2": "c"} for p in prompts])
        want = proc.preprocess(df)["is_switched_outputs"].tolist()
        assert [alpaca_eval_switched(p, seed) for p in prompts] == want
        judge = _api_judge(protocol="alpaca_eval_2", seed=seed) if seed else \
            _api_judge(protocol="alpaca_eval_2")
        for p, w in zip(prompts, want):
            assert judge.swapped(p, "base", "one model") == judge.swapped(p, "x", "another") == w


# ---------------------------------------------------------------------------- MT-Bench

def _fastchat_prompts() -> dict[str, dict]:
    lines = (FIXTURES / "fastchat_judge_prompts.jsonl").read_text().splitlines()
    return {d["name"]: d for d in map(json.loads, lines)}


def fastchat_winner(judgment: str) -> str:
    """FastChat@0e6d3e4 fastchat/llm_judge/common.py run_judge_pair, output_format "[[A]]"
    (lines 282-290), verbatim but for the function around it."""
    if "[[A]]" in judgment:
        winner = "A"
    elif "[[B]]" in judgment:
        winner = "B"
    elif "[[C]]" in judgment:
        winner = "tie"
    else:
        winner = "error"
    return winner


def fastchat_result(g1_judgment: str, g2_judgment: str) -> float | None:
    """P(model_1 wins) of one question under FastChat: play_a_match_pair (common.py 326-336;
    game 1 A = model_1, game 2 A = model_2) then show_result.py display_result_pairwise
    (lines 49 and 64-75: an "error" game drops the row; a tie if g1 is a tie or the games
    disagree). In pairwise-baseline mode model_1 is the candidate (gen_judgment.py)."""
    g1_map = {"A": "model_1", "B": "model_2"}
    g2_map = {"A": "model_2", "B": "model_1"}
    g1_winner = g1_map.get(fastchat_winner(g1_judgment), fastchat_winner(g1_judgment))
    g2_winner = g2_map.get(fastchat_winner(g2_judgment), fastchat_winner(g2_judgment))
    if g1_winner == "error" or g2_winner == "error":
        return None
    if g1_winner == "tie" or g1_winner != g2_winner:
        return 0.5
    return 1.0 if g1_winner == "model_1" else 0.0


QUOTED = ('Assistant B is more accurate. Following the format, where "[[A]]" means assistant '
          'A is better, my verdict is: [[B]]')
JUDGMENTS = ["[[A]]", "[[B]]", "[[C]]", "Both fine. [[C]]", "B is clearer.\n\n[[B]]",
             QUOTED,                                    # quoted verdict: FastChat reads A
             "I prefer the second answer.",             # no verdict
             "", "$ERROR$", "[[D]]", "[A]", "[[a]]", "[[ B ]]", "[[B]] ... on reflection [[A]]",
             "[[C]] but [[B]]"]


def test_mt_bench_verdict_parsing_agrees_with_fastchat():
    ours = load_template("mt_bench")
    labels = {"first": "A", "second": "B", "tie": "tie", None: "error"}
    for judgment in JUDGMENTS:
        assert labels[ours.parse(judgment)[0]] == fastchat_winner(judgment), judgment
    assert fastchat_winner(QUOTED) == "A"  # the quirk really is FastChat's


def test_mt_bench_pair_combines_both_orders_as_fastchat():
    """Every (game 1, game 2) pair of judgments of the table through the judge, against
    FastChat's result: agreement wins, a contradictory pair or a tie is 0.5, an error
    fails the judgment (FastChat drops it)."""
    pairs = [(g1, g2) for g1 in JUDGMENTS for g2 in JUDGMENTS]

    def decide(messages):
        user = messages[-1]["content"]
        k = int(user.split("cand#")[1].split("\n")[0])
        candidate_is_a = user.index("cand#") < user.index("base#")
        return Reply(pairs[k][0] if candidate_is_a else pairs[k][1])

    judge = _api_judge(protocol="mt_bench_pair")
    judge._backend = fake = FakeBackend(decide)
    results = judge.judge_pairs([("question", f"base#{k}", f"cand#{k}") for k in range(len(pairs))])
    assert fake.calls[0]["max_new_tokens"] == 2048 and fake.calls[0]["logprobs"] is False
    assert "temperature" not in fake.calls[0]  # the backend's default: temperature 0
    outcomes = set()
    for (g1, g2), (p, info) in zip(pairs, results):
        want = fastchat_result(g1, g2)
        assert p == want, (g1, g2, info)
        assert info["calls"] == 2 and info["soft"] == [False, False]
        outcomes.add(want)
    assert outcomes == {None, 0.0, 0.5, 1.0}
    # the named edge cases: both orders say "A" (contradictory), a tie and a win
    by_pair = dict(zip(pairs, (p for p, _ in results)))
    assert by_pair[("[[A]]", "[[A]]")] == 0.5 and by_pair[("[[C]]", "[[B]]")] == 0.5
    assert by_pair[("[[A]]", "[[B]]")] == 1.0 and by_pair[(QUOTED, "[[B]]")] == 1.0
    assert by_pair[("I prefer the second answer.", "[[B]]")] is None


def test_mt_bench_templates_are_the_fastchat_texts():
    prompts = _fastchat_prompts()
    pair, multi = prompts["pair-v2"], prompts["pair-v2-multi-turn"]
    assert "Avoid any position biases" in pair["system_prompt"]  # the current pair-v2
    ours = load_template("mt_bench")
    for i, question in enumerate(INSTRUCTIONS):
        a, b = _answers(i)
        want = [{"role": "system", "content": pair["system_prompt"]},
                {"role": "user", "content": pair["prompt_template"].format(
                    question=question, answer_a=a, answer_b=b)}]
        assert ours.render(question, a, b) == want
    assert _api_judge(protocol="mt_bench_pair").template.system == pair["system_prompt"]

    turns = _TwoTurnTask()
    judge = LLMJudge(turns, backend="openai", model="judge-model",
                     protocol="mt_bench_pair_multi_turn")
    judge._backend = fake = FakeBackend(lambda m: Reply("[[B]]"))
    prompt = turns.prompt("Plan a trip", "Now make it cheaper {question_2}")
    base = turns.answer("Go to Rome.", "Take the train.")
    cand = turns.answer("Visit Lisbon {answer_b_1}.", "Stay in hostels.\n")
    ((p, info),) = judge.judge_pairs([(prompt, base, cand)])
    assert p == 0.5 and info["calls"] == 2  # [[B]] both ways: contradictory -> tie
    first = fake.calls[0]["requests"][0]  # candidate shown second (assistant B)
    assert first == [{"role": "system", "content": multi["system_prompt"]},
                     {"role": "user", "content": multi["prompt_template"].format(
                         question_1="Plan a trip", question_2="Now make it cheaper {question_2}",
                         answer_a_1="Go to Rome.", answer_a_2="Take the train.",
                         answer_b_1="Visit Lisbon {answer_b_1}.",
                         answer_b_2="Stay in hostels.\n")}]
    assert fake.calls[0]["max_new_tokens"] == 2048


# an eval conversation: the history (a first question and its answer), then the question
# both models answer; placeholder-looking text must pass through unchanged
CONVERSATION = [{"role": "user", "content": "Plan a trip {answer_a_2}"},
                {"role": "assistant", "content": "Go to Rome.\n"},
                {"role": "user", "content": "Now make it cheaper"}]


def test_a_conversation_is_judged_with_its_history_as_fastchat_pair_v2_multi_turn():
    """MT-Bench's two-turn prompt from an eval conversation: both questions, the shared
    first answer (the history) as each assistant's answer_1, the two models' answers as
    answer_2; the system turn of the conversation is the model's and not shown."""
    multi = _fastchat_prompts()["pair-v2-multi-turn"]
    judge = LLMJudge(None, backend="openai", model="judge-model",
                     protocol="mt_bench_pair_multi_turn")
    judge._backend = fake = FakeBackend(lambda m: Reply("[[A]]"))
    prompt = [{"role": "system", "content": "Be brief."}, *CONVERSATION]
    ((p, info),) = judge.judge_pairs([(prompt, "Take the train.", "Stay in hostels {question_1}.")])
    assert info["calls"] == 2 and p == 0.5  # [[A]] both ways: contradictory -> tie
    requests = fake.calls[0]["requests"]
    want = [[{"role": "system", "content": multi["system_prompt"]},
             {"role": "user", "content": multi["prompt_template"].format(
                 question_1="Plan a trip {answer_a_2}", question_2="Now make it cheaper",
                 answer_a_1="Go to Rome.\n", answer_a_2=a, answer_b_1="Go to Rome.\n",
                 answer_b_2=b)}]
            for a, b in (("Take the train.", "Stay in hostels {question_1}."),
                         ("Stay in hostels {question_1}.", "Take the train."))]
    assert requests == want


@pytest.mark.parametrize("protocol", ["alpaca_eval_2", "mt_bench_pair"])
def test_a_single_turn_judge_reads_a_conversations_one_user_turn(protocol):
    """A system message and one user turn: the judge's instruction is the user turn, the
    same request (and the same order coin for alpaca_eval_2's text) as that text alone."""
    judged = {}
    for prompt in ("Name a colour", [{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": "Name a colour"}]):
        judge = _api_judge(protocol=protocol)
        judge._backend = fake = FakeBackend(lambda m: Reply("[[A]]" if "mt" in protocol
                                                            else "m"))
        judge.judge_pairs([(prompt, "blue", "red, a warm colour")])
        judged[isinstance(prompt, str)] = fake.calls[0]["requests"]
    assert judged[True] == judged[False]


class _TwoTurnTask:
    """A task with two-turn prompts: the prompt holds both questions, an answer both turns."""

    name = "two_turn"
    SEP = "\n<turn>\n"

    def prompt(self, q1: str, q2: str) -> str:
        return q1 + self.SEP + q2

    def answer(self, a1: str, a2: str) -> str:
        return a1 + self.SEP + a2

    def conversation_turns(self, prompt: str, answer: str) -> tuple[list[str], list[str]]:
        return prompt.split(self.SEP), answer.split(self.SEP)


def test_multi_turn_needs_turns_from_the_prompt_or_the_task():
    judge = _api_judge(protocol="mt_bench_pair_multi_turn")
    problem = judge.prompt_problem("Plan a trip")
    assert "one turn of text" in problem and "mt_bench_pair" in problem and "\n" not in problem
    ((p, info),) = judge.judge_pairs([("Plan a trip", "a", "b")])  # no call is made
    assert p is None and info["calls"] == 0 and "one turn of text" in info["error"]

    class Sentiment:
        name = "sentiment"
    judge = LLMJudge(Sentiment(), backend="openai", model="m", protocol="mt_bench_pair_multi_turn")
    assert "task 'sentiment' has no conversation_turns" in judge.prompt_problem("Plan a trip")
    assert judge.prompt_problem(CONVERSATION) is None  # a conversation brings its own turns
    three = [*CONVERSATION, {"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]
    assert "3 user turns" in judge.prompt_problem(three)
    single = _api_judge(protocol="mt_bench_pair")
    assert single.prompt_problem(CONVERSATION).startswith("is a conversation of 2 user turns")
    assert single.prompt_problem(CONVERSATION[:1]) is None
    # a conversation with three turns fails that judgment only (FastChat skips it)
    task = _TwoTurnTask()
    judge = LLMJudge(task, backend="openai", model="judge-model",
                     protocol="mt_bench_pair_multi_turn")
    judge._backend = FakeBackend(lambda m: Reply("[[A]]"))
    bad = task.answer("one", task.answer("two", "three"))
    (p_bad, info_bad), (p_ok, _) = judge.judge_pairs([
        (task.prompt("q1", "q2"), task.answer("a", "b"), bad),
        (task.prompt("q1", "q2"), task.answer("a", "b"), task.answer("c", "d"))])
    assert p_bad is None and "2 questions and 2 answers" in info_bad["error"]
    assert p_ok == 0.5


# ---------------------------------------------------------------------------- options

def test_protocols_fix_their_settings():
    ae2, clf = resolve_settings("alpaca_eval_2"), resolve_settings("alpaca_eval_2_clf")
    mt = resolve_settings("mt_bench_pair")
    assert (ae2.position, ae2.soft, ae2.combine, ae2.reader, ae2.seed) == \
        ("instruction", True, "single", "logprob_weighted", 0)
    assert (clf.soft, clf.reader, clf.top_logprobs) == (False, "logprob_clf", 5)
    assert (mt.template, mt.position, mt.soft, mt.combine, mt.max_new_tokens,
            mt.temperature) == ("mt_bench", "both", False, "agreement", 2048, 0.0)
    assert resolve_settings("mt_bench_pair_multi_turn").template == "mt_bench_multi_turn"
    ours = resolve_settings()  # no protocol: our defaults, unchanged
    assert (ours.template, ours.position, ours.soft, ours.combine, ours.reader) == \
        ("alpaca_eval", "both", True, "mean", "labels")
    assert set(PROTOCOLS) == {"alpaca_eval_2", "alpaca_eval_2_clf", "mt_bench_pair",
                              "mt_bench_pair_multi_turn"}


@pytest.mark.parametrize(("protocol", "option"), [
    ("alpaca_eval_2", {"position": "both"}), ("alpaca_eval_2", {"soft": False}),
    ("alpaca_eval_2", {"template": "mt_bench"}), ("alpaca_eval_2_clf", {"soft": True}),
    ("alpaca_eval_2", {"max_new_tokens": 16}), ("mt_bench_pair", {"soft": True}),
    ("mt_bench_pair", {"combine": "mean"}), ("mt_bench_pair", {"max_new_tokens": 512}),
    ("mt_bench_pair", {"position": "random"}), ("mt_bench_pair", {"seed": 3})])
def test_a_conflicting_option_is_a_one_line_input_error(protocol: str, option: dict):
    with pytest.raises(InputError, match=f"protocol '{protocol}'") as err:
        _api_judge(protocol=protocol, **option)
    assert "\n" not in str(err.value) and next(iter(option)) in str(err.value)


def test_options_that_agree_with_the_protocol_are_fine_and_ours_stay_available():
    assert _api_judge(protocol="alpaca_eval_2", soft=True, position="instruction",
                      template="alpaca_eval", seed=0).fingerprint == \
        _api_judge(protocol="alpaca_eval_2").fingerprint
    assert _api_judge(protocol="mt_bench_pair", combine="agreement", max_new_tokens=2048,
                      soft=False).settings == resolve_settings("mt_bench_pair")
    # ours, explicitly: averaging both orders, soft, the 512 budget, or agreement
    j = _api_judge(template="mt_bench", position="both", soft=True)
    assert j.settings.combine == "mean" and j.template.verdict.max_new_tokens == 512
    judge = _api_judge(template="mt_bench", soft=False, combine="agreement",
                       max_new_tokens=2048)
    judge._backend = FakeBackend(lambda m: Reply("[[C]]" if "cand" in m[-1]["content"][-60:]
                                                 else "[[A]]"))
    ((p, info),) = judge.judge_pairs([("q", "base", "cand")])
    assert p == 0.5 and info["flipped"] is True  # a tie and a win: 0.5, where mean gives 0.75
    mean = _api_judge(template="mt_bench", soft=False)
    mean._backend = judge._backend
    assert mean.judge_pairs([("q", "base", "cand")])[0][0] == 0.75
    with pytest.raises(InputError, match="needs both orders"):
        _api_judge(position="random", combine="agreement")


def test_spec_load_rejects_an_unknown_protocol(tmp_path: Path):
    from harness.spec import load_spec

    path = tmp_path / "exp.yaml"
    path.write_text("name: x\ntask: bandit\nmethods:\n  - name: spo\njudges:\n  - name: llm\n"
                    "    params: {protocol: alpaca_eval_3}\n")
    with pytest.raises(InputError, match="alpaca_eval_2") as err:
        load_spec(path)
    assert "judges.0.params.protocol" in str(err.value)
    path.write_text(path.read_text().replace("alpaca_eval_3", "mt_bench_pair"))
    assert load_spec(path).judges[0].params == {"protocol": "mt_bench_pair"}
    # a protocol with an option that contradicts it fails when the spec loads
    path.write_text(path.read_text().replace("{protocol: mt_bench_pair}",
                                             "{protocol: alpaca_eval_2, position: both}"))
    with pytest.raises(InputError, match="fixes position") as err:
        load_spec(path)
    assert "judges.0.params" in str(err.value) and "exp.yaml" in str(err.value)


def test_the_fingerprint_names_the_protocol_and_old_judgments_are_not_reused():
    """A protocol judge never shares cache keys with our judge of the same template, nor
    with a judge of the old template texts; a judge without a protocol keeps its keys."""
    import dataclasses

    ae2 = _api_judge(protocol="alpaca_eval_2")
    assert ae2.fingerprint["protocol"] == "alpaca_eval_2"
    ours = _api_judge(template="alpaca_eval", position="instruction")
    assert "protocol" not in ours.fingerprint and "combine" not in ours.fingerprint
    old = _api_judge(template="alpaca_eval")
    old.fingerprint = {**old.fingerprint, "template": dataclasses.replace(
        old.template, system=old.template.system.replace("(LLMs)", "(LLM)").replace(
            "their responses", "its responses")).as_dict()}
    keys = {judgment_key(j.fingerprint, "p", "b", "c")
            for j in (ae2, ours, old, _api_judge(template="alpaca_eval"),
                      _api_judge(protocol="alpaca_eval_2_clf"),
                      _api_judge(protocol="mt_bench_pair"), _api_judge(template="mt_bench"))}
    assert len(keys) == 7


def test_the_judge_quality_report_names_the_protocol():
    from evaluators.judge_quality import COLUMNS, _markdown

    stats = dict.fromkeys(COLUMNS)
    judge = {"name": "llm", "params": {"protocol": "mt_bench_pair", "model": "j"},
             "protocol": "mt_bench_pair", "fingerprint": "abc123", "overall": stats,
             "by_model": {"m1": stats}}
    md = _markdown({"experiment": "x", "baseline": "sft", "judges": [judge]})
    assert "## llm (abc123, protocol mt_bench_pair) by model" in md
    assert '| llm {"model": "j", "protocol": "mt_bench_pair"} |' in md
    ours = {**judge, "params": {}, "protocol": None}
    assert "## llm (abc123) by model" in _markdown({"experiment": "x", "baseline": "sft",
                                                     "judges": [ours]})


def test_hf_backend_reads_the_exact_top5_tokens(tmp_path: Path):
    """On the local backend the protocol reads the top-5 of the first step's raw
    distribution (an API's temperature-1 log-probs): checked against a forward pass."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.tasks.tiny_models import save_model, tiny_llama, word_tokenizer

    tok = word_tokenizer("m M A B x y z the a is good bad".split())
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }} {{ m['content'] }} "
                         "{% endfor %}{% if add_generation_prompt %}assistant {% endif %}")
    model = tiny_llama(tok, hidden_size=16, num_layers=1, num_heads=2, max_positions=1024,
                       seed=3)
    with torch.no_grad():  # put m and M among this random model's likeliest first tokens
        w, ids = model.lm_head.weight, tok.convert_tokens_to_ids
        gen = torch.Generator().manual_seed(0)
        w[ids("m")] = w[ids("x")] + 0.3 * torch.randn(w.shape[1], generator=gen)
        w[ids("M")] = w[ids("B")] + 0.3 * torch.randn(w.shape[1], generator=gen)
    save_model(model, tok, tmp_path / "judge")
    judge = LLMJudge(None, model=str(tmp_path / "judge"), protocol="alpaca_eval_2")
    prompts = [("the a is", "good", "bad"), ("is good", "the bad a", "x y z")]
    results = judge.judge_pairs(prompts)
    assert all(p is not None for p, _ in results)  # the labels are among the top 5
    ref_tok = AutoTokenizer.from_pretrained(tmp_path / "judge")
    ref = AutoModelForCausalLM.from_pretrained(tmp_path / "judge", dtype=torch.float32).eval()
    for (prompt, b, c), (p, info) in zip(prompts, results):
        second = info["orders"] == ["baseline_first"]
        messages = judge.template.render(prompt, b, c) if second else \
            judge.template.render(prompt, c, b)
        ids = ref_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                          return_dict=False)
        with torch.no_grad():
            logp = ref(torch.tensor([ids])).logits[0, -1].log_softmax(-1)
        values, top_ids = logp.topk(5)
        top = [(ref_tok.decode([i]), v) for i, v in zip(top_ids.tolist(), values.tolist())]
        want = alpaca_eval_preference(top, "m", "M", binarize=False)
        if want is None:
            assert p is None
        else:
            p2 = want - 1
            assert p == pytest.approx(p2 if second else 1 - p2, abs=1e-5)
        assert info["calls"] == 1 and info["completion_tokens"] == 1
