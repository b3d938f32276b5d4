"""Self-supervised PO (trainers/losses/ssl.py, trainers/self_supervised.py, trainers/rake.py,
harness/ssl.py): RAKE against hand-derived scores, the graded variants, the degree loss
against values computed independently here, the wrapper at weight 0, the stored variants,
and one tiny dpo+ssl run through the CLI.

Tolerance: the loss cases are float64 expressions of a few logs and exps, so rounding is a
few ulp; 1e-6 is far above that and far below any formula slip (a dropped term, a wrong
target class, an unmasked duplicate move values by O(0.1)). Model log-probs are float32
sums of a few tokens: 1e-5 there.
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from trainers import rake
from trainers.losses import get_loss
from trainers.losses.ssl import SelfSupervisedLoss, degree_accuracy, degree_losses
from trainers.self_supervised import build_variants, graded_variants

TOL = 1e-6

# ------------------------------------------------------------------ RAKE

FOX = "The quick brown fox jumps over the lazy dog; the lazy dog sleeps."


def test_rake_scores_a_fixed_sentence_as_derived_by_hand() -> None:
    """Stop words (SMART): the, over. Candidates, split at stop words and at ';':
    [quick brown fox jumps] [lazy dog] [lazy dog sleeps].
    freq: quick brown fox jumps 1, lazy 2, dog 2, sleeps 1;
    deg (sum of the lengths of the candidates holding the word): quick..jumps 4, lazy 2+3,
    dog 2+3, sleeps 3. Word scores deg/freq: quick..jumps 4, lazy 2.5, dog 2.5, sleeps 3.
    Phrases: quick brown fox jumps 16, lazy dog sleeps 8, lazy dog 5."""
    got = [(p.text, p.score, p.spans) for p in rake.extract(FOX)]
    assert got == [("quick brown fox jumps", 16.0, ((4, 25),)),
                   ("lazy dog sleeps", 8.0, ((49, 64),)),
                   ("lazy dog", 5.0, ((35, 43),))]
    # 7 distinct content words: the key content is the top ceil(7/3) = 3 phrases
    assert [p.text for p in rake.key_phrases(FOX)] == [t for t, _, _ in got]
    assert [p.text for p in rake.key_phrases(FOX, share=0.2)] == ["quick brown fox jumps",
                                                                  "lazy dog sleeps"]


def test_rake_on_the_papers_worked_example() -> None:
    """Rose et al. (2010)'s abstract. By hand: minimal occurs in 'minimal set', 'minimal
    generating sets', 'minimal supporting set' (deg 2+3+3 = 8, freq 3); generating and sets
    only in the 3-word phrase (3/1 each): 8/3 + 3 + 3 = 8.667. linear: 'linear constraints',
    'linear diophantine equations' (deg 5, freq 2 = 2.5); 2.5 + 3 + 3 = 8.5."""
    text = ("Compatibility of systems of linear constraints over the set of natural numbers. "
            "Criteria of compatibility of a system of linear Diophantine equations, strict "
            "inequations, and nonstrict inequations are considered. Upper bounds for "
            "components of a minimal set of solutions and algorithms of construction of "
            "minimal generating sets of solutions for all types of systems are given. These "
            "criteria and the corresponding algorithms for constructing a minimal supporting "
            "set of solutions can be used in solving all the considered types of systems and "
            "systems of mixed types.")
    top = [(p.text, round(p.score, 3)) for p in rake.extract(text)[:6]]
    assert top == [("minimal generating sets", 8.667), ("linear diophantine equations", 8.5),
                   ("minimal supporting set", 7.667), ("minimal set", 4.667),
                   ("linear constraints", 4.5), ("natural numbers", 4.0)]


def test_rake_phrases_break_at_punctuation_and_line_breaks_not_spaces() -> None:
    assert [w for w, _, _ in rake.candidates("red  apple,green\tpear\nripe plum")] == [
        ("red", "apple"), ("green", "pear"), ("ripe", "plum")]
    assert rake.candidates("it is what it is") == []  # stop words only: no key content
    assert [w for w, _, _ in rake.candidates("Don\u2019t stop state-of-the-art work")] == [
        ("stop", "state-of-the-art", "work")]


def test_remove_merges_the_gaps_either_side_of_a_cut() -> None:
    phrases = rake.key_phrases(FOX)
    assert [rake.remove(FOX, phrases[:n]) for n in range(4)] == [
        FOX,
        "The over the lazy dog; the lazy dog sleeps.",
        "The over the lazy dog; the.",
        "The over the; the."]
    line = " Good morrow, sweet Hal. What says Monsieur Remorse?"
    kp = rake.extract(line)
    assert rake.remove(line, kp[:1]) == " sweet Hal. What says Monsieur Remorse?"  # lead kept
    assert rake.remove(line, kp[1:2]) == " Good morrow,. What says Monsieur Remorse?"
    assert rake.remove(line, kp[2:]) == " Good morrow, sweet Hal. What says?"
    assert rake.remove("a3", rake.extract("a3")) == ""


# ------------------------------------------------------------------ variants


def test_graded_variants_remove_growing_shares_of_the_key_content() -> None:
    texts, removed = graded_variants(FOX, [0, 1 / 3, 2 / 3, 1], 1 / 3)
    assert removed == [0, 1, 2, 3]
    assert texts == [FOX, "The over the lazy dog; the lazy dog sleeps.",
                     "The over the lazy dog; the.", "The over the; the."]
    # one key phrase: round(1/3) = 0 and round(2/3) = 1 remove the same amount as neighbours
    texts, removed = graded_variants(" sweet Hal", [0, 1 / 3, 2 / 3, 1], 1 / 3)
    assert removed == [0, 0, 1, 1] and texts == [" sweet Hal", " sweet Hal", "", ""]


def test_variants_are_deterministic_and_masked_where_a_degree_repeats() -> None:
    pairs = [{"prompt": "q", "chosen": FOX, "rejected": "it is what it is"},
             {"prompt": "r", "chosen": " sweet Hal", "rejected": "lazy dog sleeps"}]
    a = build_variants(pairs, [0, 1 / 3, 2 / 3, 1], 1 / 3)
    b = build_variants(json.loads(json.dumps(pairs)), [0, 1 / 3, 2 / 3, 1], 1 / 3)
    assert a.as_json() == b.as_json()
    assert a.mask.tolist() == [[[True] * 4, [True, False, False, False]],
                               [[True, False, True, False], [True, False, True, False]]]
    # forwarded: in the mask and not the response itself (its log-prob comes with the pair)
    assert a.forwarded.tolist() == [[[False, True, True, True], [False] * 4],
                                    [[False, False, True, False], [False, False, True, False]]]
    chosen_only = build_variants(pairs, [0, 1], 1 / 3, responses="chosen")
    assert chosen_only.mask.shape == (2, 1, 2)


# ------------------------------------------------------------------ the degree loss


def _expected(policy, ref, mask, beta, target):
    """The degree loss per pair, written out with Python floats: for each response, the
    logits z_k = beta (policy_k - ref_k) of its kept variants in degree order; 'first' is
    log sum_k e^{z_k} - z_0, 'ordinal' sums that over every suffix z_k.. of the kept list."""
    out = []
    for pol_b, ref_b, mask_b in zip(policy.tolist(), ref.tolist(), mask.tolist()):
        per_response = []
        for p, q, m in zip(pol_b, ref_b, mask_b):
            z = [beta * (pk - qk) for pk, qk, mk in zip(p, q, m) if mk]
            starts = [0] if target == "first" else range(len(z))
            per_response.append(sum(math.log(sum(math.exp(v) for v in z[k:])) - z[k]
                                    for k in starts))
        out.append(sum(per_response) / len(per_response))
    return torch.tensor(out, dtype=torch.float64)


def _case():
    """Two pairs, two responses, four degrees, some degrees repeating (masked)."""
    policy = torch.tensor([[[-3.0, -2.5, -4.0, -1.0], [-6.0, -7.5, -2.0, -9.0]],
                           [[-1.5, -1.5, -3.5, -0.5], [-2.0, -2.0, -2.0, -2.0]]],
                          dtype=torch.float64)
    ref = torch.tensor([[[-3.5, -2.0, -3.0, -1.5], [-5.0, -7.0, -2.5, -8.0]],
                        [[-2.0, -1.0, -3.0, -1.0], [-2.5, -1.0, -4.0, -2.0]]],
                       dtype=torch.float64)
    mask = torch.tensor([[[True, True, True, True], [True, False, True, True]],
                         [[True, True, False, True], [True, False, False, False]]])
    return policy, ref, mask


@pytest.mark.parametrize("target", ["ordinal", "first"])
@pytest.mark.parametrize("beta", [0.1, 1.0, 2.5])
def test_degree_loss_matches_the_written_out_cross_entropy(target: str, beta: float) -> None:
    policy, ref, mask = _case()
    got = degree_losses(policy, ref, mask, beta, target)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, _expected(policy, ref, mask, beta, target),
                               rtol=0, atol=TOL)


def test_degree_loss_at_the_reference_is_log_of_the_kept_orders() -> None:
    """policy = reference: every z is 0; first = log n, ordinal = log n! (n kept variants)."""
    _, ref, mask = _case()
    ordinal = degree_losses(ref, ref, mask, 1.0, "ordinal")
    first = degree_losses(ref, ref, mask, 1.0, "first")
    # kept per response: (4, 3) and (3, 1)
    torch.testing.assert_close(ordinal, torch.tensor([(math.log(24) + math.log(6)) / 2,
                                                      math.log(6) / 2], dtype=torch.float64),
                               rtol=0, atol=TOL)
    torch.testing.assert_close(first, torch.tensor([(math.log(4) + math.log(3)) / 2,
                                                    math.log(3) / 2], dtype=torch.float64),
                               rtol=0, atol=TOL)


def test_degree_loss_gradient_is_plackett_luce() -> None:
    """d/dz_j sum_k [LSE(z_k..) - z_k] = sum_{k <= j} softmax(z_k..)_j - 1, times beta."""
    policy, ref, mask = _case()
    beta = 0.7
    policy = policy.clone().requires_grad_(True)
    degree_losses(policy, ref, mask, beta, "ordinal").sum().backward()
    expected = torch.zeros_like(policy)
    for b in range(2):
        for r in range(2):
            kept = [k for k in range(4) if mask[b, r, k]]
            z = [beta * float(policy[b, r, k].detach() - ref[b, r, k]) for k in kept]
            for jj, j in enumerate(kept):
                g = sum(math.exp(z[jj]) / sum(math.exp(v) for v in z[kk:])
                        for kk in range(jj + 1)) - 1
                expected[b, r, j] = beta * g / 2  # mean over the two responses
    torch.testing.assert_close(policy.grad, expected, rtol=0, atol=TOL)


def test_degree_accuracy_counts_responses_whose_undegraded_variant_leads() -> None:
    policy, ref, mask = _case()
    # z_0 - z_k per response: (b0,r0): 0.5 vs -0.5, -1, 0.5 -> not strictly first;
    # (b0,r1): -1 vs 0.5, -1 -> no; (b1,r0): 0.5 vs -0.5, 0.5 -> no; (b1,r1): one variant
    assert float(degree_accuracy(policy, ref, mask)) == 0.0
    assert float(degree_accuracy(ref + torch.tensor([1.0, 0, 0, 0]), ref, mask)) == 1.0


# ------------------------------------------------------------------ the wrapper


def _pair_inputs(seed: int = 0, n: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    names = ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps",
             "ref_rejected_logps")
    out = {k: -torch.rand(n, generator=g, dtype=torch.float64) * 8 for k in names}
    out["chosen_lengths"] = torch.tensor([3, 5][:n])
    out["rejected_lengths"] = torch.tensor([4, 2][:n])
    return out


@pytest.mark.parametrize("method,params", [("dpo", {"beta": 0.1}), ("ipo", {"beta": 0.5}),
                                           ("simpo", {"beta": 2.0}), ("spo", {"alpha": 1.0}),
                                           ("tdpo", {})])
def test_weight_zero_leaves_the_base_loss_and_its_gradient_untouched(method: str,
                                                                     params: dict) -> None:
    base = get_loss(method, **params)
    wrapped = SelfSupervisedLoss(base, weight=0.0)
    policy, ref, mask = _case()
    extra = ({"chosen_token_kl": torch.tensor([0.3, 0.1], dtype=torch.float64),
              "rejected_token_kl": torch.tensor([0.2, 0.4], dtype=torch.float64)}
             if method == "tdpo" else {})
    runs = []
    for loss in (base, wrapped):
        inputs = {k: v.clone().requires_grad_(v.is_floating_point())
                  for k, v in _pair_inputs().items()}
        variants = ({"variant_policy_logps": policy.clone().requires_grad_(True),
                     "variant_ref_logps": ref, "variant_mask": mask} if loss is wrapped else {})
        out = loss(**inputs, **variants, **extra)
        out.losses.mean().backward()
        runs.append((out, inputs, variants))
    (b_out, b_in, _), (w_out, w_in, w_var) = runs
    assert torch.equal(b_out.losses, w_out.losses)
    for k in ("policy_chosen_logps", "policy_rejected_logps"):
        assert torch.equal(b_in[k].grad, w_in[k].grad)
    assert w_var["variant_policy_logps"].grad is None  # not even in the graph
    assert "ssl/degree_loss" in w_out.metrics  # logged all the same


@pytest.mark.parametrize("target", ["ordinal", "first"])
def test_weighted_dpo_with_ssl_is_dpo_plus_weight_times_the_degree_loss(target: str) -> None:
    inputs = _pair_inputs()
    policy, ref, mask = _case()
    beta, weight, ssl_beta = 0.1, 0.3, 0.5
    h = ((inputs["policy_chosen_logps"] - inputs["ref_chosen_logps"])
         - (inputs["policy_rejected_logps"] - inputs["ref_rejected_logps"])).tolist()
    dpo = torch.tensor([math.log1p(math.exp(-beta * v)) for v in h], dtype=torch.float64)
    loss = SelfSupervisedLoss(get_loss("dpo", beta=beta), weight=weight, beta=ssl_beta,
                              target=target)
    out = loss(**inputs, variant_policy_logps=policy, variant_ref_logps=ref,
               variant_mask=mask)
    expected = dpo + weight * _expected(policy, ref, mask, ssl_beta, target)
    torch.testing.assert_close(out.losses, expected, rtol=0, atol=TOL)
    assert loss.name == "dpo+ssl"
    # without variants it is the base loss
    torch.testing.assert_close(loss(**inputs).losses, dpo, rtol=0, atol=TOL)


def test_wrapper_delegates_what_the_loop_reads() -> None:
    spo = SelfSupervisedLoss(get_loss("spo", alpha=1.0, **{"lambda": 0.1}))
    assert spo.regularizer is not None and spo.regularizer.weight == 0.1
    assert SelfSupervisedLoss(get_loss("simpo")).requires_reference is False
    assert SelfSupervisedLoss(get_loss("ipo")).requires_lengths is True
    assert SelfSupervisedLoss(get_loss("tdpo")).requires_token_kl is True
    dpo = get_loss("dpo", beta=1.0)
    r, q = torch.tensor([[0.0, 1.0, -1.0]]), torch.log(torch.tensor([[0.2, 0.3, 0.5]]))
    assert torch.equal(SelfSupervisedLoss(dpo, weight=0.0).optimal_logprobs(r, q),
                       dpo.optimal_logprobs(r, q))
    assert SelfSupervisedLoss(dpo, weight=0.1).optimal_logprobs(r, q) is None


@pytest.mark.parametrize("kwargs,match", [
    ({"weight": -0.1}, "weight must be >= 0"), ({"weight": math.nan}, "weight"),
    ({"beta": 0.0}, "beta must be positive"), ({"target": "last"}, "target must be one of"),
    ({"responses": "rejected"}, "responses must be one of")])
def test_wrapper_refuses_bad_settings(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SelfSupervisedLoss(get_loss("dpo"), **kwargs)


@pytest.mark.parametrize("method,match", [("kto", "unpaired"), ("sppo", "samples new"),
                                          ("seqpo", "one round per preference dimension")])
def test_wrapper_refuses_methods_without_fixed_pairs(method: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SelfSupervisedLoss(get_loss(method))


# ------------------------------------------------------------------ model log-probs, store


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> SimpleNamespace:
    """A word-level tokenizer over the test texts and two tiny Llamas (reference, policy)."""
    from harness.tasks.tiny_models import save_model, tiny_llama, word_tokenizer

    pairs = [{"prompt": "q0", "chosen": "quick brown fox jumps over the lazy dog",
              "rejected": "it is what it is"},
             {"prompt": "q1", "chosen": "red apple , green pear , ripe plum",
              "rejected": "lazy dog sleeps"},
             {"prompt": "q2", "chosen": "sweet hal", "rejected": "old tired horse , slow cart"}]
    words = sorted({w for r in pairs for k in ("prompt", "chosen", "rejected")
                    for w in r[k].split()})
    tok = word_tokenizer(words)
    folder = tmp_path_factory.mktemp("tiny-ref")
    save_model(tiny_llama(tok, hidden_size=16, num_layers=1, num_heads=4, max_positions=64,
                          seed=0), tok, folder)
    policy = tiny_llama(tok, hidden_size=16, num_layers=1, num_heads=4, max_positions=64,
                        seed=1)
    return SimpleNamespace(pairs=pairs, tok=tok, folder=folder, policy=policy)


def _logps(model, tok, prompt_texts: list[tuple[str, str]]) -> torch.Tensor:
    from trainers.logprobs import batched_completion_logps
    from trainers.tokenize import encode

    return batched_completion_logps(model, [encode(tok, p, t, 64) for p, t in prompt_texts],
                                    tok.pad_token_id, batch_size=1)


@pytest.mark.parametrize("target", ["ordinal", "first"])
def test_variant_objective_assembles_each_variants_log_prob(tiny, target: str) -> None:
    """The objective's degree loss equals the loss of log-probs computed one sequence at a
    time, policy and reference, for every variant: the responses' own from the pairs'
    forward, the others from the variants' forward, in the right slots."""
    from transformers import AutoModelForCausalLM

    from trainers.loop import compute_reference_logps
    from trainers.self_supervised import VariantObjective, variant_reference_logps

    fractions = [0, 1 / 3, 2 / 3, 1]
    variants = build_variants(tiny.pairs, fractions, 1 / 3)
    ref_pairs = compute_reference_logps(tiny.folder, tiny.pairs, 64)
    ref_variants = variant_reference_logps(tiny.folder, tiny.pairs, variants, 64)
    loss = SelfSupervisedLoss(get_loss("dpo", beta=0.5), weight=0.2, beta=1.0, target=target)
    objective = VariantObjective(loss, tiny.tok, tiny.pairs, ref_pairs, variants, ref_variants,
                                 64, True)
    idx = torch.tensor([2, 0, 1])
    out, _ = objective(tiny.policy, idx, "cpu")

    reference = AutoModelForCausalLM.from_pretrained(tiny.folder)
    texts = [(tiny.pairs[i]["prompt"], variants.texts[i][r][k])
             for i in idx.tolist() for r in range(2) for k in range(4)]
    pol = _logps(tiny.policy, tiny.tok, texts).view(3, 2, 4)
    ref = _logps(reference, tiny.tok, texts).view(3, 2, 4)
    degree = _expected(pol, ref, variants.mask[idx], 1.0, target)
    torch.testing.assert_close(out.metrics["ssl/degree_loss"].double(), degree.mean(),
                               rtol=0, atol=1e-5)
    dpo = get_loss("dpo", beta=0.5)(
        policy_chosen_logps=pol[:, 0, 0], policy_rejected_logps=pol[:, 1, 0],
        ref_chosen_logps=ref[:, 0, 0], ref_rejected_logps=ref[:, 1, 0]).losses
    torch.testing.assert_close(out.losses.double(), dpo + 0.2 * degree, rtol=0, atol=1e-5)
    out.losses.mean().backward()  # the gradient reaches the policy through both forwards
    assert all(p.grad is not None for p in tiny.policy.parameters() if p.requires_grad)
    tiny.policy.zero_grad()


