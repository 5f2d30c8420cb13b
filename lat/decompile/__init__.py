"""Decompile: from linear-attention weights (compiled, learned or trained) back to `.lat`.

An artifact carries its Interface — the finite token vocabulary, the decoded output fields
and the feedback rule — so its behaviour can be read off as a table, one entry per token
the program logic depends on, by running the model through its own runtime (`rollout`)
as a black box: a model is decompiled by what it does. V and Q are read only for one
extra, a bound (automata, weights placement) on the word length up to which every entry
provably decodes the value it was read with (`lat.decompile.automaton`).

- **automaton**: from `bos`, breadth-first over decoded states (each new state gets the
  shortest word that reached it); then every (state, symbol) entry is read at every prefix
  the exploration found to reach that state — p·a for each p with δ(p's state, ·) = q —
  and at every position of `samples` random words of length ≤ `max_len`. The verdict is a
  property of a state in `.lat`, so it is read at every position that decodes that state.
- **memory**: every key of the interface's key vocabulary, and one key outside it when the
  interface maps unknown keys to a default (`input_other`).
- **machine** (weights placement; a bound context-placement executor too): every input up
  to the tape bound when there are at most `samples`, else all short ones and random ones
  up to the tape; the tape is replayed from the model's own decoded writes, and each answer
  position is a reading of the entry (current state, symbol under the head): next state,
  write, move (from the head cells; L and S cannot be told apart on cell 0) and halt.

**Consistency is measured, not assumed.** Each entry collects every reading: its value,
the smallest decode margin (top-1 minus top-2, over the output fields), whether the margin
clears what fp32 resolves, and example prefixes. An entry whose readings disagree (history
dependence through the state S_t) or whose margin fp32 cannot resolve makes the model *not
decompilable*: `consistent` is False, `program` is None and `inconsistent` lists the entries
with example inputs for each value seen. Nothing is rounded to a guess.

A consistent model gives a canonical `.lat` program (the compiler's printer) with a header
comment saying where it came from and how it was checked; the text is parsed and checked
again before it is returned. `against` (a checked declaration or a `.lat` path) compares
it with a reference: automata by minimising both DFAs and testing isomorphism (with the
renaming of minimal states, or a shortest distinguishing word found by breadth-first
search on the product automaton), memories by table equality (every key and the default),
machines by table equality on the reachable part (the entries the model was seen to read).

What this does not prove: readings are taken on finitely many prefixes (for automata the
exploration plus random words; for machines the inputs tried), so "consistent" means
"every reading taken agreed", stated with its counts in the report and the header.

One module per pass: `readings` (runs → readings per table entry → entries and verdict),
one reader per kind (`automaton`, `memory`, `machine`, each with its comparison), `report`
(the `Decompilation` and its header comment) and `decompiler` (the entry point and the
`READERS` table from a kind's name to its reader).
"""

from lat.decompile.decompiler import decompile
from lat.decompile.report import Decompilation

__all__ = ["Decompilation", "decompile"]
