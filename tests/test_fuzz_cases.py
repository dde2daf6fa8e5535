"""Issue 11: a seeded fuzzer of malformed case files and CSV data, in the default suite.

Mutations of the real case files (``cases/*.toml`` and the NIST data): byte flips,
truncations, wrong types, huge numbers, deep nesting, unknown keys, non-UTF-8,
NaN/inf, bad data paths, zero/negative/huge sizes, broken table structure and
mutated CSV files. Each file is loaded in-process (a small sample also through
the CLI) and must give:

- no exception out of :func:`harness.cases.load_cases`, and no load error that
  is the loader's safety net for an unexpected exception (a harness bug);
- every error naming its file, on one line of bounded length, never quoting the
  CSV content (a marker column in every CSV must never appear);
- no lost good case: every untouched ``[[case]]`` table that survives in the
  parsed document loads;
- no hang (a per-file time limit) and bounded memory.

Run ``PYTHONPATH=. python tests/test_fuzz_cases.py [FILES_PER_CATEGORY [SEED]]`` for a longer run.
"""

from __future__ import annotations

import json
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from harness.cases import load_cases
from harness.errors import CaseFileError
from harness.limits import Limits

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "cases"
SECRET = "S3CR3T-MARKER"
#: Seconds one file may take to load.
PER_FILE_SECONDS = 5.0
#: Limits of the fuzz loads: small, so that a mutation that makes a case big is refused rather than slow.
LIMITS = Limits(max_elements=200_000, max_steps=1000, max_oracle_cost=5_000_000, max_data_bytes=4 * 2**20)


class Hang(BaseException):  # noqa: N818 - a BaseException, so the loader's safety net cannot swallow it
    """Raised by the alarm when one file takes longer than :data:`PER_FILE_SECONDS`."""


class Raw(str):
    """A TOML value written as is."""


def emit(v: Any) -> str:
    """A value as TOML text (Raw values as they are)."""
    if isinstance(v, Raw):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | Decimal):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(emit(e) for e in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {emit(e)}" for k, e in v.items()) + " }"
    raise TypeError(type(v))


def emit_table(kind: str, d: dict[str, Any]) -> str:
    return f"\n[[{kind}]]\n" + "".join(f"{json.dumps(k)} = {emit(v)}\n" for k, v in d.items())


# ---------------------------------------------------------------- the corpus


def _base_tables() -> list[tuple[str, list[dict[str, Any]]]]:
    """(kind, tables) from the real case files, small enough to load in milliseconds."""
    out: list[tuple[str, list[dict[str, Any]]]] = []
    def doc(name: str) -> dict[str, Any]:
        return tomllib.loads((CASES / name).read_text(encoding="utf-8"), parse_float=Decimal)

    out.append(("case", doc("seed.toml")["case"]))
    out.append(("case", doc("semantics.toml")["case"]))
    out.append(("case", [c for c in doc("nist.toml")["case"] if "norris" in c["id"]]))
    gen = [*doc("generated.toml")["generate"], *doc("selftest.toml")["generate"]]
    out.append(("generate", [{**g, "shapes": [[2, 2, 2], [3, 1, 1]]} for g in gen if g.get("tier", "default") == "default"]))
    return out


WRONG = ["5", '"x"', "true", "[]", "{ a = 1 }", "[[[1.0]]]", "1.5", "-1", "0", '"nan"', '[["a", 1]]', "[1, [2]]", '""',
         '"\\u0000"', "1979-05-27T07:32:00Z", "[1979-05-27]", "[[1.0], []]", '["float32", 5]', "[true]", '{ "" = [] }']
HUGE = ["1e309", '"1e400"', "1" * 400, "9" * 5000, '"1e999999999"', '"-1e-999999999"', "1e-400", '"' + "1" * 2000 + '"',
        '"' + "7" * 900 + '"', "0x7fffffffffffffff", "1_000", '"1e308"', "-1.7976931348623157e308", '"4.9e-324"', '"2e-324"']