def test_variants_and_their_reference_logps_are_stored_once(tiny, tmp_path, monkeypatch) -> None:
    from harness import ssl as harness_ssl
    from harness.spec import SSLSpec, TrainingSpec
    from harness.store import Store
    from trainers import self_supervised

    counts: list[bool] = []
    exp = SimpleNamespace(
        assets=SimpleNamespace(pairs=tiny.pairs, reference_key="ref", completion_eos=True,
                               reference_dir=tiny.folder),
        store=Store(tmp_path), spec=SimpleNamespace(training=TrainingSpec(max_length=64)),
        _count=lambda stage, computed: counts.append(computed))
    run = SimpleNamespace(label="dpo+ssl", ssl=SSLSpec().resolved())
    first = harness_ssl.ssl_data(exp, run)
    assert counts == [True, True]

    def boom(*args, **kwargs):
        raise AssertionError("recomputed")

    monkeypatch.setattr(self_supervised, "build_variants", boom)
    monkeypatch.setattr(self_supervised, "variant_reference_logps", boom)
    second = harness_ssl.ssl_data(exp, SimpleNamespace(label="other", ssl={
        **SSLSpec().resolved(), "weight": 1.0, "target": "first", "beta": 2.0}))
    assert counts == [True, True, False, False]  # the loss settings are not the variants'
    assert second.variants.as_json() == first.variants.as_json()
    assert torch.equal(second.ref_logps, first.ref_logps)
    assert second.settings["weight"] == 1.0 and first.settings["weight"] == 0.1


