#!/usr/bin/env python3
"""Python baseline solvers for `resc bench ilp` (crate resc-ilp, module bench).

Reads a request (JSON) from a file path given as the first argument, or from
standard input, and prints a JSON array with one object per instance and
solver: n, k, kind, seed, solver, median_ms, min_ms, objective, bound, gap,
optimal, runs, skipped, version, note.

The request (written by `resc_ilp::bench::baseline_request`):

    {"time_limit_s": 10.0, "repetitions": 3, "rel_gap": 0.0,
     "solvers": ["python-mip-cbc", "ortools-cpsat", "highspy"],
     "instances": [{"n": .., "k": .., "kind": "random", "seed": 1,
                    "capacity": {"millicores": .., "memory_bytes": ..},
                    "candidates": [{"cpu": [..], "memory": [..],
                                    "communication": [[from, to, bytes], ..]}, ..]}]}

Every instance is an aggregation problem with disjoint candidates: choose
candidates maximizing the saved traffic (the sum of each chosen candidate's
communication matrix) subject to the CPU and memory capacity; the reported
objective is the traffic left over (lower is better), `bound` the solver's
proven lower bound on it, `gap` = (objective - bound) / max(objective, 1).

Timing (median over `repetitions` solves) includes computing the savings and
totals from the matrices and usage vectors (numpy), building the model and
solving it; parsing the JSON is excluded, as on the Rust side.

Each solver runs in its own child process: python-mip's bundled CBC and
OR-Tools' bundled COIN libraries cannot share one process. A solver whose
package is missing is reported as skipped, with the reason.

Packages: `pip install mip ortools highspy numpy` (checked with mip 2.0.0,
ortools 9.15.6755, highspy 1.16.0).
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

SOLVERS = ["python-mip-cbc", "ortools-cpsat", "highspy"]


def record(inst, solver, **fields):
    out = {
        "n": inst["n"],
        "k": inst["k"],
        "kind": inst["kind"],
        "seed": inst["seed"],
        "solver": solver,
        "median_ms": None,
        "min_ms": None,
        "objective": None,
        "bound": None,
        "gap": None,
        "optimal": None,
        "runs": 0,
        "skipped": None,
        "version": None,
        "note": None,
    }
    out.update(fields)
    return out


def arrays(inst):
    """Flattened numpy arrays of one instance (not timed: the parse step)."""
    import numpy as np

    cands = inst["candidates"]
    traffic = [c["communication"] for c in cands]
    t_len = np.array([len(t) for t in traffic], dtype=np.int64)
    t_bytes = np.array([e[2] for t in traffic for e in t], dtype=np.uint64)
    u_len = np.array([len(c["cpu"]) for c in cands], dtype=np.int64)
    cpu = np.array([v for c in cands for v in c["cpu"]], dtype=np.uint64)
    mem = np.array([v for c in cands for v in c["memory"]], dtype=np.uint64)
    return t_len, t_bytes, u_len, cpu, mem


def segment_sums(lengths, values):
    """Per-candidate sums of a flattened array (empty segments give 0)."""
    import numpy as np

    ends = np.cumsum(lengths)
    csum = np.concatenate([np.zeros(1, dtype=np.uint64), np.cumsum(values, dtype=np.uint64)])
    return csum[ends] - csum[ends - lengths]


def build(arr):
    """Savings and totals from the matrices and usage vectors (timed)."""
    t_len, t_bytes, u_len, cpu, mem = arr
    p = segment_sums(t_len, t_bytes)
    w1 = segment_sums(u_len, cpu)
    w2 = segment_sums(u_len, mem)
    return p, w1, w2


def solve_mip(p, w1, w2, c1, c2, time_limit, rel_gap):
    import mip

    n = len(p)
    m = mip.Model(sense=mip.MAXIMIZE, solver_name=mip.CBC)
    m.verbose = 0
    m.max_mip_gap = max(rel_gap, 1e-12)
    m.max_mip_gap_abs = 0.999  # integer objective: a gap below 1 is optimal
    x = [m.add_var(var_type=mip.BINARY) for _ in range(n)]
    pl, w1l, w2l = p.tolist(), w1.tolist(), w2.tolist()
    m.objective = mip.xsum(pl[i] * x[i] for i in range(n))
    m += mip.xsum(w1l[i] * x[i] for i in range(n)) <= c1
    m += mip.xsum(w2l[i] * x[i] for i in range(n)) <= c2
    status = m.optimize(max_seconds=time_limit)
    if m.num_solutions == 0:
        return None, None, False, str(status)
    chosen = [i for i in range(n) if x[i].x is not None and x[i].x >= 0.5]
    return chosen, m.objective_bound, status == mip.OptimizationStatus.OPTIMAL, str(status)


def solve_cpsat(p, w1, w2, c1, c2, time_limit, rel_gap):
    from ortools.sat.python import cp_model

    n = len(p)
    model = cp_model.CpModel()
    x = [model.new_bool_var(f"x{i}") for i in range(n)]
    pl, w1l, w2l = p.tolist(), w1.tolist(), w2.tolist()
    model.add(cp_model.LinearExpr.weighted_sum(x, w1l) <= c1)
    model.add(cp_model.LinearExpr.weighted_sum(x, w2l) <= c2)
    model.maximize(cp_model.LinearExpr.weighted_sum(x, pl))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit
    solver.parameters.relative_gap_limit = rel_gap
    status = solver.solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None, None, False, solver.status_name(status)
    chosen = [i for i in range(n) if solver.boolean_value(x[i])]
    return chosen, solver.best_objective_bound, status == cp_model.OPTIMAL, solver.status_name(status)


def solve_highs(p, w1, w2, c1, c2, time_limit, rel_gap):
    import highspy
    import numpy as np

    n = len(p)
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(time_limit))
    h.setOptionValue("mip_rel_gap", float(rel_gap))
    h.setOptionValue("mip_abs_gap", 0.999)  # integer objective
    lp = highspy.HighsLp()
    lp.num_col_ = n
    lp.num_row_ = 2
    lp.sense_ = highspy.ObjSense.kMaximize
    lp.col_cost_ = p.astype(np.float64)
    lp.col_lower_ = np.zeros(n)
    lp.col_upper_ = np.ones(n)
    lp.row_lower_ = np.array([-highspy.kHighsInf, -highspy.kHighsInf])
    lp.row_upper_ = np.array([float(c1), float(c2)])
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.arange(0, 2 * n + 1, 2, dtype=np.int32)
    lp.a_matrix_.index_ = np.tile(np.array([0, 1], dtype=np.int32), n)
    lp.a_matrix_.value_ = np.column_stack([w1.astype(np.float64), w2.astype(np.float64)]).ravel()
    lp.integrality_ = [highspy.HighsVarType.kInteger] * n
    h.passModel(lp)
    h.run()
    status = h.getModelStatus()
    info = h.getInfo()
    if info.primal_solution_status == 0:
        return None, None, False, h.modelStatusToString(status)
    col = h.getSolution().col_value
    chosen = [i for i in range(n) if col[i] >= 0.5]
    optimal = status == highspy.HighsModelStatus.kOptimal
    return chosen, info.mip_dual_bound, optimal, h.modelStatusToString(status)


SOLVE = {"python-mip-cbc": solve_mip, "ortools-cpsat": solve_cpsat, "highspy": solve_highs}
PACKAGE = {"python-mip-cbc": "mip", "ortools-cpsat": "ortools", "highspy": "highspy"}


def version(solver):
    import importlib.metadata

    try:
        return importlib.metadata.version(PACKAGE[solver])
    except importlib.metadata.PackageNotFoundError:
        return None


def short(text, limit=300):
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_one(solver, request):
    """Runs one solver on every instance; returns the records."""
    try:
        import numpy  # noqa: F401

        __import__(PACKAGE[solver])
    except Exception as e:  # a missing or broken package: skipped, not a failure
        reason = f"python package `{PACKAGE[solver]}` unavailable: {type(e).__name__}: {e}"
        return [record(inst, solver, skipped=reason) for inst in request["instances"]]
    out = []
    tl = float(request.get("time_limit_s", 10.0))
    reps = max(1, int(request.get("repetitions", 3)))
    rel_gap = float(request.get("rel_gap", 0.0))
    for inst in request["instances"]:
        arr = arrays(inst)
        c1 = int(inst["capacity"]["millicores"])
        c2 = int(inst["capacity"]["memory_bytes"])
        times, result = [], None
        try:
            for _ in range(reps):
                t0 = time.perf_counter()
                p, w1, w2 = build(arr)
                result = SOLVE[solver](p, w1, w2, c1, c2, tl, rel_gap)
                times.append((time.perf_counter() - t0) * 1e3)
        except Exception as e:
            out.append(record(inst, solver, skipped=short(f"{type(e).__name__}: {e}"), version=version(solver)))
            continue
        chosen, upper, optimal, status = result
        fields = {
            "median_ms": statistics.median(times),
            "min_ms": min(times),
            "runs": len(times),
            "version": version(solver),
            "note": status,
        }
        if chosen is not None:
            pl = [int(v) for v in p]
            total = sum(pl)
            used1 = sum(int(w1[i]) for i in chosen)
            used2 = sum(int(w2[i]) for i in chosen)
            saved = sum(pl[i] for i in chosen)
            if used1 > c1 or used2 > c2:
                fields["note"] = f"{status}; the returned solution violates the capacity"
            else:
                objective = total - saved
                bound = max(0.0, total - float(upper)) if upper is not None else None
                bound = min(bound, float(objective)) if bound is not None else None
                fields["objective"] = float(objective)
                fields["bound"] = bound
                if bound is not None:
                    fields["gap"] = max(0.0, (objective - bound) / max(float(objective), 1.0))
                fields["optimal"] = bool(optimal)
        out.append(record(inst, solver, **fields))
    return out


def main():
    args = sys.argv[1:]
    if args[:1] == ["--solver"]:
        # A child: the answer goes to a file, since solvers print banners
        # on standard output.
        solver, path, answer = args[1], args[2], args[3]
        with open(path) as f:
            request = json.load(f)
        records = run_one(solver, request)
        with open(answer, "w") as f:
            json.dump(records, f)
        return
    if args:
        with open(args[0]) as f:
            text = f.read()
    else:
        text = sys.stdin.read()
    request = json.loads(text)
    solvers = [s for s in request.get("solvers", SOLVERS) if s in SOLVE]
    budget = float(request.get("time_limit_s", 10.0)) * max(1, int(request.get("repetitions", 3)))
    budget = budget * len(request["instances"]) + 120.0
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "request.json")
        with open(path, "w") as f:
            f.write(text)
        for solver in solvers:
            print(f"... {solver}", file=sys.stderr, flush=True)
            answer = os.path.join(tmp, f"{solver}.json")
            try:
                proc = subprocess.run(
                    [sys.executable, os.path.abspath(__file__), "--solver", solver, path, answer],
                    capture_output=True,
                    text=True,
                    timeout=budget,
                )
                if proc.returncode != 0:
                    tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
                    raise RuntimeError(f"exit {proc.returncode}: {tail}")
                with open(answer) as f:
                    results.extend(json.load(f))
            except Exception as e:
                reason = short(f"the {solver} run failed: {type(e).__name__}: {e}")
                results.extend(record(inst, solver, skipped=reason) for inst in request["instances"])
    json.dump(results, sys.stdout)
    print()


if __name__ == "__main__":
    main()