NONFINITE = ["nan", "+inf", "-inf", '"NaN"', '"-Infinity"', '"snan"', '"inf"']
SIZES_CASE = [("X", "[]"), ("X", "[[]]"), ("y", "[]"), ("W", "[]"), ("b", "[]"), ("steps", "0"), ("steps", "-1"),
              ("steps", "1000000000000"), ("X", "[[1.0], [2.0, 3.0]]"), ("y", "[[1.0], [2.0], [3.0]]"), ("W", "[[1.0, 2.0]]"),
              ("b", "[1.0, 2.0, 3.0]"), ("X", "[" + ", ".join(["[1.0]"] * 3000) + "]"), ("steps", "999999999999999999999")]
SIZES_GEN = [("shapes", "[[0, 1, 1]]"), ("shapes", "[[-1, 1, 1]]"), ("shapes", "[[1000000000000, 1, 1]]"),
             ("shapes", "[[1, 1000000000, 1000000000]]"), ("shapes", "[]"), ("shapes", "[[1, 1]]"), ("steps", "[0]"),
             ("steps", "[1000000000000]"), ("steps", "[]"), ("reductions", "[]"), ("dtypes", "[]"), ("regimes", "[]"),
             ("seed", "-1"), ("seed", "1" * 300), ("shapes", "[" + ", ".join(f"[100, 10, {10 + i}]" for i in range(400)) + "]"),
             ("shapes", "[[1, 1, 1], [1, 1, 1]]"), ("regimes", '["normal", "normal"]')]
PATHS = ["../../../../etc/passwd", "/etc/passwd", "/dev/zero", "/dev/urandom", "", ".", "data", "missing.csv", "a" * 5000,
         "data/nist/../../../outside.csv", "\u0000", "data/fifo.csv", "data/link.csv", "~/x.csv", "data/nist/norris.csv/",
         "C:\\\\Windows\\\\win.ini", "data/empty.csv", "data/big.csv", "c.toml"]
UNKNOWN = ["colour", "X ", "x", "ßtrange", "a" * 10_000, "", "🙂", "lr.value", "__class__"]
TABLE_BREAKS = ["[case]", "case = 5", "[[case.X]]", "case = [1]", "[generate]", "generate = 5", "[[generate]]\n[[case]]",
                "[case.sub]", "case = [{ id = 3 }]", "[[case]]\n[[case]]", 'title = 5', "description = []"]
CATEGORIES = ("byte-flip", "truncation", "wrong-type", "huge-number", "deep-nesting", "unknown-key", "non-utf8",
              "nan-inf", "bad-path", "sizes", "table-structure", "csv")


def _csv_text(rng: random.Random) -> bytes:
    """The norris data with a marker column (never to appear in a message), mutated."""
    base = (CASES / "data/nist/norris.csv").read_text(encoding="utf-8").splitlines()
    rows = [f"{base[0]},{SECRET}"] + [f"{ln},{SECRET}" for ln in base[1:]]
    text = "\n".join(rows) + "\n"
    op = rng.choice(["flip", "cut", "nan", "huge", "latin1", "long", "fields", "empty", "header", "nul", "bom", "cr", "secret"])
    data = text.encode()
    i = rng.randrange(1, len(rows))
    cells = rows[i].split(",")
    if op == "flip":
        b = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if op == "cut":
        return data[: rng.randrange(len(data))]
    if op in ("nan", "huge", "secret"):
        cells[rng.randrange(2)] = rng.choice({"nan": ["nan", "inf", "-inf", "NaN", "Infinity"],
                                              "huge": ["1e400", "1" * 400, "1e-999999999", "1e999999999", "9" * 3000],
                                              "secret": [SECRET, SECRET + "," + SECRET, '"' + SECRET]}[op])
        rows[i] = ",".join(cells)
        return ("\n".join(rows) + "\n").encode()
    if op == "latin1":
        rows[i] = rows[i] + "caf\u00e9"
        return ("\n".join(rows) + "\n").encode("latin-1")
    if op == "long":
        rows[i] = f"{cells[0]},{'9' * 140_000},{SECRET}"
        return ("\n".join(rows) + "\n").encode()
    if op == "fields":
        rows[i] = rows[i] + rng.choice([",1", ",1,2", ""]) if rng.random() < 0.5 else cells[0]
        return ("\n".join(rows) + "\n").encode()
    if op == "empty":
        return b""
    if op == "header":
        return (rows[0] + "\n").encode()
    if op == "nul":
        return data[:50] + b"\x00" + data[50:]
    if op == "bom":
        return b"\xef\xbb\xbf" + data
    if op == "cr":
        return data.replace(b"\n", b"\r")
    raise AssertionError(op)


