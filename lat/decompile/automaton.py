"""Automata: breadth-first over decoded states, every (state, symbol) entry read at every
prefix found reaching its state and along random words; a length bound proven from V and Q;
comparison by minimal-DFA isomorphism (module docstring of `lat.decompile`)."""

from __future__ import annotations

import math
from collections import defaultdict, deque

import numpy as np
import torch

from lat.compiler import ast
from lat.compiler.graph import minimise, to_ast
from lat.compiler.ir import CheckedAutomaton, frozen_mapping
from lat.compiler.printer import format_program
from lat.decompile.readings import Book, Budget, answers, finish, lat_names, runs
from lat.decompile.report import Decompilation
from lat.runtime.device import single_thread
from lat.runtime.execute import rollout
from lat.runtime.model import CompiledModel


def read_automaton(model: CompiledModel, budget: Budget,
                   rng: np.random.Generator) -> Decompilation:
    samples, max_len = budget.samples, budget.max_len
    interface = model.interface
    alphabet = tuple(interface.input_alphabet)
    state_field, verdict_field = interface.trace_field or "state", interface.result_field
    book, verdicts = Book(), Book()
    access: dict[str, tuple[str, ...]] = {}  # state → shortest word found reaching it
    reaching: dict[str, list[tuple[str, ...]]] = defaultdict(list)  # state → prefixes
    expanded: set[str] = set()
    inputs = 0

    def read(words: list[tuple[str, ...]]) -> None:
        nonlocal inputs
        inputs += len(words)
        for result in runs(model, words):
            margin, resolved = answers(model, result)
            word = result.input
            trace, verdict = result.decoded[state_field], result.decoded[verdict_field]
            for t, (state, answer) in enumerate(zip(trace, verdict, strict=True)):
                key = ("bos",) if t == 0 else (trace[t - 1], word[t - 1])
                example = {"input": list(word[:t])}
                book.add(key, (state, answer), float(margin[t]), bool(resolved[t]),
                         example, word[:t])
                verdicts.add(("accept", state), answer, float(margin[t]), bool(resolved[t]),
                             example)
                if state not in access:
                    access[state] = word[:t]
                    reaching[state].append(word[:t])

    # Breadth-first exploration: one rollout per layer, each state expanded once.
    read([()])
    while True:  # ends: the state field's values are finite
        frontier = [q for q in access if q not in expanded]
        if not frontier:
            break
        words = [access[q] + (a,) for q in frontier for a in alphabet]
        expanded.update(frontier)
        read(words)
        for q in frontier:  # record which prefixes reach which state
            for a in alphabet:
                entry = book.entries.get((q, a))
                if entry is not None and len(entry.values) == 1:
                    target = next(iter(entry.values))[0]
                    if access[q] + (a,) != access.get(target):
                        reaching[target].append(access[q] + (a,))
    # Every entry at every prefix reaching its state, then random words.
    extra = [p + (a,) for q in access for p in reaching[q][1:] for a in alphabet]
    lengths = rng.integers(1, max(max_len, 1) + 1, size=samples)
    extra += [tuple(alphabet[i] for i in rng.integers(0, len(alphabet), size=n))
              for n in lengths]
    read(extra)
    # States first decoded by those words (only a model with disagreeing readings, or one
    # whose random words reach what the exploration did not) are explored as well.
    while True:  # ends: the state field's values are finite
        frontier = [q for q in access if q not in expanded]
        if not frontier:
            break
        expanded.update(frontier)
        read([access[q] + (a,) for q in frontier for a in alphabet])

    # Verdicts are per state in `.lat`: one more entry per state.
    for key, entry in verdicts.entries.items():
        book.entries[key] = entry
    states = list(access)
    names = lat_names(states, "q")
    start_entry = book.entries[("bos",)]
    program = None
    consistent = all(len(e.values) == 1 and e.unresolved == 0 for e in book.entries.values())
    if consistent:
        table = {(names[q], a): names[next(iter(book.entries[(q, a)].values))[0]]
                 for q in states for a in alphabet}
        accept = frozenset(names[q] for q in states
                           if next(iter(verdicts.entries[("accept", q)].values)) == "accept")
        automaton = CheckedAutomaton(
            name=lat_names([interface.program], "decompiled")[interface.program],
            alphabet=alphabet, states=tuple(names[q] for q in states),
            start=names[next(iter(start_entry.values))[0]], accept=accept,
            transition_table=frozen_mapping(table), source=None)
        program = format_program(ast.Program((to_ast(automaton),)))
        minimal = len(minimise(automaton).states)
    prefixes = sum(len(e.prefixes) for k, e in book.entries.items() if k[0] != "accept")
    method = (f"method: run through its runtime from bos, breadth-first over the "
              f"{len(states)} decoded states;\n"
              f"  each (state, symbol) entry read at every prefix found reaching its state\n"
              f"  and along {samples} random words of length ≤ {max_len} "
              f"({prefixes} distinct prefixes)")
    readings = sum(e.readings for k, e in book.entries.items() if k[0] != "accept")
    notes = []
    if program is not None:
        notes.append(f"{len(states)} reachable states, {minimal} after minimisation")
    unvisited = [v for v in interface.output_field(state_field).values if v not in access]
    if unvisited:
        notes.append(f"{len(unvisited)} state values of the interface never decoded: left out")
    report = finish(
        "automaton", book,
        lambda key: "start" if key == ("bos",) else " ".join(key),
        lambda value: ({"state": names.get(value[0], value[0]), "accept": value[1]}
                       if isinstance(value, tuple) else value),
        program, method, inputs, notes, {k: v for k, v in names.items() if k != v},
        readings)
    report.scope = "sampled"  # every state explored; prefixes: the exploration and a sample
    if program is not None:
        _length_bound(model, book, report)
    return report


