"""`report` on hostile results files (issue 11): never a traceback, never a malformed line graded.

Every line is read on its own: a line that is not UTF-8, not JSON, nested too
deeply, too long, or a record that breaks the Record contract is *malformed*:
counted, named with its file and line number, left out of every figure, and the
command says so (``warning:`` on stderr, a banner and a section in the page).
Files that cannot be reported at all (missing, a directory, empty, only an
environment line) are an ``error:`` and exit 2. The fuzz test mutates a valid
file hundreds of ways and checks exactly that.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.records import MAX_LINE_BYTES, Record, check_record, read_jsonl
from harness.report import build_model, render_html
from tests.conftest import ROOT
from tests.report_data import synthetic_records

ENV = {"kind": "environment", "hostname": "fuzz-host", "run": "run-1"}
END = {"kind": "run-end", "completed": True, "records": 0}


def valid_lines(n_cases: int = 1) -> list[bytes]:
    """Record lines (bytes, no newline) that pass the contract: ``n_cases * 80`` of them."""
    return [json.dumps(r.to_json()).encode() for r in synthetic_records(n_cases, seed=7)]


def write(path: Path, body: list[bytes], *, env: dict[str, Any] | None = ENV, end: bool = True) -> Path:
    lines = ([json.dumps(env).encode()] if env is not None else []) + body
    if end:
        lines.append(json.dumps({**END, "records": len(body), "verdicts": tally(body), "known_bugs": tally(body, "known_bug"),
                                 "load_errors": 0}).encode())
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def tally(body: list[bytes], known_bug: str = "") -> Any:
    """The run-end line's ``verdicts`` of ``body`` (as :func:`harness.records.run_end` counts them; a completed run's
    run-end line without them fails, helper-146); lines that are not records are left out. With ``known_bug``: the
    count of records that carry one (``known_bugs``)."""
    out: dict[str, int] = {}
    bugs = 0
    for raw in body:
        try:
            d = json.loads(raw)
        except (ValueError, RecursionError):
            continue
        # (a verdict that is no verdict name makes its line malformed, and the tally is then not compared: left out,
        # so that the run-end line stays a well-formed one)
        if (isinstance(d, dict) and d.get("kind", "record") == "record" and isinstance(d.get("verdict"), str)
                and d["verdict"].isascii() and d["verdict"].replace("-", "").isalpha()):
            out[d["verdict"]] = out.get(d["verdict"], 0) + 1
            bugs += bool(d.get("known_bug"))
    return bugs if known_bug else out


def base() -> dict[str, Any]:
    return {"case": "c", "implementation": "impl", "device": "cpu", "dtype": "float32", "quantity": "grad_W",
            "step": 1, "verdict": "agree", "bound_ratio": 0.01, "bits_of_error": 1.0}


def line(**changes: Any) -> bytes:
    return json.dumps({**base(), **changes}).encode()


def full_line(**changes: Any) -> bytes:
    """:func:`line` with every other field of a Record at its default, as ``check`` writes each record: a record without
    a field fails ``report --exit-status`` (helper-181)."""
    blank = Record(**{k: base()[k] for k in ("case", "implementation", "device", "dtype", "quantity", "step", "verdict")})
    return json.dumps({**blank.to_json(), **base(), **changes}).encode()


def deep(n: int = 100_000) -> bytes:
    return b"[" * n + b"]" * n


#: The lines of issue 11 (each crashed `report`), and more of the same family. Each must be malformed.
HOSTILE: dict[str, bytes] = {
    "bogus verdict": line(verdict="bogus"),
    "verdict null": line(verdict=None),
    "verdict a list": line(verdict=["agree"]),
    "step a string": line(step="x"),
    "step a float": line(step=1.5),
    "step negative": line(step=-1),
    "step a bool": line(step=True),
    "step huge": line(step=2**80),
    "case a number": line(case=3),
    "implementation a list": line(implementation=["a"]),
    "device null": line(device=None),
    "dtype an object": line(dtype={"a": 1}),
    "quantity a number": line(quantity=0),
    "message a list": line(message=["boom"]),
    "repro a number": line(repro=1),
    "shape of strings": line(shape=["4", "2"]),
    "shape nested": line(shape=[[4], [2]]),
    "worst_index a string": line(worst_index="0,1"),
    "counts of strings": line(counts={"agree": "3"}),
    "counts a list": line(counts=[1, 2]),
    "tags of numbers": line(tags=[1]),
    "bits a word": line(bits_of_error="lots"),
    "bound_ratio an object": line(bound_ratio={"x": 1}),
    "tf32 a string": line(tf32="yes"),
    "exact a number": line(exact=1.5),
    "kind a list": line(kind=["record"]),
    "missing verdict": json.dumps({k: v for k, v in base().items() if k != "verdict"}).encode(),
    "missing case": json.dumps({k: v for k, v in base().items() if k != "case"}).encode(),
    "an empty object": b"{}",
    "a JSON list": b"[1, 2, 3]",
    "a JSON string": b'"record"',
    "JSON null": b"null",
    "nested deeply": deep(),
    "nested deeply in a field": b'{"case": ' + deep() + b"}",
    "a lone surrogate escape": line(case="\ud800"),
    "a lone surrogate in an unknown key": line(note="x\udfff"),
    "not UTF-8": line(case="caf\u00e9").replace(b"\\u00e9", b"\xe9"),
    "a lone 0xff byte": b"\xff",
    "truncated": line()[:40],
    "binary junk": bytes(range(256)).replace(b"\n", b""),
    "huge integer digits": b'{"case": "c", "step": ' + b"9" * 5000 + b"}",
    "too long": line(message="x" * (MAX_LINE_BYTES + 10)),
}


def test_check_record_accepts_the_contract_and_converts_non_finite_strings():
    kw = check_record({**base(), "verdict": "disagree", "max_abs_error": "inf", "bound_ratio": "nan", "max_ulp_error": 3, "shape": [4, 2],
                       "counts": {"agree": 8}, "tags": ["t"], "tf32": None, "exact": "inf", "unknown_key": [1, {"x": None}]})
    assert kw["max_abs_error"] == float("inf") and kw["bound_ratio"] != kw["bound_ratio"]
    assert kw["max_ulp_error"] == 3.0 and isinstance(kw["max_ulp_error"], float)
    assert kw["exact"] == "inf" and "unknown_key" not in kw  # a string field keeps its string; unknown keys ignored
    rec = Record.from_json({**base(), "case": "nan", "message": "inf"}, known_verdict=True)
    assert (rec.case, rec.message) == ("nan", "inf")  # ids are never turned into floats
    assert rec.shape == [] and rec.counts == {} and rec.tags == []
    assert rec.shape is not Record.from_json(base()).shape  # fresh defaults per record


def test_every_record_field_has_a_contract_check():
    import dataclasses

    from harness.records import _CHECKS, UNCHECKED_FIELDS

    assert set(_CHECKS) == {f.name for f in dataclasses.fields(Record)}
    assert UNCHECKED_FIELDS == [], "add a check for these Record fields' annotations to harness.records._CHECKERS"


@pytest.mark.parametrize("what", list(HOSTILE))
def test_each_hostile_line_is_malformed_and_the_rest_is_counted(what, tmp_path):
    good = [line(case=f"c{i}") for i in range(4)]
    path = write(tmp_path / "r.jsonl", [good[0], good[1], HOSTILE[what], good[2], good[3]])
    res = read_jsonl(path)
    assert len(res.records) == 4 and [r.case for r in res.records] == ["c0", "c1", "c2", "c3"]
    assert res.malformed_count == 1 and res.malformed[0].line == 4, res.warnings
    assert str(res.malformed[0]).startswith(f"{path}:4: skipped")
    model = build_model([path])
    assert model.malformed_total == 1 and len(model.records) == 4 and model.counts == {"agree": 4}


def test_cli_reports_hostile_lines_with_a_warning_a_banner_and_a_section(tmp_path, capsys):
    body = valid_lines()[:20] + list(HOSTILE.values())
    path = write(tmp_path / "hostile.jsonl", body)
    out = tmp_path / "r.html"
    assert main(["report", str(path), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {len(HOSTILE)} malformed line(s) in {path} left out of the report" in err
    assert f"{path}:22: skipped" in err  # the first hostile line, named with its line number
    assert "Traceback" not in err
    html = out.read_text()
    assert 'id="malformed-banner"' in html and f"<strong>{len(HOSTILE)} malformed lines</strong>" in html
    section = html[html.index('<section id="malformed"'):]
    section = section[:section.index("</section>")]
    assert section.count("<tr><td><code>") == len(HOSTILE)
    assert "<strong>20 records</strong>" in html  # only the valid lines are graded


def test_a_non_utf8_line_skips_that_line_not_the_file(tmp_path):
    good = valid_lines()[:10]
    path = write(tmp_path / "r.jsonl", [*good[:5], b'{"case": "\xe9"}', *good[5:]])
    res = read_jsonl(path)
    assert len(res.records) == 10 and res.malformed_count == 1 and "not UTF-8" in res.malformed[0].reason


def test_a_byte_order_mark_on_the_first_line_is_fine(tmp_path):
    path = write(tmp_path / "r.jsonl", valid_lines()[:3])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    res = read_jsonl(path)
    assert len(res.environments) == 1 and len(res.records) == 3 and not res.malformed


def test_an_overlong_line_is_skipped_without_reading_it_whole(tmp_path):
    big = b'{"case": "' + b"x" * (3 * MAX_LINE_BYTES) + b'"}'
    path = write(tmp_path / "r.jsonl", [line(), big, line(case="after")])
    res = read_jsonl(path)
    assert [r.case for r in res.records] == ["c", "after"]
    assert res.malformed_count == 1 and res.malformed[0].line == 3 and "longer than" in res.malformed[0].reason
    # a last line that long without a newline is skipped too
    path.write_bytes(path.read_bytes() + big)
    assert read_jsonl(path).malformed_count == 2


@pytest.mark.parametrize("content, why", [
    (b"", "an empty file"),
    (b"\n\n  \n", "an empty file"),
    (json.dumps(ENV).encode() + b"\n", "only an environment line"),
    (json.dumps(ENV).encode() + b"\n" + json.dumps({**END, "records": 0}).encode() + b"\n", "only an environment line"),
    (b"\xff\xfe\n{]\n", "2 malformed line(s)"),
])
def test_a_file_with_no_record_is_a_clear_error(tmp_path, capsys, content, why):
    path = tmp_path / "r.jsonl"
    path.write_bytes(content)
    assert main(["report", str(path), "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert f"error: no records to report ({path}: {why}" in err and "Traceback" not in err
    assert not (tmp_path / "r.html").exists()


def test_a_missing_file_or_a_directory_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "r.html")]) == 2
    assert f"error: {tmp_path / 'nope.jsonl'}: results file not found" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "-o", str(tmp_path / "r.html")]) == 2
    assert f"error: {tmp_path}: is a directory, not a results file" in capsys.readouterr().err


def test_an_empty_file_among_good_ones_is_a_warning(tmp_path, capsys):
    good = write(tmp_path / "good.jsonl", valid_lines()[:5])
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert main(["report", str(good), str(empty), "-o", str(tmp_path / "r.html")]) == 0
    assert f"warning: {empty}: no records (an empty file)" in capsys.readouterr().err


def test_run_footer_completed_interrupted_and_unknown_kinds(tmp_path, capsys):
    cases = valid_lines(4)  # each file's records grade other cases (records graded twice are a warning of their own)
    body, body2, body3, body4 = (cases[80 * i:80 * i + 6] for i in range(4))
    done = write(tmp_path / "done.jsonl", body)
    cut = write(tmp_path / "cut.jsonl", body2, env={**ENV, "run": "run-2"}, end=False)  # (four runs: one run read twice
    failed = write(tmp_path / "failed.jsonl", body3, env={**ENV, "run": "run-3"}, end=False)  # is a warning of its own)
    with failed.open("ab") as fh:
        fh.write(json.dumps({"kind": "run-end", "completed": False, "records": 6}).encode() + b"\n")
    odd = write(tmp_path / "odd.jsonl", [body4[0], b'{"kind": "progress", "done": 3}', b'{"kind": "progress"}', body4[1]],
                env={**ENV, "run": "run-4"})
    assert read_jsonl(done).status == "completed" and read_jsonl(done).runs[0].run == "run-1"
    assert read_jsonl(cut).status == "interrupted or still running"
    assert read_jsonl(failed).status == "incomplete"
    res = read_jsonl(odd)
    # unknown kinds are a note, not malformed; the footer's count (2 records) matches
    assert len(res.records) == 2 and res.malformed_count == 0 and res.completed
    assert res.notes == [f"{odd}: skipped 2 line(s) of kind 'progress', unknown to this version (lines 3, 4)"]

    out = tmp_path / "r.html"
    assert main(["report", str(done), str(cut), str(failed), str(odd), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {cut}:1: run 'run-2' has no run-end line" in err and "interrupted or still running" in err
    assert f"warning: {failed}:1: run 'run-3' ended without completing" in err
    assert f"note: {odd}: skipped 2 line(s) of kind 'progress'" in err
    assert f"{done}" not in err
    html = out.read_text()
    banner = html[html.index('id="unfinished"'):]
    banner = banner[:banner.index("</div>")]
    assert "2 results files from a run that did not complete" in banner
    assert str(cut) in banner and str(failed) in banner and str(done) not in banner
    files = html[html.index('id="files"'):html.index("</table>", html.index('id="files"'))]
    assert files.count("completed</td>") == 2 and "(run run-1)" in files


def test_a_footer_that_miscounts_is_a_warning(tmp_path):
    path = write(tmp_path / "r.jsonl", valid_lines()[:4], end=False)
    with path.open("ab") as fh:
        fh.write(json.dumps({"kind": "run-end", "completed": True, "records": 9}).encode() + b"\n")
    res = read_jsonl(path)
    assert any("its run-end line counts 9 record(s); the file holds 4" in w for w in res.warnings)
    path.write_bytes(path.read_bytes() + b'{"kind": "run-end", "completed": "yes"}\n')
    assert read_jsonl(path).malformed_count == 1


def test_a_non_utf8_file_name_and_title_render(tmp_path, capsys):
    path = write(tmp_path / "r.jsonl", valid_lines()[:3])
    out = tmp_path / "r.html"
    assert main(["report", str(path), "-o", str(out), "--title", "t\udcff"]) == 0  # argv's surrogateescape
    assert "t\ufffd" in out.read_text() or "t?" in out.read_text()


def test_hostile_environment_values_render(tmp_path):
    env = {"kind": "environment", "hostname": ["a", {"b": [1, 2]}], "cpu_count": {"x": 1}, "argv": [1, None],
           "deep": json.loads(b"[" * 500 + b"]" * 500), "long": "y" * 10_000, "run": {"id": 1}}
    path = write(tmp_path / "r.jsonl", valid_lines()[:3], env=env)
    html = render_html(build_model([path]))
    assert "y" * 397 + "..." in html and "y" * 401 not in html


# --- the fuzz test -------------------------------------------------------------------------------------

POOL: list[Any] = [None, 0, -1, 1.5, 2**70, "", "x", "inf", "nan", True, [], [1], ["a"], [[1]], {}, {"a": 1},
                   {"a": {"b": [None]}}, "\u0000", "\ud800", float("1e308")]


def _mutate(rng: random.Random, raw: bytes) -> bytes:
    """One hostile mutation of a valid record line."""
    op = rng.randrange(12)
    if op <= 3:  # a type swap, a null or a bogus value in a random field
        obj = json.loads(raw)
        key = rng.choice(sorted(obj))
        obj[key] = rng.choice(POOL)
        return json.dumps(obj).encode()
    if op == 4:  # a field removed
        obj = json.loads(raw)
        del obj[rng.choice(sorted(obj))]
        return json.dumps(obj).encode()
    if op == 5:  # a bogus verdict
        obj = json.loads(raw)
        obj["verdict"] = rng.choice(["bogus", "AGREE", "agree ", "pass", 1, None, ["agree"]])
        return json.dumps(obj).encode()
    if op == 6:  # a nested structure in a field, or a whole line nested
        obj = json.loads(raw)
        depth = rng.choice([3, 50, 5000, 200_000])
        if depth > 1000:
            return b"[" * depth + b"]" * depth if rng.random() < 0.5 else b'{"case":' + b"[" * depth + b"]" * depth + b"}"
        nested: Any = "leaf"
        for _ in range(depth):
            nested = [nested] if rng.random() < 0.5 else {"k": nested}
        obj[rng.choice(sorted(obj))] = nested
        return json.dumps(obj).encode()
    if op == 7:  # random bytes in the middle
        i = rng.randrange(len(raw))
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8))).replace(b"\n", b"")
        return raw[:i] + junk + raw[i:]
    if op == 8:  # truncated
        return raw[: rng.randrange(len(raw))]
    if op == 9:  # a byte that is not UTF-8
        i = rng.randrange(len(raw))
        return raw[:i] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80"]) + raw[i:]
    if op == 10:  # not an object, or an unknown kind
        return rng.choice([b"[]", b"3", b'"x"', b"null", b"true", b'{"kind": "telemetry"}', b'{"kind": 5}'])
    obj = json.loads(raw)  # JSON's non-finite literals and number edge cases
    obj[rng.choice(["max_abs_error", "bound_ratio", "bits_of_error", "step"])] = rng.choice(
        [float("inf"), float("nan"), -0.0, 10**30, -(10**30)])
    return json.dumps(obj).encode()


def _accounted(path: Path) -> tuple[int, int, int]:
    res = read_jsonl(path)
    return len(res.records), res.malformed_count, sum(int(n.split(" skipped ")[1].split()[0]) for n in res.notes)


@pytest.mark.parametrize("seed", range(12))
def test_fuzz_hundreds_of_hostile_mutations(seed, tmp_path, capsys):
    rng = random.Random(seed)
    good = valid_lines()
    body: list[bytes] = []
    mutated: dict[int, bytes] = {}  # line number -> mutated line
    for raw in good:
        if rng.random() < 0.35:
            bad = _mutate(rng, raw)
            body.append(bad)
            mutated[len(body) + 1] = bad  # + 1: the environment line is line 1
        else:
            body.append(raw)
    path = write(tmp_path / f"fuzz{seed}.jsonl", body)
    res = read_jsonl(path)
    n_records, n_bad, n_notes = _accounted(path)
    untouched = len(good) - len(mutated)
    # every valid line still counts; every line is accounted for exactly once
    blank = sum(1 for b in body if not b.strip())
    assert n_records + n_bad + n_notes + blank == len(body)
    assert n_records >= untouched
    bad_lines = {m.line for m in res.malformed}
    assert bad_lines <= set(mutated), "an untouched line was called malformed"
    for lineno, raw in mutated.items():
        # a mutated line is either malformed or passes the contract: never a half-read record
        if lineno in bad_lines:
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError):
            pytest.fail(f"line {lineno} is not JSON yet was not called malformed: {raw[:80]!r}")
        if obj.get("kind", "record") == "record":
            check_record(obj)  # raises if it should have been malformed
    for r in res.records:
        assert isinstance(r.case, str) and isinstance(r.step, int) and r.verdict in (
            "agree", "unsupported", "overflow", "suspect", "invalid-input", "disagree", "error")

    if seed % 2 == 0:  # the whole command, in-process (the figures make it slower)
        code = main(["report", str(path), "-o", str(tmp_path / "r.html")])
        err = capsys.readouterr().err
        assert code in (0, 2)
        assert "Traceback" not in err
        if n_bad:
            assert f"warning: {n_bad} malformed line(s)" in err


def test_no_traceback_from_the_command_on_a_file_of_junk(tmp_path):
    rng = random.Random(11)
    good = valid_lines()
    body = [_mutate(rng, raw) if i % 2 else raw for i, raw in enumerate(good)]
    body += [bytes(rng.randrange(256) for _ in range(200)).replace(b"\n", b"") for _ in range(20)]
    path = write(tmp_path / "junk.jsonl", body, end=False)
    junk_only = tmp_path / "junk-only.jsonl"
    junk_only.write_bytes(b"\n".join(bytes(rng.randrange(256) for _ in range(100)).replace(b"\n", b"") for _ in range(50)))
    for target, codes in ((path, (0,)), (junk_only, (2,))):
        proc = subprocess.run([sys.executable, "-m", "harness", "report", str(target), "-o", str(tmp_path / "r.html")],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode in codes, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
        assert ("warning:" if proc.returncode == 0 else "error:") in proc.stderr


def test_one_run_read_twice_is_named(tmp_path, capsys):
    """helper-66: ``report r.jsonl r.jsonl`` (or a copy of a file beside it) counted every record twice, silently. The
    run's id, read a second time, is now a warning naming both files."""
    path = write(tmp_path / "a.jsonl", valid_lines()[:20])
    copy = write(tmp_path / "b.jsonl", valid_lines()[:20])
    out = tmp_path / "r.html"
    assert main(["report", str(path), str(copy), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"{copy}: run run-1 was read already (from {path}): its records are counted twice" in err
    other = write(tmp_path / "c.jsonl", valid_lines()[:20], env={**ENV, "run": "run-2"})
    assert main(["report", str(path), str(other), "-o", str(out)]) == 0
    assert "read already" not in capsys.readouterr().err


def test_a_shard_without_the_others_is_named(tmp_path, capsys):
    """helper-66: ``report`` of the results of ``check --shard 1/2`` alone looked like a whole run (every case of
    shard 2 absent, nothing said). The shards missing from a run split with ``--shard K/N`` are now a warning; all of
    them, or a run without shards, say nothing; a shard value edited into nonsense is not one."""
    one = write(tmp_path / "s1.jsonl", valid_lines()[:20], env={**ENV, "shard": "1/3"})
    two = write(tmp_path / "s2.jsonl", valid_lines()[:20], env={**ENV, "run": "run-2", "shard": "2/3"})
    three = write(tmp_path / "s3.jsonl", valid_lines()[:20], env={**ENV, "run": "run-3", "shard": "3/3"})
    out = tmp_path / "r.html"
    assert main(["report", str(one), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "shards 2/3, 3/3 of a run split with --shard K/3 are not among the files read (only 1/3)" in err
    assert "shards 2/3, 3/3" in out.read_text()
    assert main(["report", str(one), str(three), "-o", str(out)]) == 0
    assert "shard 2/3 of a run split with --shard K/3 is not among the files read (only 1/3, 3/3)" in capsys.readouterr().err
    assert main(["report", str(one), str(two), str(three), "-o", str(out)]) == 0
    assert "not among the files read" not in capsys.readouterr().err
    plain = write(tmp_path / "plain.jsonl", valid_lines()[:20], env={**ENV, "run": "run-4"})
    odd = write(tmp_path / "odd.jsonl", valid_lines()[:20], env={**ENV, "run": "run-5", "shard": "7/2"})
    assert main(["report", str(plain), str(odd), "-o", str(out)]) == 0
    assert "not among the files read" not in capsys.readouterr().err


def test_a_lone_surrogate_is_written_as_text_and_read_back(tmp_path):
    """helper-79: a plug-in's exception text (or a case file's path) holding an undecodable byte, kept by Python as a
    lone surrogate, was written as JSON's ``\\udcff`` escape; the reader rightly found each such line malformed, and a
    run's failures were missing from every count of its report. Every writer now writes it as its escape in words."""
    from harness.records import ResultsStream, encode_line, write_jsonl

    bad = "cannot open /data/" + b"\xff.bin".decode("utf-8", "surrogateescape")
    rec = Record(case="c" + bad[-5:], implementation="i", device="cpu", dtype="float32", quantity="*", step=0,
                 verdict="error", message=bad)
    env = {**ENV, "command": "check --results r" + b"\xfe".decode("utf-8", "surrogateescape") + ".jsonl"}
    written = write_jsonl(tmp_path / "w.jsonl", [rec], env=env, footer={**END, "run": "run-1", "records": 1, "verdicts": {"error": 1},
                                                                           "known_bugs": 0, "load_errors": 0})
    stream = ResultsStream(tmp_path / "s.jsonl", dict(env))
    stream.add([rec])
    streamed = stream.finish([rec])
    for path in (written, streamed):
        res = read_jsonl(path)
        assert res.malformed_count == 0 and not res.warnings, res.warnings
        assert [r.message for r in res.records] == ["cannot open /data/\\udcff.bin"]
        assert res.records[0].verdict == "error" and res.environments[0]["command"].endswith("r\\udcfe.jsonl")
    # text that UTF-8 can carry is written as before (an astral character is a valid pair of escapes)
    assert json.loads(encode_line({"m": "\u00e9 \U0001f600"})) == {"m": "\u00e9 \U0001f600"}
    stream.close()


def test_a_lone_surrogate_in_a_check_run_keeps_the_failure(tmp_path, capsys):
    """helper-79's run: a plug-in raising an error whose text holds an undecodable byte; ``check`` exits 1 and the
    report built from its results file counts the error (it showed 0 records)."""
    plugin = tmp_path / "sur.py"
    plugin.write_text(
        "import harness\n\n"
        "@harness.implementation(name='sur', framework='numpy')\n"
        "def sur(X, y, W, b, lr, steps=1, reduction='sum'):\n"
        "    raise RuntimeError('cannot open ' + b'/data/\\xff.bin'.decode('utf-8', 'surrogateescape'))\n")
    results = tmp_path / "s.jsonl"
    code = main(["check", "--cases", str(ROOT / "cases" / "seed.toml"), "--case", "seed", "--dtypes", "float32",
                 "--devices", "cpu", "--plugin", str(plugin), "--implementations", "sur", "--results", str(results),
                 "--report", "none"])
    assert code == 1
    res = read_jsonl(results)
    assert res.malformed_count == 0 and [r.verdict for r in res.records] == ["error"]
    assert "/data/\\udcff.bin" in res.records[0].message
    capsys.readouterr()
    model = build_model([results])
    assert model.counts == {"error": 1} and model.malformed_total == 0


@pytest.mark.parametrize("edit, why", [
    ({"verdict": "agree", "counts": {"agree": 7, "disagree": 1}, "bound_ratio": 5.1e5}, "1 of its elements are disagree"),
    ({"verdict": "agree", "counts": {"agree": 8}, "bound_ratio": 5.1e5}, "its bound_ratio, 510000, is above 1"),
    ({"verdict": "suspect", "counts": {"suspect": 8}, "bound_ratio": 3.0}, "its bound_ratio, 3, is above 1"),
    ({"verdict": "agree", "expected_ratio": 2.5}, "its expected_ratio, 2.5, is above 1"),
    ({"verdict": "overflow", "counts": {"overflow": 1, "suspect": 2}}, "2 of its elements are suspect"),
    ({"verdict": "agree", "counts": {"agree": 1, "bogus": 1}}, "1 of its elements are bogus"),
    ({"verdict": "agree", "quantity": "*", "counts": {}, "bound_ratio": None}, "a whole-run record (quantity '*') grades no"),
    ({"verdict": "unsupported", "counts": {"agree": 1, "disagree": 2}}, "2 of its elements are disagree"),
    # helper-94: disagree edited to agree, its ratios and counts removed or NaN, its worst element's figures left
    ({"verdict": "agree", "counts": {"agree": 1}, "bound_ratio": None, "expected_ratio": None, "abs_error_at_worst": 1.4,
      "rigorous_bound": 2.5e-6}, "its worst element's error, 1.4, is above its rigorous bound, 2.5e-06"),
    ({"verdict": "suspect", "bound_ratio": None, "abs_error_at_worst": 1e-30, "rigorous_bound": 0.0},
     "its worst element's error, 1e-30, is above its rigorous bound, 0"),
    ({"verdict": "agree", "expected_ratio": None, "abs_error_at_worst": 0.5, "rigorous_bound": 1.0, "expected_bound": 0.25},
     "its worst element's error, 0.5, is above its expected bound, 0.25"),
    ({"verdict": "agree", "bound_ratio": "nan"}, "its bound_ratio is NaN"),
    ({"verdict": "suspect", "rigorous_bound": "nan", "abs_error_at_worst": 3.0}, "its rigorous_bound is NaN"),
    # helper-96: the error set to inf, which _beyond's finite test skipped
    ({"verdict": "agree", "abs_error_at_worst": "inf", "bound_ratio": None}, "its worst element's error is infinite"),
    ({"verdict": "suspect", "abs_error_at_worst": "inf", "rigorous_bound": 1e-3}, "its worst element's error is infinite"),
])
def test_a_verdict_that_contradicts_its_own_figures_is_malformed(edit, why, tmp_path, capsys):
    """helper-79: every ``disagree`` of a results file edited to ``agree``, its bound ratio (5.1e5), counts and message
    left as they were, was reported as 40 records, 40 agree. A verdict less severe than its own counts or ratios say
    (:func:`harness.verdicts.contradiction`) makes the line malformed, named with its file and line."""
    path = write(tmp_path / "r.jsonl", [line(case="c0"), line(case="c1", **edit), line(case="c2")])
    res = read_jsonl(path)
    assert [r.case for r in res.records] == ["c0", "c2"] and res.malformed_count == 1
    assert str(res.malformed[0]).startswith(f"{path}:3: skipped a malformed record: its verdict {edit['verdict']!r} "
                                            f"contradicts its own figures: {why}")
    assert main(["report", str(path), "-o", str(tmp_path / "r.html")]) == 0
    assert "contradicts its own figures" in capsys.readouterr().err


@pytest.mark.parametrize("fields", [
    {"verdict": "disagree", "counts": {"agree": 8}, "bound_ratio": 0.2},  # --repeat: runs that differ (harness.repeat)
    {"verdict": "error", "counts": {}, "bound_ratio": None},
    {"verdict": "suspect", "counts": {"agree": 6, "suspect": 2}, "bound_ratio": 1.0, "expected_ratio": 1.7},
    {"verdict": "agree", "counts": {"agree": 8}, "bound_ratio": 1.0, "expected_ratio": 1.0},
    {"verdict": "overflow", "counts": {"agree": 3, "overflow": 1}, "bound_ratio": "inf"},
    {"verdict": "unsupported", "counts": {"agree": 1, "overflow": 2}, "bound_ratio": None},  # a model's, no exact value
    {"verdict": "error", "quantity": "*", "counts": {}, "bound_ratio": None},
    # an exact value beyond float64's range, its error not measurable, within a bound above 2**970: suspect
    {"verdict": "suspect", "counts": {"suspect": 1}, "bound_ratio": 1.0, "abs_error_at_worst": "inf", "rigorous_bound": 1e300},
    # an exact reduction (bound 0) computed exactly; an error the ratio rounds to 1
    {"verdict": "agree", "counts": {"agree": 1}, "bound_ratio": 0.0, "abs_error_at_worst": 0.0, "rigorous_bound": 0.0},
    {"verdict": "agree", "bound_ratio": 1.0, "expected_ratio": 1.0, "abs_error_at_worst": 1.0000000000000002,
     "rigorous_bound": 1.0000000000000002, "expected_bound": 1.0000000000000002},
    {"verdict": "disagree", "counts": {"agree": 1}, "bound_ratio": "nan"},
])
def test_verdicts_their_figures_allow_are_read(fields, tmp_path):
    res = read_jsonl(write(tmp_path / "r.jsonl", [line(**fields)]))
    assert res.malformed_count == 0 and [r.verdict for r in res.records] == [fields["verdict"]], res.warnings


def test_overlapping_shards_and_files_of_two_commits_are_named(tmp_path, capsys):
    """helper-79: shards of two splits (1/2, 2/2 and 1/3), a second run of one shard, or a whole run given with its
    shards were merged without a word into more records than the cases have; a stale shard of another commit stood in
    for a fresh one. The records graded twice are a warning naming both files (with how many have another verdict),
    and so are runs of different commits."""
    lines = valid_lines()[:40]
    a = write(tmp_path / "a.jsonl", lines[:20], env={**ENV, "git_commit": "a" * 40})
    b = write(tmp_path / "b.jsonl", lines[20:], env={**ENV, "run": "run-2", "git_commit": "a" * 40})
    out = tmp_path / "r.html"
    assert main(["report", str(a), str(b), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "graded already" not in err and "git commits" not in err
    stale = [json.dumps({**json.loads(x), "verdict": "disagree", "bound_ratio": 3.0}).encode() for x in lines[15:25]]
    c = write(tmp_path / "c.jsonl", stale, env={**ENV, "run": "run-3", "git_commit": "b" * 40})
    assert main(["report", str(a), str(b), str(c), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    first = Record.from_json(json.loads(lines[15]))
    assert (f"{c}: 10 record(s) grade what {a} and other files graded already (e.g. {first.case} {first.implementation} "
            f"{first.device} {first.dtype} step {first.step} {first.quantity}): shards that overlap, or a results file of "
            "another run; both copies are counted; 10 of them with another verdict") in err
    assert f"the files come from 2 git commits ({'a' * 12}: {a}, {b}; {'b' * 12}: {c})" in err
    assert "graded already" in out.read_text()
    # a --flush-to-zero run of the same cases grades them under other bounds: not an overlap (helper-80)
    ftz = write(tmp_path / "f.jsonl", lines[:20], env={**ENV, "run": "run-4", "git_commit": "a" * 40, "flush_to_zero": True})
    assert main(["report", str(a), str(b), str(ftz), "-o", str(out)]) == 0
    assert "graded already" not in capsys.readouterr().err


def test_a_models_unsupported_record_with_non_finite_elements_reads_back(tmp_path, capsys):
    """helper-80: a model quantity with no exact value at any element is ``unsupported``, and its NaN elements are
    counted ``overflow``; the first contradiction rule read such records back as malformed, and the report lost them."""
    cases = tmp_path / "sq.toml"
    cases.write_text('[[case]]\nid = "sqrt-of-negative"\nmodel = { expression = "a*x1**(1/2)", parameters = ["a"] }\n'
                     'X = [[-1]]\ny = [[0]]\nparams = { a = 1.5 }\nlr = "0.125"\nreduction = "sum"\ndtypes = ["float64"]\n')
    results = tmp_path / "sq.jsonl"
    main(["check", "--cases", str(cases), "--implementations", "torch-model-functional", "--devices", "cpu",
          "--results", str(results), "--report", "none"])
    capsys.readouterr()
    res = read_jsonl(results)
    assert res.malformed_count == 0, res.warnings
    assert any(r.verdict == "unsupported" and r.counts.get("overflow") for r in res.records), [(r.verdict, r.counts) for r in res.records]


def test_a_failing_record_whose_kind_was_edited_is_malformed_not_a_note(tmp_path):
    """helper-79: ``"kind": "Record"`` on a ``disagree`` line skipped it with a note ("unknown to this version") and no
    warning. A line of an unknown kind that carries a failing verdict is malformed; other unknown kinds stay notes."""
    path = write(tmp_path / "r.jsonl", [line(case="c0"), line(case="c1", kind="Record", verdict="disagree", bound_ratio=3.0),
                                        b'{"kind": "progress", "verdict": "agree"}'])
    res = read_jsonl(path)
    assert [r.case for r in res.records] == ["c0"] and res.malformed_count == 1
    assert "kind 'Record', unknown to this version, that holds the failing verdict 'disagree'" in str(res.malformed[0])
    assert res.notes == [f"{path}: skipped 1 line(s) of kind 'progress', unknown to this version (line 4)"]


def test_overlaps_within_one_file_and_records_without_an_environment_line_are_named(tmp_path):
    """helper-94: two runs concatenated into one file (``cat a.jsonl b.jsonl``) overlapped without a word (given as
    two files they are named), a run's lines repeated were counted twice silently, and a file of records without its
    environment line was said to hold 0 records against its footer's count."""
    lines = valid_lines()[:12]
    a = write(tmp_path / "a.jsonl", lines)
    b = write(tmp_path / "b.jsonl", lines[:5], env={**ENV, "run": "run-2"})
    both = tmp_path / "both.jsonl"
    both.write_bytes(a.read_bytes() + b.read_bytes())
    warnings = build_model([both]).warnings
    assert any(w.startswith(f"{both} (its run run-2 from line 15): 5 record(s) grade what {both} (its run run-1 from line 1) "
                            "graded already") for w in warnings), warnings
    # lines of one run repeated: its footer's count says so (one run may grade a thing twice: two pytest tests did)
    twice = tmp_path / "twice.jsonl"
    text = a.read_text().splitlines()
    twice.write_text("\n".join([*text[:-1], *text[1:4], text[-1]]) + "\n")
    warnings = build_model([twice]).warnings
    assert any("its run-end line counts 12 record(s); the file holds 15" in w for w in warnings), warnings
    assert not [w for w in warnings if "graded already" in w]
    assert not [w for w in build_model([a]).warnings if "graded already" in w]
    noenv = write(tmp_path / "noenv.jsonl", lines, env=None)
    res = read_jsonl(noenv)
    assert len(res.records) == 12 and res.status == "completed"  # (as before: its footer says so)
    assert not [w for w in res.warnings if "the file holds" in w], res.warnings
    bare = write(tmp_path / "bare.jsonl", lines, env=None, end=False)
    assert read_jsonl(bare).status == "no environment line"


def test_report_exit_status_fails_on_failing_records_malformed_lines_and_unfinished_runs(tmp_path, capsys):
    """helper-94: ``report`` exited 0 whatever it read, and its last line left out the malformed lines, so a CI step
    merging shards could not fail on a damaged part. ``--exit-status`` exits as ``check`` would, 2 for bad input."""
    lines = valid_lines()[:10]
    good = write(tmp_path / "good.jsonl", [full_line(case=f"c{i}") for i in range(3)])
    out = str(tmp_path / "r.html")
    assert main(["report", str(good), "-o", out, "--exit-status"]) == 0
    failing = write(tmp_path / "failing.jsonl", [full_line(case="f", verdict="disagree", bound_ratio=3.0)], env={**ENV, "run": "r2"})
    assert main(["report", str(good), str(failing), "-o", out, "--exit-status"]) == 1
    assert main(["report", str(good), str(failing), "-o", out]) == 0
    damaged = write(tmp_path / "damaged.jsonl", [*lines[:3], b"{not json"], env={**ENV, "run": "r3"})
    capsys.readouterr()
    assert main(["report", str(damaged), "-o", out, "--exit-status"]) == 2
    captured = capsys.readouterr()
    assert "1 malformed line(s) left out; report" in captured.out
    assert "exit 2: bad input: 1 malformed line(s) left out" in captured.err and "exit 0" not in captured.err
    cut = write(tmp_path / "cut.jsonl", lines[:3], env={**ENV, "run": "r4"}, end=False)
    assert main(["report", str(cut), "-o", out, "--exit-status"]) == 2
    assert f"{cut}: its run did not complete" in capsys.readouterr().err
    # helper-98: one shard of a split run given alone passed
    # (each case of its own shard, as check selects them: "o" is of shard 1/2, "h" of 2/2, harness.shard.shard_index;
    # a record of another shard's case fails the run, helper-184)
    half = write(tmp_path / "half.jsonl", [full_line(case="o")], env={**ENV, "run": "r5", "shard": "1/2"})
    assert main(["report", str(half), "-o", out, "--exit-status"]) == 2
    assert "shard(s) 2/2 not among the files read" in capsys.readouterr().err
    other = write(tmp_path / "other.jsonl", [full_line(case="h")], env={**ENV, "run": "r6", "shard": "2/2"})
    assert main(["report", str(half), str(other), "-o", out, "--exit-status"]) == 0


def test_report_strict_fails_suspect_records_as_check_strict_does(tmp_path, capsys):
    """helper-105: ``check --strict`` fails suspect records, but ``report --exit-status`` had no ``--strict``, so a CI
    step merging the shards of a strict run passed them (a NaN only a sign-sorted sum forms is ``suspect``)."""
    good = write(tmp_path / "good.jsonl", [full_line(case=f"c{i}") for i in range(3)])
    sus = write(tmp_path / "sus.jsonl", [full_line(case="s", verdict="suspect", bound_ratio=0.5, expected_ratio=2.0)],
                env={**ENV, "run": "r2"})
    out = str(tmp_path / "r.html")
    assert main(["report", str(good), str(sus), "-o", out, "--exit-status"]) == 0
    capsys.readouterr()
    assert main(["report", str(good), str(sus), "-o", out, "--exit-status", "--strict"]) == 1
    assert "exit 1: 1 suspect record(s) fail with --strict" in capsys.readouterr().err
    assert main(["report", str(good), "-o", out, "--exit-status", "--strict"]) == 0
    assert main(["report", str(good), str(sus), "-o", out, "--strict"]) == 2  # a usage error: it decides the exit status
    assert "give --exit-status with it" in capsys.readouterr().err
