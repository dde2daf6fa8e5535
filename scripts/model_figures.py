"""The README's model figures: correct implementations and mutants over cases/models.toml.

Usage::

    .venv/bin/python scripts/model_figures.py [--tier full] [--plugin examples/fused_linear_tanh.py]

Prints two Markdown tables: per model family (activation, polynomial, expression) and dtype, the
records of the correct model built-ins (torch-model-nn, torch-model-functional, numpy-model) and
how many are false alarms (:func:`harness.verdicts.is_alarm`); per model mutant and dtype, the cases
in which it is caught (a record with a verdict it declares) out of the cases it runs (a case it
refuses as a whole -- unsupported, or an error such as the transposed mutant's on a non-square W1 --
is not counted as run). With
``--plugin``, the same for the plug-ins of that file.
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from pathlib import Path

from harness.cases import load_cases
from harness.implementations import REGISTRY, load_builtins, load_mutants
from harness.implementations.registry import load_plugin
from harness.runner import RunOptions, verify
from harness.verdicts import NOT_GRADED, is_alarm

DTYPES = ("float64", "float32", "float16", "bfloat16")
ROOT = Path(__file__).resolve().parent.parent


def family(case_model: object) -> str:
    spec = case_model
    kind = getattr(spec, "kind", "linear")
    if kind == "mlp":
        return f"{spec.activation} ({len(spec.hidden)} hidden)"  # type: ignore[attr-defined]
    return str(kind)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tier", default="full")
    ap.add_argument("--plugin", action="append", default=[])
    args = ap.parse_args()
    load_builtins()
    load_mutants()
    for p in args.plugin:
        load_plugin(p)
    cases = load_cases([ROOT / "cases" / "models.toml"], tier=args.tier).cases
    opts = RunOptions(trajectory=False)
    correct = [i for i in REGISTRY.values() if i.models and i.correct and i.kind == "builtin"]
    mutants = [i for i in REGISTRY.values() if i.models and not i.correct and i.kind != "plugin"]
    plugins = [i for i in REGISTRY.values() if i.models and i.kind == "plugin"]
    recs = verify(cases, correct, dtypes=DTYPES, options=opts)
    graded: dict[tuple[str, str], int] = Counter()
    alarms: dict[tuple[str, str], int] = Counter()
    model_of = {c.id: family(c.model) for c in cases}
    for r in recs:
        if r.verdict in NOT_GRADED or r.quantity == "*":
            continue
        key = (model_of[r.case], r.dtype)
        graded[key] += 1
        alarms[key] += is_alarm(r)
    fams = sorted({f for f, _ in graded})
    print(f"correct built-ins ({', '.join(i.name for i in correct)}), {args.tier} tier, {len(cases)} cases: "
          "graded records (false alarms)\n")
    print("| model | " + " | ".join(DTYPES) + " |")
    print("|---|" + "---|" * len(DTYPES))
    for f in fams:
        print(f"| {f} | " + " | ".join(f"{graded[(f, d)]} ({alarms[(f, d)]})" for d in DTYPES) + " |")
    print(f"\ntotal: {sum(graded.values())} graded records, {sum(alarms.values())} false alarm(s)\n")
    for title, impls in (("mutants", mutants), ("plug-ins", plugins)):
        if not impls:
            continue
        print(f"{title}: cases caught / cases run (a record with a verdict the implementation declares)\n")
        print("| implementation | " + " | ".join(DTYPES) + " |")
        print("|---|" + "---|" * len(DTYPES))
        for impl in impls:
            rs = verify(cases, [impl], dtypes=DTYPES, options=opts)
            ran: dict[str, set[str]] = defaultdict(set)
            caught: dict[str, set[str]] = defaultdict(set)
            for r in rs:
                if r.quantity == "*" and r.verdict in ("unsupported", "error"):
                    continue  # not run (a dtype or shape it refuses: the transposed mutant needs D == H1)
                ran[r.dtype].add(r.case)
                if r.verdict in impl.expected and (impl.correct is False or r.verdict != "agree"):
                    caught[r.dtype].add(r.case)
            cells = [f"{len(caught[d])} / {len(ran[d])}" if ran[d] else "-" for d in DTYPES]
            print(f"| {impl.name} | " + " | ".join(cells) + " |")
        print()


if __name__ == "__main__":
    main()