def _length_bound(model: CompiledModel, book: Book, report: Decompilation) -> None:
    """A bound from the weights, beside the readings: the word length up to which every
    entry provably decodes the value it was read with (automaton, weights placement).

    Tokens are unit vectors (bos, or one (state, symbol) pair), so at a prefix with counts
    n_u the output for current token z is Σ_u n_u·w_u(z), w_u(z) = Σ_h V_h[:, u]·Q_h[u, z].
    For the value v read and any rival v' of one output field, with D_u = w_u[v] − w_u[v']:
    margin ≥ D_bos + D_z + (t−1)·min(0, min_u D_u) at the t-th symbol (n_bos = 1, n_z ≥ 1,
    t tokens besides bos), and |y| ≤ |w_bos| + t·max_u |w_u|. Taken over all rivals at once
    (the smallest D_bos + D_z, the most negative D_u), the bound is the largest t at which
    that margin still clears fp32's resolution (64 ulps), for every entry and field. Every
    token of the vocabulary is allowed to occur — a superset of what a run can produce — so
    the bound is sound for any word (by induction over positions).
    """
    interface = model.interface
    names = [f.name for f in interface.token_fields]
    if names != ["bos", "state_symbol"] or interface.extra.get("placement") == "context":
        report.notes.append("length bound from the weights: not applicable (not the "
                            "weights-placement automaton layout)")
        return
    if model.sparse:  # its dense per-entry products are what sparse weights avoid
        report.notes.append("length bound from the weights: not computed for sparse weights "
                            "(a big table); the readings above are what was checked")
        return
    pairs = interface.token_field("state_symbol")
    offset = interface.token_offset("state_symbol")
    V = model.V.to(torch.float32).to(torch.float64)  # the weights as fp32 runs them
    Q = model.Q.to(torch.float32).to(torch.float64)
    c = 64 * float(torch.finfo(torch.float32).eps)
    largest = V.abs().amax(dim=1)  # (H, d)
    keys = [k for k in book.entries if k[0] != "accept"]
    values = [next(iter(book.entries[k].values)) for k in keys]
    columns = [0 if k == ("bos",) else offset + pairs.index(k) for k in keys]
    bounds: dict[tuple, float] = {}
    step = max(1, (1 << 21) // max(1, model.d * model.d_out))
    with single_thread(True):
        for start in range(0, len(keys), step):
            z = torch.tensor(columns[start:start + step])
            rows = torch.arange(len(z))
            W = torch.einsum("hou,huz->zou", V, Q[:, :, z])  # (Z, d_out, d): w_u(z)
            # upper bounds on |w_bos| and max_u |w_u|: Σ_h max_o |V_h[o,u]|·|Q_h[u,z]|
            reach = torch.einsum("hu,huz->zu", largest, Q[:, :, z].abs())
            size, grow = reach[:, 0], reach.amax(dim=1)
            best = torch.full((len(z),), math.inf, dtype=torch.float64)
            for j, (output, first) in enumerate(interface.output_slices()):
                if output.width < 2:
                    continue
                block = W[:, first:first + output.width, :]  # (Z, k, d)
                v = torch.tensor([output.values.index(value[j])
                                  for value in values[start:start + step]])
                top = block[rows, v]  # (Z, d): w_u[v]
                # every rival at once: its margin at the t-th symbol is at least
                # min_v' (D_bos + D_z) − (t−1)·max(0, −min_u min_v' D_u)
                two, which = block.topk(2, dim=1)  # (Z, 2, d)
                rival = torch.where(which[:, 0] == v[:, None], two[:, 1], two[:, 0])
                drift = (rival[:, 1:] - top[:, 1:]).amax(dim=1).clamp(min=0.0)
                ends = torch.stack([torch.zeros_like(z), z], dim=1)  # bos and z columns
                pair = block.gather(2, ends[:, None, :].expand(-1, output.width, 2)).sum(2)
                pair[rows, v] = math.inf  # v is not its own rival
                base = top.gather(1, ends).sum(1) - pair.amin(dim=1)
                head = base + drift - c * (1.0 + size)
                rate = c * grow + drift
                t = torch.where(head <= 0, torch.zeros_like(head),
                                torch.where(rate > 0, torch.ceil(head / rate) - 1,
                                            torch.full_like(head, math.inf)))
                # bos is read at position 0 only: y = w_bos, margin min_v' D_bos exactly
                bos_margin = top[:, 0] - torch.where(which[:, 0, 0] == v, two[:, 1, 0],
                                                     two[:, 0, 0])
                first_only = torch.where(bos_margin > c * size.clamp(min=1.0), math.inf, 0.0)
                best = torch.minimum(best, torch.where(z == 0, first_only, t))
            for key, bound in zip(keys[start:start + step], best.tolist(), strict=True):
                bounds[key] = bound
    proven = min(bounds.values(), default=math.inf)
    for row, key in zip(report.entries, book.entries, strict=False):
        if key in bounds:
            row["proven_up_to"] = None if math.isinf(bounds[key]) else int(bounds[key])
    report.proven_length = None if math.isinf(proven) else int(proven)
    report.proven_unbounded = math.isinf(proven)


def compare_automata(report: Decompilation, model: CompiledModel,
                      a: CheckedAutomaton, b: CheckedAutomaton) -> None:
    report.comparison = "minimal DFAs isomorphic (languages equal)"
    report.differences = [
        {"entry": f"{q} {s}", "model": target, "reference": b.transition_table[q, s]}
        for (q, s), target in a.transition_table.items()
        if (q, s) in b.transition_table and b.transition_table[q, s] != target
    ] + [
        {"entry": f"accept {q}", "model": q in a.accept, "reference": q in b.accept}
        for q in a.states if q in b.states and (q in a.accept) != (q in b.accept)
    ]
    if a.start != b.start and b.start in a.states:
        report.differences.append({"entry": "start", "model": a.start, "reference": b.start})
    if set(a.alphabet) != set(b.alphabet):
        report.equivalent_to_reference = False
        only = sorted(set(a.alphabet) ^ set(b.alphabet))
        report.distinguishing_input = [only[0]]
        report.comparison = f"alphabets differ: {', '.join(only)} in one only"
        return
    small_a, small_b = minimise(a), minimise(b)
    pairing = {small_a.start: small_b.start}
    queue = deque([small_a.start])
    iso = len(small_a.states) == len(small_b.states)
    while queue and iso:
        p = queue.popleft()
        q = pairing[p]
        if (p in small_a.accept) != (q in small_b.accept):
            iso = False
            break
        for s in small_a.alphabet:
            p2, q2 = small_a.transition_table[p, s], small_b.transition_table[q, s]
            if p2 not in pairing:
                pairing[p2] = q2
                queue.append(p2)
            elif pairing[p2] != q2:
                iso = False
                break
    iso = iso and len(set(pairing.values())) == len(pairing)
    report.equivalent_to_reference = iso
    if iso:
        report.renaming = dict(pairing)
        return
    # Shortest distinguishing word: breadth-first on the product automaton.
    start = (a.start, b.start)
    seen = {start: ()}
    queue = deque([start])
    while queue:
        p, q = pair = queue.popleft()
        if (p in a.accept) != (q in b.accept):
            word = seen[pair]
            report.distinguishing_input = list(word)
            verdict = rollout(model, [word])[0].value(model.interface.result_field)
            report.comparison = (f"languages differ: on {list(word)} the model says "
                                 f"{verdict}, the reference "
                                 f"{'accept' if q in b.accept else 'reject'}")
            return
        for s in a.alphabet:
            nxt = (a.transition_table[p, s], b.transition_table[q, s])
            if nxt not in seen:
                seen[nxt] = seen[pair] + (s,)
                queue.append(nxt)