@dataclass
class Sample:
    category: str
    text: bytes
    good: list[dict[str, Any]]  # untouched [[case]] tables: each must load when it survives in the parsed document
    csv: bytes | None = None


def make_sample(category: str, rng: random.Random, bases: list[tuple[str, list[dict[str, Any]]]]) -> Sample:
    """One mutated file of ``category``: the good tables of a real file, plus a mutant table (or a byte-level mutation)."""
    kind, tables = rng.choice(bases)
    if category in ("bad-path", "csv"):
        kind, tables = bases[2]  # the NIST cases, with data
    if category == "sizes" and rng.random() < 0.4:
        kind, tables = bases[3]
    good = [dict(t) for t in tables] if kind == "case" else []
    mutant = dict(rng.choice(tables))
    if kind == "case":
        mutant["id"] = "mutant"
    else:
        mutant["name"] = "mutant"
    csv = None
    keys = list(mutant)
    if category == "wrong-type":
        mutant[rng.choice([*keys, "steps", "reduction", "dtypes", "tags", "id"])] = Raw(rng.choice(WRONG))
    elif category == "huge-number":
        key = rng.choice([k for k in ("X", "y", "W", "b", "lr", "steps") if kind == "case"] or ["lr", "seed"])
        value = rng.choice(HUGE)
        if key in ("X", "y", "W") and isinstance(mutant.get(key), list) and rng.random() < 0.7:
            mutant[key] = Raw(f"[[{value}]]")
        elif key == "b" and rng.random() < 0.7:
            mutant[key] = Raw(f"[{value}]")
        else:
            mutant[key] = Raw(value)
    elif category == "deep-nesting":
        depth = rng.choice([3, 4, 10, 200, 1000, 100_000])
        mutant[rng.choice([*keys, "tags"])] = Raw("[" * depth + "1.0" + "]" * depth)
    elif category == "unknown-key":
        mutant[rng.choice(UNKNOWN) + str(rng.randrange(3))] = Raw(rng.choice(["1", '"x"', "[]"]))
    elif category == "nan-inf":
        key = rng.choice(["X", "y", "W", "b", "lr"]) if kind == "case" else "lr"
        v = rng.choice(NONFINITE)
        mutant[key] = Raw(v if key == "lr" else (f"[{v}]" if key == "b" else f"[[{v}]]"))
    elif category == "bad-path":
        mutant["data"] = rng.choice(PATHS)
        for k in ("X", "y"):
            mutant.pop(k, None)
    elif category == "sizes":
        key, value = rng.choice(SIZES_CASE if kind == "case" else SIZES_GEN)
        mutant[key] = Raw(value)
        if kind == "case" and key in ("X", "y") and "data" in mutant:
            mutant.pop("data")
            for k in ("x_columns", "y_columns", "polynomial_degree"):
                mutant.pop(k, None)
            mutant.setdefault("X", [[Decimal("1.0")]])
            mutant.setdefault("y", [[Decimal("1.0")]])
    elif category == "csv":
        mutant["data"] = "data/mutant.csv"
        mutant["x_columns"] = ["x"]
        csv = _csv_text(rng)
    body = "# fuzz sample\n" + "".join(emit_table(kind, t) for t in tables)
    mutant_text = emit_table(kind, mutant)
    text = (body + mutant_text).encode()
    if category == "table-structure":
        brk = rng.choice(TABLE_BREAKS)
        text = (body + mutant_text.replace(f"[[{kind}]]", brk, 1) if rng.random() < 0.6 else brk + "\n" + body).encode()
    elif category == "byte-flip":
        b = bytearray(text)
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        text = bytes(b)
    elif category == "truncation":
        text = text[: rng.randrange(len(text))]
    elif category == "non-utf8":
        bad = rng.choice([b"\xe9", b"\xff\xfe", b"\xc3", b"\x80", b"\xed\xa0\x80", "caf\u00e9".encode("latin-1")])
        at = rng.choice([len("# fuzz"), rng.randrange(len(text))])
        text = text[:at] + bad + text[at:]
    return Sample(category, text, good, csv)