def test_runs_without_ssl_keep_their_content_key() -> None:
    from harness.spec import RunSpec

    plain = RunSpec(method="dpo", params={"beta": 0.1}, seed=0, label="dpo")
    assert plain.key_material() == {"method": "dpo", "params": {"beta": 0.1}, "seed": 0}
    with_ssl = RunSpec(method="dpo", params={"beta": 0.1}, seed=0, label="x",
                       ssl={"weight": 0.1})
    assert with_ssl.key_material()["ssl"] == {"weight": 0.1}


def test_the_spec_resolves_ssl_defaults_into_the_run(tmp_path: Path) -> None:
    from harness.spec import expand_runs, load_spec
    from tests.conftest import TINY_SPEC

    spec = tmp_path / "s.yaml"
    spec.write_text(TINY_SPEC)
    a = expand_runs(load_spec(spec, ["methods.1.ssl={}"]))[1]
    b = expand_runs(load_spec(spec, ["methods.1.ssl={degrees: 4, weight: 0.1}"]))[1]
    c = expand_runs(load_spec(spec, ["methods.1.ssl={fractions: [0, 0.5, 1]}"]))[1]
    assert a.ssl == b.ssl == {"weight": 0.1, "degrees": 4, "fractions": [0, 1 / 3, 2 / 3, 1],
                              "keyword_share": 1 / 3, "beta": 0.1, "target": "ordinal",
                              "responses": "both"}
    assert a.label == "dpo(beta=1)+ssl(weight=0.1)"
    assert c.ssl["degrees"] == 3 and c.ssl["fractions"] == [0.0, 0.5, 1.0]
    assert expand_runs(load_spec(spec))[1].ssl is None


