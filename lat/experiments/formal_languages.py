"""formal-languages: the regular and bounded-counter languages of Irie, Csordás and
Schmidhuber (2023) as shipped .lat programs — compiled exactness, learned exactness, and
length generalisation (learn from words of length ≤ 40, test on lengths 41–500).

Languages (programs/*.lat, each with a comment saying what it accepts): parity, (aa)*,
(abab)*, counter-2 = aⁿbⁿ (n ≤ 20), counter-3 = aⁿbⁿcⁿ (n ≤ 13), Dyck-1 of depth ≤ 8 and
reset-Dyck-1 of depth ≤ 8. The counters are bounded so that they are finite automata
(the bound covers every member of length ≤ 40); any longer word is rejected by them.

Per language:
- `compiled_exact`: the compiled model (weights placement) agrees with the reference
  interpreter (`lat verify`: verdict, state trace, steps) on every word of length ≤ 40
  checked (exhaustive when few, else sampled) AND on every test word (lengths 41–500).
- learned: `lat.learner.learn` on random words of length ≤ 40 (with its data-design rounds,
  also ≤ 40); `learned_certified` is its identifiability certificate on words ≤ 40.
- `learned_exact`: the learned model agrees with the interpreter on every test word;
  `learned_exact_fraction` the fraction that do. Test words: half uniform random, half
  random walks that stay inside the states from which an accepting state is reachable
  (so long words are not all trivially dead), lengths uniform in 41..500.

Softmax baseline (on `SOFTMAX_LANGUAGES`, parity by default): the small causal softmax
transformer of `lat.experiments.softmax`, trained by Adam with cross-entropy on recorded
rollouts of `train_words` uniformly random words of length ≤ 40 (the same count as the
learner's random words, without its data design), lr chosen on 64 validation words ≤ 40,
3 seeds; judged teacher-forced on the same test words (41–500): `softmax_exact_fraction`
(median over seeds) beside `learned_exact_fraction`. The token is the fed-back (state,
symbol) pair, as for the linear model (weights placement), so the step itself is local;
what is tested is whether the attention stays out of the way at 10× the training length.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np

from lat.experiments import pyplot, save_plot

LANGUAGES = {
    "parity": "parity.lat",
    "aa_star": "aa_star.lat",
    "abab_star": "abab_star.lat",
    "counter2": "counter2.lat",
    "counter3": "counter3.lat",
    "dyck1": "dyck1.lat",
    "reset_dyck1": "reset_dyck1.lat",
}
SOFTMAX_LANGUAGES = ("parity",)
TRAIN_MAX_LEN = 40
TEST_MIN_LEN, TEST_MAX_LEN = 41, 500


def programs_dir() -> Path:
    """The folder of the shipped programs: package data `lat.programs` once installed (a
    namespace package: programs/ has no __init__), programs/ in an uninstalled tree. `run`
    reads them through `lat.api.shipped_program`."""
    spec = importlib.util.find_spec("lat.programs")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parent.parent.parent / "programs"


def _alive(declaration) -> set[str]:  # noqa: ANN001
    """States from which some accepting state is reachable."""
    alive = set(declaration.accept)
    changed = True
    while changed:
        changed = False
        for (q, _), target in declaration.transition_table.items():
            if target in alive and q not in alive:
                alive.add(q)
                changed = True
    return alive


def test_words(declaration, count: int, rng: np.random.Generator,  # noqa: ANN001
               min_len: int = TEST_MIN_LEN, max_len: int = TEST_MAX_LEN
               ) -> list[tuple[str, ...]]:
    alphabet = list(declaration.alphabet)
    alive = _alive(declaration)
    table = declaration.transition_table
    words = []
    for i in range(count):
        n = int(rng.integers(min_len, max_len + 1))
        if i % 2 == 0:
            words.append(tuple(alphabet[j] for j in rng.integers(0, len(alphabet), n)))
            continue
        q, word = declaration.start, []
        for _ in range(n):
            good = [a for a in alphabet if table[(q, a)] in alive] or alphabet
            a = good[int(rng.integers(len(good)))]
            word.append(a)
            q = table[(q, a)]
        words.append(tuple(word))
    return words


def _agreement(model, declaration, words) -> tuple[int, int]:  # noqa: ANN001
    from lat.api import expected_report, run_report
    from lat.runtime.execute import rollout

    ok = 0
    accepted = 0
    for start in range(0, len(words), 256):
        batch = words[start:start + 256]
        for word, result in zip(batch, rollout(model, batch), strict=True):
            got = run_report(model, result)
            want = expected_report(declaration, word)
            ok += all(got[k] == v for k, v in want.items())
            accepted += want["output"] == "accept"
    return ok, accepted


def random_words(declaration, count: int, max_len: int,  # noqa: ANN001
                 rng: np.random.Generator) -> list[tuple[str, ...]]:
    alphabet = list(declaration.alphabet)
    return [tuple(alphabet[j] for j in rng.integers(0, len(alphabet),
                                                     int(rng.integers(0, max_len + 1))))
            for _ in range(count)]


def _softmax(compilation, words, n_train: int, steps: int,  # noqa: ANN001
             rng: np.random.Generator) -> dict:
    from lat.experiments.softmax import automaton_task, train_tuned
    from lat.learner.traces import record_traces

    declaration, model = compilation.declaration, compilation.model
    train_words = random_words(declaration, n_train, TRAIN_MAX_LEN, rng)
    val_words = random_words(declaration, 64, TRAIN_MAX_LEN, rng)
    tasks = {name: automaton_task(record_traces(model, ws), ws)
             for name, ws in (("train", train_words), ("validation", val_words),
                              ("test", words))}
    record = train_tuned(tasks["train"], tasks["validation"], {"test": tasks["test"]},
                         steps=steps, width=32, layers=2, heads=4)
    return {"softmax_exact_fraction": record["test_exact_fraction_median"],
            "softmax_exact_fraction_range": [record["test_exact_fraction_min"],
                                             record["test_exact_fraction_max"]],
            "softmax_converged": record["converged"], "softmax": record}


def run(quick: bool = False, out: Path = Path("."), scale: float = 1.0,
        languages: tuple[str, ...] | None = None,
        softmax_languages: tuple[str, ...] = SOFTMAX_LANGUAGES) -> dict:
    from lat.api import compile_source, shipped_program, verify
    from lat.learner import learn

    rng = np.random.default_rng(0)
    n_test = max(8, int((64 if quick else 500) * scale))
    n_train = max(100, int((400 if quick else 1000) * scale))
    n_domain = max(100, int((300 if quick else 2000) * scale))
    softmax_steps = max(50, int((100 if quick else 600) * scale))
    results = {}
    for name in languages or tuple(LANGUAGES):
        clock = time.perf_counter()
        compilation = compile_source(shipped_program(LANGUAGES[name]), LANGUAGES[name])
        declaration = compilation.declaration
        short = verify(compilation, max_len=TRAIN_MAX_LEN, samples=n_domain, seed=1)
        words = test_words(declaration, n_test, rng)
        compiled_ok, accepted = _agreement(compilation.model, declaration, words)
        compile_seconds = time.perf_counter() - clock
        clock = time.perf_counter()
        learned = learn(compilation.model, samples=n_train, max_len=TRAIN_MAX_LEN,
                        domain_samples=n_domain, seed=2,
                        design_rounds=1 if quick else 2)
        learn_seconds = time.perf_counter() - clock
        learned_ok, _ = _agreement(learned.model, declaration, words)
        results[name] = {
            "program": LANGUAGES[name],
            "states": len(declaration.states),
            "alphabet": list(declaration.alphabet),
            "d": compilation.model.interface.d,
            "compiled_exact": bool(short.ok and compiled_ok == len(words)),
            "compiled_checked_short": short.checked,
            "learned_exact": bool(learned_ok == len(words)),
            "learned_exact_fraction": learned_ok / len(words),
            "learned_equivalent_short": learned.equivalent,
            "learned_certified": learned.certificate.identifiable,
            "learned_heads": learned.heads,
            "train_samples": learned.samples,
            "train_words": learned.traces,
            "train_max_len": TRAIN_MAX_LEN,
            "test_words": len(words),
            "test_accepted": accepted,
            "test_min_len": TEST_MIN_LEN,
            "test_max_len": TEST_MAX_LEN,
            "compile_verify_seconds": compile_seconds,
            "learn_seconds": learn_seconds,
        }
        if name in softmax_languages:
            clock = time.perf_counter()
            results[name].update(_softmax(compilation, words, n_train, softmax_steps, rng))
            results[name]["softmax_seconds"] = time.perf_counter() - clock

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.8))
    names = list(results)
    x = np.arange(len(names))
    ax.bar(x - 0.2, [1.0 if results[n]["compiled_exact"] else 0.0 for n in names], 0.4,
           label="compiled")
    ax.bar(x + 0.2, [results[n]["learned_exact_fraction"] for n in names], 0.4,
           label="learned (Alg. 1, words ≤ 40)")
    soft = [n for n in names if "softmax_exact_fraction" in results[n]]
    if soft:
        xs = np.array([names.index(n) for n in soft])
        med = np.array([results[n]["softmax_exact_fraction"] for n in soft])
        lo = np.array([results[n]["softmax_exact_fraction_range"][0] for n in soft])
        hi = np.array([results[n]["softmax_exact_fraction_range"][1] for n in soft])
        ax.errorbar(xs + 0.2, med, yerr=[med - lo, hi - med], fmt="k^", capsize=3,
                    label="softmax transformer, Adam (median, min–max of 3 seeds)")
    ax.set_xticks(x, names, rotation=20)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"test words exact (fraction), lengths {TEST_MIN_LEN}–{TEST_MAX_LEN}")
    ax.set_title("Formal languages: length generalisation")
    ax.legend(fontsize=8, loc="lower right")
    plot = save_plot(fig, out, "formal-languages.png")
    return {"setting": {"train_words": n_train, "train_max_len": TRAIN_MAX_LEN,
                        "source": "languages of Irie, Csordas and Schmidhuber (2023); not an "
                                  "experiment of arXiv 2410.10101. Full size here: 1,000 "
                                  "training words, 2 design rounds, 500 test words, 600 "
                                  "softmax steps (quick: 400, 1, 64, 100)",
                        "test_words": n_test, "test_lengths": [TEST_MIN_LEN, TEST_MAX_LEN],
                        "domain_samples": n_domain,
                        "softmax": {"languages": list(softmax_languages),
                                    "steps": softmax_steps, "width": 32, "layers": 2,
                                    "heads": 4, "validation_words": 64}},
            "uses_head_search": "yes: lat.learner.learn minimises heads by default; the "
                                "exactness figures are those of the minimised model",
            "limitations": [
                "one random draw of training and test words per language",
                "the softmax baseline is run on the languages in setting.softmax only",
            ],
            "languages": results, "plots": [plot]}