# ---------------------------------------------------------------- the run


@dataclass
class Counts:
    files: Counter = field(default_factory=Counter)
    errors: int = 0
    tracebacks: list[str] = field(default_factory=list)
    internal: list[str] = field(default_factory=list)
    unnamed: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    cli_runs: int = 0
    wrong_exit: list[str] = field(default_factory=list)
    slowest: float = 0.0

    def line(self) -> str:
        return (f"fuzz: {sum(self.files.values())} files ({', '.join(f'{k} {v}' for k, v in sorted(self.files.items()))}); "
                f"{self.errors} load errors; {len(self.tracebacks)} tracebacks, {len(self.internal)} internal errors, "
                f"{len(self.unnamed)} errors not naming the file, {len(self.leaks)} content leaks, "
                f"{len(self.lost)} lost good cases, {len(self.hangs)} hangs; CLI sample {self.cli_runs} runs, "
                f"{len(self.wrong_exit)} wrong exit codes; slowest file {self.slowest:.2f}s")


def _alarm(signum: int, frame: Any) -> None:
    raise Hang()


def _setup_folder(folder: Path) -> None:
    (folder / "data" / "nist").mkdir(parents=True, exist_ok=True)
    shutil.copy(CASES / "data/nist/norris.csv", folder / "data/nist/norris.csv")
    (folder / "data" / "empty.csv").write_bytes(b"")
    (folder / "data" / "big.csv").write_bytes(b"x,y\n" + b"1.0,2.0\n" * (LIMITS.max_data_bytes // 8 + 10))
    (folder.parent / "outside.csv").write_text(f"x,y\n1,{SECRET}\n")
    import os

    if not (folder / "data" / "fifo.csv").exists():
        os.mkfifo(folder / "data" / "fifo.csv")
    if not (folder / "data" / "link.csv").exists():
        os.symlink(folder.parent / "outside.csv", folder / "data" / "link.csv")


def _surviving_good_ids(text: bytes, good: list[dict[str, Any]]) -> set[str]:
    """Ids of the untouched tables that the (possibly mutated) document still holds unchanged."""
    try:
        doc = tomllib.loads(text.decode("utf-8"), parse_float=Decimal)
    except Exception:  # noqa: BLE001 - an unparseable file loses only itself
        return set()
    tables = doc.get("case")
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        return set()
    if set(doc) - {"case", "generate", "title", "description"}:
        pass  # an unknown top-level key is reported, the cases still load
    ids = [t.get("id") for t in tables]
    return {g["id"] for g in good if g in tables and ids.count(g["id"]) == 1}


def run_fuzz(folder: Path, per_category: int, seed: int = 11, cli_sample: int = 0) -> Counts:
    """Make and load ``per_category`` files of every category in ``folder``; the counts."""
    rng = random.Random(seed)
    bases = _base_tables()
    _setup_folder(folder)
    counts = Counts()
    cli_files: list[tuple[Path, bool]] = []
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        for category in CATEGORIES:
            for n in range(per_category):
                sample = make_sample(category, rng, bases)
                path = folder / "c.toml"
                path.write_bytes(sample.text)
                if sample.csv is not None:
                    (folder / "data" / "mutant.csv").write_bytes(sample.csv)
                counts.files[category] += 1
                start = time.monotonic()
                signal.setitimer(signal.ITIMER_REAL, PER_FILE_SECONDS)
                try:
                    res = load_cases([path], limits=LIMITS)
                except Hang:
                    counts.hangs.append(f"{category} #{n}")
                    continue
                except BaseException as exc:  # noqa: BLE001 - counted: nothing may escape the loader
                    counts.tracebacks.append(f"{category} #{n}: {type(exc).__name__}: {str(exc)[:200]}")
                    continue
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                counts.slowest = max(counts.slowest, time.monotonic() - start)
                counts.errors += len(res.errors)
                for e in res.errors:
                    msg = str(e)
                    if not isinstance(e, CaseFileError):
                        counts.tracebacks.append(f"{category} #{n}: error of type {type(e).__name__}")
                    if "harness bug" in msg:
                        counts.internal.append(f"{category} #{n}: {msg[:300]}")
                    if not msg.startswith(str(path)) or "\n" in msg or len(msg) > 1000:
                        counts.unnamed.append(f"{category} #{n}: {msg[:300]}")
                    if SECRET in msg or "root:" in msg:
                        counts.leaks.append(f"{category} #{n}: {msg[:300]}")
                loaded = {c.id for c in res.cases}
                missing = _surviving_good_ids(sample.text, sample.good) - loaded
                if missing:
                    counts.lost.append(f"{category} #{n}: {sorted(missing)}; errors: {[str(e)[:200] for e in res.errors]}")
                if len(cli_files) < cli_sample and n % max(1, per_category // 2) == 0:
                    keep = folder / f"cli_{category}_{n}.toml"
                    keep.write_bytes(sample.text)
                    if sample.csv is not None:
                        keep.write_bytes(sample.text.replace(b"data/mutant.csv", f"data/cli_{category}_{n}.csv".encode()))
                        (folder / "data" / f"cli_{category}_{n}.csv").write_bytes(sample.csv)
                    cli_files.append((keep, bool(load_cases([keep], limits=LIMITS).errors)))
    finally:
        signal.signal(signal.SIGALRM, old)
    for keep, has_errors in cli_files:
        proc = subprocess.run([sys.executable, "-m", "harness", "cases", "--cases", str(keep), "--max-elements", str(LIMITS.max_elements),
                               "--max-steps", str(LIMITS.max_steps), "--max-oracle-cost", str(LIMITS.max_oracle_cost),
                               "--max-data-bytes", str(LIMITS.max_data_bytes)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        counts.cli_runs += 1
        want = 2 if has_errors else 0
        if proc.returncode != want or "Traceback" in proc.stderr:
            counts.wrong_exit.append(f"{keep.name}: exit {proc.returncode}, wanted {want}: {proc.stderr[-300:]}")
        if SECRET in proc.stderr:
            counts.leaks.append(f"CLI {keep.name}")
    return counts


def test_fuzzed_case_files_never_crash_hang_leak_or_lose_good_cases(tmp_path, capsys):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    counts = run_fuzz(tmp_path / "cases", per_category=200, cli_sample=4)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    with capsys.disabled():
        print(f"\n{counts.line()}; {time.monotonic() - start:.1f}s, peak memory grew {grown_mib:.0f} MiB")
    assert sum(counts.files.values()) >= 2000 and set(counts.files) == set(CATEGORIES)
    assert counts.tracebacks == []
    assert counts.internal == []
    assert counts.unnamed == []
    assert counts.leaks == []
    assert counts.lost == []
    assert counts.hangs == []
    assert counts.wrong_exit == [] and counts.cli_runs == 4
    assert counts.errors > 1000  # the mutations do make bad files
    assert grown_mib < 1024


if __name__ == "__main__":  # pragma: no cover - the longer run: python tests/test_fuzz_cases.py 1000
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        c = run_fuzz(Path(tmp) / "cases", per_category=int(sys.argv[1]) if len(sys.argv) > 1 else 300, seed=int(sys.argv[2]) if len(sys.argv) > 2 else 11)
        print(c.line())
        for name in ("tracebacks", "internal", "unnamed", "leaks", "lost", "hangs", "wrong_exit"):
            for item in getattr(c, name)[:10]:
                print(f"{name}: {item}")
