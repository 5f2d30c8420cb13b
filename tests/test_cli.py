"""End-to-end: the `lat` command as a user drives it (JSON, exit codes, messages)."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lat.cli import main
from lat.compiler.check import check_program
from lat.compiler.interpret import run_automaton
from lat.compiler.parse import parse_program

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ROOT / "programs"
# Child processes find the package from the source tree, installed or not.
CHILD_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def random_automaton_source(states: int, symbols: int, seed: int, name: str = "rand") -> str:
    """A random total DFA as .lat text (not one of the shipped programs)."""
    rng = random.Random(seed)
    names = [f"q{i}" for i in range(states)]
    alphabet = [chr(ord("a") + i) for i in range(symbols)]
    lines = [f"automaton {name} {{", f"  alphabet: {', '.join(alphabet)}",
             f"  states: {', '.join(names)}", "  start: q0",
             f"  accept: {', '.join(rng.sample(names, max(1, states // 3)))}"]
    lines += [f"  {q} {a} -> {rng.choice(names)}" for q in names for a in alphabet]
    return "\n".join(lines + ["}"]) + "\n"


def lat(*argv: str, capsys) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def rand_file(tmp_path) -> Path:
    path = tmp_path / "rand.lat"
    path.write_text(random_automaton_source(7, 3, seed=42))
    return path


def test_check_ok_and_bad(tmp_path, capsys, rand_file):
    code, out, _ = lat("check", str(rand_file), capsys=capsys)
    assert code == 0 and "ok" in out
    bad = tmp_path / "bad.lat"
    bad.write_text("automaton x {\n  alphabet: a\n  states: p\n  start: qq\n  p a -> p\n}\n")
    code, out, err = lat("check", str(bad), capsys=capsys)
    assert code == 2
    assert err.startswith(f"{bad}:4:")
    assert "Traceback" not in err


def test_run_json_equals_the_interpreter_on_long_random_words(tmp_path, capsys, rand_file):
    artifact = tmp_path / "rand.safetensors"
    assert lat("compile", str(rand_file), "-o", str(artifact), capsys=capsys)[0] == 0
    declaration = check_program(parse_program(rand_file.read_text(), "r")).get(None)
    rng = random.Random(1)
    for length in (0, 1, 17, 500):
        word = "".join(rng.choice("abc") for _ in range(length))
        code, out, _ = lat("run", str(artifact), "--input", word, "--json", capsys=capsys)
        assert code == 0
        report = json.loads(out)
        truth = run_automaton(declaration, tuple(word))
        assert report["output"] == truth.output
        assert report["trace"] == list(truth.trace)
        assert report["final_state"] == truth.final_state
        assert report["steps"] == length and report["margin"] >= 1.0
        assert report["input"] == list(word)
        assert set(report) >= {"program", "kind", "input", "output", "steps", "margin",
                               "trace", "final_state"}


def test_reference_loop_agrees(capsys, rand_file):
    fast = json.loads(lat("run", str(rand_file), "--input", "abcab", "--json", capsys=capsys)[1])
    slow = json.loads(lat("run", str(rand_file), "--input", "abcab", "--json", "--reference",
                          capsys=capsys)[1])
    assert fast == slow


def test_unknown_input_symbol_missing_file_corrupt_artifact(tmp_path, capsys, rand_file):
    code, _, err = lat("run", str(rand_file), "--input", "abz", capsys=capsys)
    assert code == 1 and "unknown symbol 'z'" in err and len(err.strip().splitlines()) == 1
    code, _, err = lat("run", str(tmp_path / "nope.lat"), "--input", "a", capsys=capsys)
    assert code == 1 and "no such file" in err and len(err.strip().splitlines()) == 1
    artifact = tmp_path / "a.safetensors"
    lat("compile", str(rand_file), "-o", str(artifact), capsys=capsys)
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    code, _, err = lat("run", str(artifact), "--input", "a", capsys=capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_verify_a_60_state_6_symbol_automaton(tmp_path, capsys):
    path = tmp_path / "big.lat"
    path.write_text(random_automaton_source(60, 6, seed=3, name="big"))
    code, out, _ = lat("verify", str(path), "--json", capsys=capsys)
    report = json.loads(out)
    assert code == 0
    assert report["checked"] == 20_000 and report["mismatches"] == 0
    assert report["min_margin"] > 0


def test_verify_is_exhaustive_when_the_domain_is_small(capsys):
    code, out, _ = lat("verify", str(PROGRAMS / "parity.lat"), "--max-len", "6", "--json",
                       capsys=capsys)
    report = json.loads(out)
    assert code == 0 and report["domain"] == "exhaustive" and report["checked"] == 2**7 - 1


def test_compile_minimise_and_inspect(tmp_path, capsys):
    artifact = tmp_path / "m.safetensors"
    code, out, _ = lat("compile", str(PROGRAMS / "mod5x5.lat"), "--minimise", "-o",
                       str(artifact), "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["states"] <= 25
    png = tmp_path / "w.png"
    code, out, _ = lat("inspect", str(artifact), "--plot", str(png), "--json", capsys=capsys)
    summary = json.loads(out)
    assert code == 0 and summary["heads"] == 1 and png.stat().st_size > 1000
    code, out, _ = lat("inspect", str(PROGRAMS / "div3.lat"), "--dot", capsys=capsys)
    assert code == 0 and out.lstrip().startswith("digraph")


def test_learn_json(tmp_path, capsys):
    learned = tmp_path / "learned.safetensors"
    code, out, _ = lat("learn", str(PROGRAMS / "div3.lat"), "--samples", "200", "--max-len",
                       "20", "-o", str(learned), "--json", capsys=capsys)
    report = json.loads(out)
    assert code == 0 and report["equivalent"] is True
    assert report["certificate"]["identifiable"] is True
    assert report["train_max_abs_error"] <= 1e-6
    code, out, _ = lat("run", str(learned), "--input", "1001", "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["output"] == "accept"  # 9 is divisible by 3


def test_trace_then_learn_from_traces(tmp_path, capsys):
    traces = tmp_path / "t.safetensors"
    code, _, _ = lat("trace", str(PROGRAMS / "parity.lat"), "--samples", "100", "--max-len",
                     "12", "-o", str(traces), capsys=capsys)
    assert code == 0
    code, out, _ = lat("learn", "--traces", str(traces), "--json", capsys=capsys)
    report = json.loads(out)
    # traces alone: nothing to be equivalent to; the recorded runs are reproduced
    assert code == 0 and report["equivalent"] is None and report["reproduces_traces"] is True
    assert report["certificate"]["scope"] == "recorded"
    code, out, _ = lat("learn", "--traces", str(traces), "--program",
                       str(PROGRAMS / "parity.lat"), "--json", capsys=capsys)
    report = json.loads(out)
    assert report["certificate"]["scope"] == "exact" and report["equivalent"] is True
    code, _, err = lat("learn", "--traces", str(traces), "--max-len", "64", capsys=capsys)
    assert code == 1 and "at most 12 symbols" in err


def test_require_proven_fails_without_a_proof(tmp_path, capsys):
    program = str(PROGRAMS / "div3.lat")
    code, out, _ = lat("learn", program, "--require", "proven", "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["equivalence"]["method"] == "proven"
    code, out, err = lat("learn", program, "--no-exact", "--samples", "100", "--max-len",
                         "8", "--require", "proven", "--json", capsys=capsys)
    assert code == 1 and "--require proven" in err
    assert json.loads(out)["certificate"]["scope"] == "sampled"


def test_console_entry_point_has_no_traceback(tmp_path):
    bad = tmp_path / "bad.lat"
    bad.write_text("automaton x {\n  alphabet: a\n  states: p\n  start: p\n  p a => p\n}\n")
    result = subprocess.run([sys.executable, "-m", "lat", "check", str(bad)],
                            capture_output=True, text=True, timeout=120, env=CHILD_ENV)
    assert result.returncode == 2
    assert result.stderr.startswith(f"{bad}:5:") and "Traceback" not in result.stderr


def test_demo_runs(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lat", "demo"], capture_output=True,
                            text=True, timeout=300, cwd=tmp_path, env=CHILD_ENV)
    assert result.returncode == 0, result.stderr
    assert "equivalent" in result.stdout and "identifiable" in result.stdout


def test_machine_run_json_and_context_executor(tmp_path, capsys):
    from lat.compiler.interpret import run_machine

    machine = check_program(parse_program((PROGRAMS / "palindrome.lat").read_text(), "p")).get(
        None)
    code, out, _ = lat("run", str(PROGRAMS / "palindrome.lat"), "--input", "abba", "--json",
                       capsys=capsys)
    report, truth = json.loads(out), run_machine(machine, tuple("abba"))
    assert code == 0
    assert (report["output"], report["status"], report["final_state"], report["steps"]) == (
        truth.output, truth.status, truth.final_state, truth.steps)
    executor = tmp_path / "utm.safetensors"
    code, out, _ = lat("compile", str(PROGRAMS / "palindrome.lat"), "--program-in", "context",
                       "-o", str(executor), "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["tokens_per_step"] == 2
    # the executor remembers the program it was compiled from as its default prompt
    code, out, _ = lat("run", str(executor), "--input", "abba", "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["final_state"] == truth.final_state
    assert json.loads(out)["program"] == "palindrome"
    code, out, _ = lat("run", str(executor), "--program", str(PROGRAMS / "palindrome.lat"),
                       "--input", "abba", "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["final_state"] == truth.final_state


def test_machine_input_errors_are_one_line(capsys):
    for word, message in (("abcba", "unknown symbol 'c'"), ("ab" * 8, "longer than"),
                          ("a _ a", "blank symbol")):
        code, _, err = lat("run", str(PROGRAMS / "palindrome.lat"), "--input", word,
                           capsys=capsys)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1


def test_random_embedding_too_small_names_a_dimension(tmp_path, capsys):
    code, _, err = lat("compile", str(PROGRAMS / "capitals.lat"), "--embedding", "random",
                       "--dim", "3", "-o", str(tmp_path / "c.safetensors"), capsys=capsys)
    assert code == 2 and "--dim 4 is the smallest" in err
    assert err.startswith(f"{PROGRAMS / 'capitals.lat'}:")


# -- output paths ----------------------------------------------------------------------------


def test_output_paths_are_checked_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    program = tmp_path / "p.lat"
    program.write_text((PROGRAMS / "parity.lat").read_text())
    (tmp_path / "folder").mkdir()
    (tmp_path / "link.lat").symlink_to(program)
    before = program.read_bytes()
    cases = [
        (("compile", "p.lat", "-o", "p.lat"), "is the input file"),
        (("compile", "p.lat", "-o", str(program)), "is the input file"),
        (("compile", "link.lat", "-o", "p.lat"), "is the input file"),
        (("compile", "p.lat", "-o", "/nonexistent/x.safetensors"), "does not exist"),
        (("compile", "p.lat", "-o", "folder"), "is a directory"),
        (("trace", "p.lat", "-o", "p.lat"), "is the input file"),
        (("learn", "p.lat", "-o", "/nonexistent/x.safetensors"), "does not exist"),
        (("learn", "p.lat", "-o", "folder"), "is a directory"),
        (("compile", "p.lat", "-o", "/dev/null"), "not a regular file"),
    ]
    from lat import api as lat_api

    def no_work(*_args, **_kwargs):
        raise AssertionError("work started before the output path was checked")

    monkeypatch.setattr(lat_api, "load_model", no_work)
    monkeypatch.setattr(lat_api, "compile_file", no_work)
    for argv, message in cases:
        code, _, err = lat(*argv, capsys=capsys)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert program.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "link.lat", "p.lat"]
    assert list((tmp_path / "folder").iterdir()) == []


def test_artifacts_are_written_with_the_umask(tmp_path, capsys):
    old = os.umask(0o022)
    try:
        target = tmp_path / "p.safetensors"
        assert lat("compile", str(PROGRAMS / "parity.lat"), "-o", str(target),
                   capsys=capsys)[0] == 0
        assert target.stat().st_mode & 0o777 == 0o644
        os.umask(0o027)
        assert lat("compile", str(PROGRAMS / "parity.lat"), "-o", str(target),
                   capsys=capsys)[0] == 0
        assert target.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
    assert [p.name for p in tmp_path.iterdir()] == ["p.safetensors"]  # no temporary left


def test_a_failed_write_leaves_no_temporary(tmp_path, monkeypatch):
    from lat.runtime import storage
    from lat.runtime.errors import ArtifactError
    from tests.runtime_fixtures import mod3_counter

    def broken(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage.os, "replace", broken)
    with pytest.raises(ArtifactError, match="No space left"):
        mod3_counter().save(tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


# -- one verdict per question, inputs, detection by content ----------------------------------


def test_flags_that_do_not_apply_are_refused(tmp_path, capsys):
    parity, capitals = str(PROGRAMS / "parity.lat"), str(PROGRAMS / "capitals.lat")
    out = str(tmp_path / "x.safetensors")
    code, _, err = lat("compile", parity, "--embedding", "random", "--dim", "40", "-o", out,
                       capsys=capsys)
    assert code == 2 and "applies to memories only" in err and "an automaton" in err
    code, _, err = lat("compile", capitals, "--dim", "40", "-o", out, capsys=capsys)
    assert code == 2 and "--embedding random only" in err
    assert lat("compile", parity, "-o", out, capsys=capsys)[0] == 0
    for flags, message in ((("--name", "p"), "--name"), (("--program-in", "context"),
                           "--program-in"), (("--program-name", "p"), "give --program")):
        code, _, err = lat("run", out, "--input", "1", *flags, capsys=capsys)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1
    code, _, err = lat("verify", capitals, "--max-len", "3", capsys=capsys)
    assert code == 2 and "memory" in err
    code, _, err = lat("inspect", parity, "--dot", "--plot", str(tmp_path / "p.png"),
                       capsys=capsys)
    assert code == 2 and "one of them" in err


def test_verify_reports_the_effective_bound(capsys):
    code, out, _ = lat("verify", str(PROGRAMS / "busy.lat"), "--max-len", "20", "--json",
                       capsys=capsys)
    assert code == 0 and json.loads(out)["max_len"] == 8  # busy's tape has 8 cells
    code, out, _ = lat("verify", str(PROGRAMS / "capitals.lat"), "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["max_len"] == 1


def test_input_from_a_file_and_from_standard_input(tmp_path, capsys, monkeypatch):
    import io

    word = tmp_path / "word.txt"
    word.write_text("1101\n")
    code, out, _ = lat("run", str(PROGRAMS / "parity.lat"), "--input-file", str(word), "--json",
                       capsys=capsys)
    assert code == 0 and json.loads(out)["input"] == list("1101")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"new york\r\n")))
    code, out, _ = lat("run", str(PROGRAMS / "capitals.lat"), "--input", "-", "--json",
                       capsys=capsys)
    assert code == 0 and json.loads(out)["input"] == ["new york"]
    lines = tmp_path / "words.txt"
    lines.write_text("11\n\n0101\n1 0 1\n")
    code, out, _ = lat("verify", str(PROGRAMS / "parity.lat"), "--input-file", str(lines),
                       "--json", capsys=capsys)
    report = json.loads(out)
    assert code == 0 and report["checked"] == 4 and report["domain"] == "given"
    assert report["max_len"] == 4
    code, _, err = lat("run", str(PROGRAMS / "parity.lat"), "--input-file",
                       str(tmp_path / "absent"), capsys=capsys)
    assert code == 1 and "no such file" in err


def test_artifacts_and_programs_are_told_apart_by_content(tmp_path, capsys):
    source = (PROGRAMS / "parity.lat").read_text()
    for name in ("parity.txt", "PARITY.LAT", "parity"):
        (tmp_path / name).write_text(source)
        code, out, _ = lat("run", str(tmp_path / name), "--input", "11", "--json",
                           capsys=capsys)
        assert code == 0 and json.loads(out)["output"] == "accept", name
    artifact = tmp_path / "looks_like_a_program.lat"
    assert lat("compile", str(tmp_path / "parity.txt"), "-o", str(artifact),
               capsys=capsys)[0] == 0
    code, out, _ = lat("run", str(artifact), "--input", "1", "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["output"] == "reject"
    code, _, err = lat("check", str(artifact), capsys=capsys)
    assert code == 1 and "is a lat artifact" in err and len(err.strip().splitlines()) == 1
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)))
    code, _, err = lat("run", str(junk), "--input", "1", capsys=capsys)
    assert code == 1 and "neither a .lat program" in err and "nor a lat artifact" in err


def test_a_byte_order_mark_and_an_empty_file(tmp_path, capsys):
    bom = tmp_path / "bom.lat"
    bom.write_bytes(b"\xef\xbb\xbf" + (PROGRAMS / "parity.lat").read_bytes())
    assert lat("check", str(bom), capsys=capsys)[0] == 0
    empty = tmp_path / "empty.lat"
    empty.write_text("# nothing yet\n")
    code, _, err = lat("check", str(empty), capsys=capsys)
    assert code == 2 and err.startswith(f"{empty}:1:1: error: the file declares nothing")


def test_a_context_executor_without_a_remembered_program_asks_for_one(tmp_path, capsys):
    from lat.compiler import compile_source
    from lat.runtime.model import CompiledModel

    executor = compile_source((PROGRAMS / "palindrome.lat").read_text(),
                              placement="context").executor
    info = {k: v for k, v in executor.info.items() if k != "default_program"}
    path = tmp_path / "bare.safetensors"
    CompiledModel(executor.V, executor.Q, executor.interface, info=info).save(path)
    code, _, err = lat("run", str(path), "--input", "abba", capsys=capsys)
    assert code == 1 and "--program" in err
    other = tmp_path / "other.lat"  # --program overrides a remembered program
    other.write_text((PROGRAMS / "palindrome.lat").read_text().replace("yes", "ja"))
    executor_path = tmp_path / "utm.safetensors"
    lat("compile", str(PROGRAMS / "palindrome.lat"), "--program-in", "context", "-o",
        str(executor_path), capsys=capsys)
    code, out, _ = lat("run", str(executor_path), "--program", str(other), "--input", "aba",
                       "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["final_state"] == "ja"


# -- resource guards -------------------------------------------------------------------------

HUGE_MACHINE = """machine big {
  tape: a, _
  blank: _
  states: q, h
  start: q
  halt: h
  bound: steps 1000000000, tape TAPE
  q a -> a R q
  q _ -> a S h
}
"""


def test_sizes_are_estimated_and_refused_before_allocating(tmp_path, capsys):
    path = tmp_path / "big.lat"
    path.write_text(HUGE_MACHINE.replace("TAPE", "1000000000000"))
    for argv in (("check", str(path)), ("compile", str(path), "-o", str(tmp_path / "b.st")),
                 ("run", str(path), "--input", "a"), ("verify", str(path))):
        code, _, err = lat(*argv, capsys=capsys)  # refused before any array exists
        assert code == 2 and err.startswith(f"{path}:7:3: error: machine 'big'"), err
        assert "--max-memory" in err and "PiB" in err and "Traceback" not in err
    memory = tmp_path / "memo.lat"
    memory.write_text("memory memo {\n" + "".join(f"  k{i} -> v{i % 7}\n"
                                                  for i in range(50_000)) + "}\n")
    # one-hot tables this big are lowered sparse: MiB to build, not the 18.6 GiB dense
    code, out, _ = lat("check", str(memory), "--json", capsys=capsys)
    sizes = json.loads(out)["declarations"][0]["estimate"]
    assert code == 0 and sizes["d"] == 50_000 and sizes["peak_bytes"] < 1 << 30
    code, _, err = lat("check", str(memory), "--max-memory", "10M", capsys=capsys)
    assert code == 2 and "MiB" in err and "--max-memory" in err


def test_estimates_equal_the_compiled_sizes():
    from lat.compiler import compile_source
    from lat.compiler.lower import estimate

    for path in sorted(PROGRAMS.glob("*.lat")):
        for placement in ("weights", "context"):
            compilation = compile_source(path.read_text(), str(path), placement=placement)
            model, sizes = compilation.artifact, estimate(compilation.declaration, placement)
            assert (sizes.heads, sizes.d, sizes.d_out) == (model.heads, model.d, model.d_out)
            assert sizes.weight_bytes == model.V.numel() * 4 + model.Q.numel() * 4


def test_steps_are_bounded_by_max_steps(tmp_path, capsys):
    path = tmp_path / "big.lat"
    path.write_text(HUGE_MACHINE.replace("TAPE", "8"))
    code, out, _ = lat("run", str(path), "--input", "aa", "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["status"] == "halted"  # stops long before its bound
    code, _, err = lat("run", str(path), "--input", "aa", "--max-steps", "2", capsys=capsys)
    assert code == 1 and "--max-steps 2" in err and "no answer" in err
    code, _, err = lat("verify", str(path), capsys=capsys)
    assert code == 1 and "1,000,000,000 steps" in err and "--max-steps" in err
    code, _, err = lat("run", str(PROGRAMS / "parity.lat"), "--input", "1" * 50,
                       "--max-steps", "10", capsys=capsys)
    assert code == 1 and "up to 50 steps" in err
    code, _, err = lat("trace", str(PROGRAMS / "parity.lat"), "--max-len", "10000000", "-o",
                       str(tmp_path / "t.safetensors"), capsys=capsys)
    assert code == 1 and "--max-steps" in err


# -- start-up --------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["check", str(PROGRAMS / "parity.lat")], ["--help"],
                                  ["check", "--help"], ["run", "--help"]])
def test_check_and_help_import_neither_torch_nor_numpy(argv):
    code = (f"import sys\nfrom lat.cli import main\ntry:\n    main({argv!r})\n"
            "except SystemExit:\n    pass\n"
            "heavy = sorted(m for m in ('torch', 'numpy') if m in sys.modules)\n"
            "print('HEAVY', heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, env=CHILD_ENV)
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr


def test_experiment_names_are_read_without_importing_the_registry():
    from lat.cli import EXPERIMENT_NAMES
    from lat.experiments import EXPERIMENTS

    assert tuple(EXPERIMENTS) == EXPERIMENT_NAMES


def test_an_unknown_kernel_is_a_usage_error(capsys):
    code, _, err = lat("run", str(PROGRAMS / "parity.lat"), "--input", "1", "--kernel", "x",
                       capsys=capsys)
    assert code == 2 and "choose from" in err and "chunked" in err


def test_ctrl_c_ends_a_long_run_in_one_line(tmp_path):
    import signal

    path = tmp_path / "loop.lat"
    path.write_text(HUGE_MACHINE.replace("TAPE", "8").replace("q _ -> a S h", "q _ -> a L q")
                    .replace("q a -> a R q", "q a -> a L q"))
    child = subprocess.Popen([sys.executable, "-m", "lat", "run", str(path), "--input", "",
                              "--max-steps", "10000000"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=CHILD_ENV)
    time.sleep(6)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 130 and err == "lat: interrupted\n" and out == ""


def test_learned_artifact_shows_its_certificate(tmp_path, capsys):
    learned = tmp_path / "learned.safetensors"
    code, _, _ = lat("learn", str(PROGRAMS / "parity.lat"), "-o", str(learned), "--json",
                     capsys=capsys)
    assert code == 0
    code, out, _ = lat("inspect", str(learned), capsys=capsys)
    assert code == 0 and "exact: every word over {0, 1} of every length" in out
    code, out, err = lat("run", str(learned), "--input", "1101", capsys=capsys)
    assert code == 0 and "certified: proven over every word" in out and not err
    assert re.search(r"up to\s+[\d,]+\s+symbols", out)  # the proof's length bound is named
    sampled = tmp_path / "sampled.safetensors"
    lat("learn", str(PROGRAMS / "parity.lat"), "--no-exact", "--samples", "50", "--max-len",
        "6", "-o", str(sampled), "--json", capsys=capsys)
    code, out, err = lat("run", str(sampled), "--input", "1101", "--json", capsys=capsys)
    report = json.loads(out)
    assert report["certified"] is False and "sampled inputs" in report["certified_reason"]
    assert err.startswith("warning: outside the learned model's certificate")
    assert "longer than any input" not in report["certified_reason"]
    code, out, err = lat("run", str(sampled), "--input", "1" * 9, "--json", capsys=capsys)
    reason = json.loads(out)["certified_reason"]  # past the sampled lengths: said first
    assert reason.startswith("the input has 9 symbols, longer than any input the "
                             "certificate speaks of (≤ 6)") and "sampled inputs" in reason


# -- errors: the project's own in one line, anything else as the bug it is -------------------


@pytest.mark.parametrize("slip", [ZeroDivisionError("an internal slip"),
                                  ValueError("an internal slip")])
def test_a_bug_is_reported_as_a_bug_not_as_a_user_error(slip, capsys, monkeypatch):
    from lat import cli

    def broken(_args):
        raise slip

    monkeypatch.setitem(cli.HANDLERS, "check", broken)
    code, _, err = lat("check", str(PROGRAMS / "parity.lat"), capsys=capsys)
    assert code == cli.BUG_EXIT == 70
    assert "Traceback" in err and f"{type(slip).__name__}: an internal slip" in err
    assert err.rstrip().splitlines()[-1] == ("lat: this is a bug in lat; please report it "
                                             "with the command above")


def test_a_file_problem_is_one_line(capsys, monkeypatch):
    from lat import cli

    def unwritable(_args):
        raise PermissionError(13, "Permission denied", "/results/parity.json")

    monkeypatch.setitem(cli.HANDLERS, "check", unwritable)
    code, _, err = lat("check", str(PROGRAMS / "parity.lat"), capsys=capsys)
    assert (code, err) == (1, "lat: error: /results/parity.json: Permission denied\n")


def test_cuda_without_a_gpu_is_one_line(capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("checks the CPU-only message")
    for argv in (["run", str(PROGRAMS / "parity.lat"), "--input", "1", "--device", "cuda"],
                 ["bench", "--quick", "--device", "cuda"]):
        code, _, err = lat(*argv, capsys=capsys)
        assert code == 1 and err == ("lat: error: --device cuda: torch sees no CUDA device on "
                                     "this machine\n")