# ------------------------------------------------------------------ end to end


SSL_SPEC_METHODS = """\
methods:
  - name: dpo
    params: {beta: 1}
  - name: dpo
    params: {beta: 1}
    ssl: {weight: 0.5, beta: 1}
  - name: dpo
    params: {beta: 1}
    ssl: {weight: 0}
"""


def test_dpo_with_ssl_trains_through_the_cli(tmp_path: Path) -> None:
    """dpo, dpo+ssl and dpo+ssl at weight 0 on the tiny bandit: the variants and their
    reference log-probs are computed once for both ssl runs, weight 0 trains exactly dpo,
    the plain run keeps its key, and a rerun (or a new weight) recomputes no variant."""
    from harness.hashing import content_hash
    from tests.conftest import TINY_BASE, assert_ok, cli, run_json, write_spec

    head, _, rest = TINY_BASE.partition("methods:\n")
    rest = rest[rest.index("seeds:"):].replace("epochs: 12", "epochs: 3")
    spec = write_spec(tmp_path / "ssl.yaml", head + SSL_SPEC_METHODS + rest
                      + "report: {embedding_diversity: false}\n")
    results = tmp_path / "results"
    proc = cli("run", spec, "--results-dir", results, cwd=tmp_path)
    assert_ok(proc)
    # reference log-probs, variants, their reference log-probs, three runs; the second ssl
    # run takes both variant artifacts from the store
    assert run_json(results)["counts"]["train"] == {"computed": 6, "cached": 2}
    with sqlite3.connect(results / "store.sqlite") as db:
        runs = {label: (key, json.loads(meta)) for key, label, meta in
                db.execute("SELECT key, label, metadata FROM runs")}
        kinds = sorted(k for (k,) in db.execute("SELECT kind FROM artifacts"))
    assert kinds.count("ssl-variants") == 1 and kinds.count("ssl-ref-logps") == 1
    assert set(runs) == {"dpo(beta=1)", "dpo(beta=1)+ssl(weight=0.5)",
                         "dpo(beta=1)+ssl(weight=0)"}
    plain = runs["dpo(beta=1)"][1]
    assert "ssl" not in plain
    # the plain run's key holds the same run material as before ssl existed
    from harness.lock import release_results_dir
    from harness.pipeline import Experiment
    from harness.spec import load_spec

    exp = Experiment(load_spec(spec), results, show_progress=False)
    a = exp.assets
    assert runs["dpo(beta=1)"][0] == content_hash({
        "reference": a.reference_key, "pairs": content_hash(a.pairs),
        "reg_prompts": content_hash(a.reg_prompts),
        "run": {"method": "dpo", "params": {"beta": 1}, "seed": 0},
        "training": exp.spec.training.key()})
    exp.store.close()
    release_results_dir(results)  # the CLI below takes the folder's lock
    assert runs["dpo(beta=1)+ssl(weight=0)"][1]["history"] == plain["history"]
    trained = runs["dpo(beta=1)+ssl(weight=0.5)"][1]
    assert trained["ssl"]["weight"] == 0.5 and trained["ssl"]["fractions"] == [0, 1 / 3,
                                                                             2 / 3, 1]
    first, last = trained["history"][0], trained["history"][-1]
    assert first["ssl/degree_loss"] > last["ssl/degree_loss"]  # it learns the degrees
    board = json.loads((results / "leaderboard.json").read_text())
    ssl_row = next(r for r in board if r["label"] == "dpo(beta=1)+ssl(weight=0.5)")
    assert ssl_row["method"] == "dpo+ssl" and ssl_row["params"]["ssl"]["weight"] == 0.5

    assert_ok(cli("train", spec, "--results-dir", results, cwd=tmp_path))
    assert run_json(results)["counts"]["train"]["computed"] == 0
    assert_ok(cli("train", spec, "--results-dir", results, "--set", "methods.1.ssl.weight=1",
                  cwd=tmp_path))
    # the new run alone; from the store: two runs, the pairs' reference log-probs, the
    # variants and their reference log-probs
    assert run_json(results)["counts"]["train"] == {"computed": 1, "cached": 5}

