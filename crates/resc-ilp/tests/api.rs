//! The public API: validation errors, evaluation, limits, serde, and the
//! generated instances.

use resc_core::ids::{AppId, ComputeId, MemoryId};
use resc_ilp::generate::{
    aggregation_instance, disaggregation_instance, overlapping_instance, InstanceKind, InstanceSpec,
};
use resc_ilp::{
    AggregationProblem, Candidate, Capacity, CommMatrix, ComponentKey, IlpError, SideConstraint, Solution, SolveMethod,
    SolveOptions, SolveStatus, Traffic,
};
use std::time::Duration;

fn pair(app: u64) -> Candidate {
    Candidate {
        app: AppId(app),
        components: vec![ComponentKey::Compute(ComputeId(0)), ComponentKey::Memory(MemoryId(0))],
        cpu: vec![100, 0],
        memory: vec![10, 20],
        communication: CommMatrix::from_entries(vec![Traffic { from: 0, to: 1, bytes: 1000 }]),
    }
}

fn problem_with(c: Candidate) -> AggregationProblem {
    AggregationProblem::new(vec![pair(0), c], Capacity::new(1000, 1000))
}

fn candidate_error(err: IlpError) -> (usize, &'static str, String) {
    match err {
        IlpError::InvalidCandidate { candidate, field, reason } => (candidate, field, reason),
        other => panic!("expected InvalidCandidate, got {other:?}"),
    }
}

#[test]
fn validation_names_the_candidate_and_field() {
    let opts = SolveOptions::default();
    let mut c = pair(1);
    c.cpu.push(1);
    let (i, f, _) = candidate_error(problem_with(c).solve(&opts).expect_err("cpu length"));
    assert_eq!((i, f), (1, "cpu"));

    let mut c = pair(1);
    c.memory.pop();
    let (i, f, _) = candidate_error(problem_with(c).solve(&opts).expect_err("memory length"));
    assert_eq!((i, f), (1, "memory"));

    let mut c = pair(1);
    c.components[1] = ComponentKey::Compute(ComputeId(0));
    let (i, f, reason) = candidate_error(problem_with(c).solve(&opts).expect_err("duplicate"));
    assert_eq!((i, f), (1, "components"));
    assert!(reason.contains("twice"), "{reason}");

    // Duplicates beyond the bitset's range are found too.
    let mut c = pair(1);
    c.components = vec![ComponentKey::Memory(MemoryId(4000)), ComponentKey::Memory(MemoryId(4000))];
    let (_, f, _) = candidate_error(problem_with(c).solve(&opts).expect_err("duplicate"));
    assert_eq!(f, "components");

    let mut c = pair(1);
    c.communication.push(0, 2, 5);
    let (i, f, reason) = candidate_error(problem_with(c).solve(&opts).expect_err("out of range"));
    assert_eq!((i, f), (1, "communication"));
    assert!(reason.contains("entry 1") && reason.contains("out of range"), "{reason}");

    let mut c = pair(1);
    c.communication.push(1, 1, 5);
    let (_, _, reason) = candidate_error(problem_with(c).solve(&opts).expect_err("diagonal"));
    assert!(reason.contains("diagonal"), "{reason}");

    let mut c = pair(1);
    c.communication.push(1, 0, u64::MAX);
    let (_, f, reason) = candidate_error(problem_with(c).solve(&opts).expect_err("overflow"));
    assert_eq!(f, "communication");
    assert!(reason.contains("overflow"), "{reason}");

    let mut c = pair(1);
    c.cpu = vec![u64::MAX, 1];
    let (_, f, _) = candidate_error(problem_with(c).solve(&opts).expect_err("overflow"));
    assert_eq!(f, "cpu");

    // The error message names both.
    let mut c = pair(1);
    c.memory.pop();
    let msg = problem_with(c).solve(&opts).expect_err("memory").to_string();
    assert!(msg.contains("candidate 1") && msg.contains("`memory`"), "{msg}");
}

#[test]
fn invalid_options_side_constraints_and_choices_are_errors() {
    let p = problem_with(pair(1));
    let bad = SolveOptions::default().with_rel_gap(f64::NAN);
    assert!(matches!(p.solve(&bad), Err(IlpError::InvalidOption { option: "rel_gap", .. })));
    let bad = SolveOptions::default().with_rel_gap(-1.0);
    assert!(matches!(p.solve(&bad), Err(IlpError::InvalidOption { .. })));

    let mut q = p.clone();
    q.side_constraints.push(SideConstraint { name: "rack 3".into(), coefficients: vec![(7, 1)], limit: 1 });
    let err = q.solve(&SolveOptions::default()).expect_err("out of range");
    assert!(matches!(&err, IlpError::InvalidSideConstraint { constraint: 0, .. }), "{err:?}");
    assert!(err.to_string().contains("rack 3"));

    assert!(matches!(p.evaluate(&[2]), Err(IlpError::InvalidChoice { index: 2, .. })));
    assert!(matches!(p.evaluate(&[1, 1]), Err(IlpError::InvalidChoice { index: 1, .. })));
}

#[test]
fn empty_and_trivial_problems() {
    let opts = SolveOptions::default();
    let empty = AggregationProblem::new(Vec::new(), Capacity::default());
    let s = empty.solve(&opts).expect("valid");
    assert!(s.chosen.is_empty() && s.optimal && s.objective == 0.0);

    // Everything fits: all chosen, nothing left over.
    let all = AggregationProblem::new(vec![pair(0), pair(1)], Capacity::new(1000, 1000));
    let s = all.solve(&opts).expect("valid");
    assert_eq!(s.chosen, vec![0, 1]);
    assert_eq!((s.objective, s.method), (0.0, SolveMethod::Trivial));

    // No capacity: nothing fits, except what needs nothing.
    let mut free = pair(2);
    free.cpu = vec![0, 0];
    free.memory = vec![0, 0];
    let none = AggregationProblem::new(vec![pair(0), pair(1), free], Capacity::default());
    let s = none.solve(&opts).expect("valid");
    assert_eq!(s.chosen, vec![2]);
    assert_eq!(s.objective, 2000.0);
    assert!(s.optimal);
}

#[test]
fn limits_return_a_feasible_plan_and_an_honest_gap() {
    let p = aggregation_instance(&InstanceSpec::new(2_000, 8, InstanceKind::StronglyCorrelated, 7));
    for opts in [SolveOptions::default().with_time_limit(Duration::ZERO), SolveOptions::default().with_node_limit(10)] {
        let s = p.solve(&opts).expect("valid");
        let eval = p.evaluate(&s.chosen).expect("valid");
        assert!(eval.feasible);
        assert_eq!(eval.leftover as f64, s.objective);
        assert!(s.bound <= s.objective && s.gap >= 0.0);
        assert!(
            matches!(s.status, SolveStatus::TimeLimit | SolveStatus::NodeLimit | SolveStatus::Optimal),
            "{:?}",
            s.status
        );
        // The bound is valid: the full solve's optimum is not below it.
        let full = p.solve(&SolveOptions::default().with_time_limit(Duration::from_secs(20))).expect("valid");
        assert!(full.objective >= s.bound - 0.5, "{} < {}", full.objective, s.bound);
    }
}

#[test]
fn generated_instances_solve_within_the_bar_gap() {
    for kind in [InstanceKind::Random, InstanceKind::StronglyCorrelated] {
        let p = aggregation_instance(&InstanceSpec::new(1_000, 32, kind, 3));
        let s = p.solve(&SolveOptions::default().with_time_limit(Duration::from_secs(20))).expect("valid");
        assert_eq!(s.method, SolveMethod::Knapsack2);
        assert!(s.gap <= 1e-4, "{kind}: gap {}", s.gap);
        let eval = p.evaluate(&s.chosen).expect("valid");
        assert!(eval.feasible);
        assert_eq!(eval.leftover as f64, s.objective);
        // About half the candidates fit.
        let frac = s.chosen.len() as f64 / 1_000.0;
        assert!((0.3..0.9).contains(&frac), "{kind}: {frac}");
    }
}

#[test]
fn overlapping_instances_take_the_general_solver() {
    let p = overlapping_instance(25, 8, 4, 11);
    let s = p.solve(&SolveOptions::default().with_time_limit(Duration::from_secs(20))).expect("valid");
    assert_eq!(s.method, SolveMethod::BranchAndBound);
    assert!(s.optimal, "{:?} gap {}", s.status, s.gap);
    let eval = p.evaluate(&s.chosen).expect("valid");
    assert!(eval.feasible, "overlap or capacity violated");
    assert_eq!(eval.leftover as f64, s.objective);
    assert!(s.bound <= s.objective);
}

/// Side constraints (here: at most a third of the candidates, and a rack
/// row) take the general path: with the `cbc` feature, the branch and bound
/// and then CBC when the branch and bound does not settle the problem in a
/// quarter of the time limit. Either way: a feasible plan, an honest bound.
#[test]
fn side_constraints_take_the_general_path_with_an_honest_gap() {
    let mut p = aggregation_instance(&InstanceSpec::new(40, 8, InstanceKind::Random, 5));
    let n = p.candidates.len();
    p.side_constraints.push(SideConstraint {
        name: "at most a third".into(),
        coefficients: (0..n).map(|j| (j, 1)).collect(),
        limit: n as u64 / 3,
    });
    p.side_constraints.push(SideConstraint {
        name: "rack".into(),
        coefficients: (0..n).step_by(2).map(|j| (j, 1 + j as u64 % 3)).collect(),
        limit: 15,
    });
    let full = p.solve(&SolveOptions::default().with_time_limit(Duration::from_secs(20))).expect("valid");
    let expected = if cfg!(feature = "cbc") {
        vec![SolveMethod::BranchAndBound, SolveMethod::Milp]
    } else {
        vec![SolveMethod::BranchAndBound]
    };
    assert!(expected.contains(&full.method), "{:?}", full.method);
    assert!(full.optimal, "{:?} gap {}", full.status, full.gap);
    for limit in [Duration::from_millis(1), Duration::from_millis(50)] {
        let s = p.solve(&SolveOptions::default().with_time_limit(limit)).expect("valid");
        let eval = p.evaluate(&s.chosen).expect("valid");
        assert!(eval.feasible);
        assert_eq!(eval.leftover as f64, s.objective);
        assert!(s.bound <= s.objective && s.objective >= full.objective);
        assert!(full.objective >= s.bound - 0.5, "bound {} above the optimum {}", s.bound, full.objective);
    }
}

/// A hard instance (strongly correlated, with a cardinality row) that the
/// branch and bound does not settle in a quarter of the limit: CBC runs
/// from its incumbent, and the answer is checked, feasible and no worse.
#[cfg(feature = "cbc")]
#[test]
fn hard_side_constrained_instances_reach_cbc() {
    let mut p = aggregation_instance(&InstanceSpec::new(60, 8, InstanceKind::StronglyCorrelated, 5));
    let n = p.candidates.len();
    p.side_constraints.push(SideConstraint {
        name: "at most a third".into(),
        coefficients: (0..n).map(|j| (j, 1)).collect(),
        limit: n as u64 / 3,
    });
    let limit = Duration::from_millis(800);
    let s = p.solve(&SolveOptions::default().with_time_limit(limit)).expect("valid");
    assert_eq!(s.method, SolveMethod::Milp, "{:?} {:?}", s.status, s.gap);
    let eval = p.evaluate(&s.chosen).expect("valid");
    assert!(eval.feasible);
    assert_eq!(eval.leftover as f64, s.objective);
    assert!(s.bound <= s.objective && s.gap >= 0.0);
    // CBC's time limit is honoured (with slack for a busy machine).
    assert!(s.elapsed < limit * 4, "{:?}", s.elapsed);
}

#[test]
fn disaggregation_instances_solve() {
    let p = disaggregation_instance(60, 8, 5);
    let s = p.solve(&SolveOptions::default().with_time_limit(Duration::from_secs(20))).expect("valid");
    assert!(s.optimal, "{:?} gap {}", s.status, s.gap);
    let eval = p.evaluate(&s.chosen).expect("valid");
    assert!(eval.feasible);
    assert!((eval.cost - s.objective).abs() <= 1e-6 * s.objective.max(1.0));
    assert!(s.bound <= s.objective + 1e-6);
    // Splitting frees capacity: with a penalty twice the average traffic,
    // the plan frees most of what is asked.
    assert!(eval.freed.millicores > 0);

    // Overlapping running groups are a malformed problem.
    let mut q = p.clone();
    q.groups[1].app = q.groups[0].app;
    let err = q.solve(&SolveOptions::default()).expect_err("overlap");
    assert!(matches!(err, IlpError::InvalidCandidate { field: "components", .. }), "{err:?}");
}

#[test]
fn problems_and_solutions_round_trip_through_json() {
    let p = aggregation_instance(&InstanceSpec::new(20, 4, InstanceKind::Random, 1));
    let json = serde_json::to_string(&p).expect("serialize");
    assert!(json.contains("\"communication\":[["), "matrices are triples: {}", &json[..200.min(json.len())]);
    let back: AggregationProblem = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, p);
    let s = p.solve(&SolveOptions::default()).expect("valid");
    let back: Solution = serde_json::from_str(&serde_json::to_string(&s).expect("serialize")).expect("deserialize");
    assert_eq!(back, s);

    let d = disaggregation_instance(10, 4, 1);
    let back: resc_ilp::DisaggregationProblem =
        serde_json::from_str(&serde_json::to_string(&d).expect("serialize")).expect("deserialize");
    assert_eq!(back, d);
}

#[test]
fn dense_matrices_and_derived_figures() {
    let m = CommMatrix::from_dense(3, &[0, 5, 0, 7, 0, 1, 0, 0, 0]).expect("3 x 3");
    assert_eq!(m.entries.len(), 3);
    assert_eq!(m.total(), 13);
    assert_eq!(m.to_dense(3), vec![0, 5, 0, 7, 0, 1, 0, 0, 0]);
    assert!(CommMatrix::from_dense(3, &[0; 8]).is_err());
    let c = Candidate {
        app: AppId(1),
        components: vec![
            ComponentKey::Compute(ComputeId(0)),
            ComponentKey::Compute(ComputeId(1)),
            ComponentKey::Memory(MemoryId(0)),
        ],
        cpu: vec![100, 200, 0],
        memory: vec![1, 2, 40],
        communication: m,
    };
    assert_eq!(c.saving(), 13);
    assert_eq!(c.demand(), Capacity::new(300, 43));
    assert_eq!(c.demand_by_kind(), (Capacity::new(300, 3), Capacity::new(0, 40)));
    assert!(c.validate(0).is_ok());
}

#[test]
fn extreme_values_do_not_overflow() {
    let big = |app: u64, member: u32| Candidate {
        app: AppId(app),
        components: vec![ComponentKey::Compute(ComputeId(member)), ComponentKey::Memory(MemoryId(0))],
        cpu: vec![u64::MAX / 4, u64::MAX / 4],
        memory: vec![1 << 62, 1 << 62],
        communication: CommMatrix::from_entries(vec![Traffic { from: 0, to: 1, bytes: (1 << 62) + u64::from(member) }]),
    };
    let cap = Capacity::new(u64::MAX, u64::MAX);
    // Disjoint: the knapsack path; two of three fit.
    let p = AggregationProblem::new(vec![big(0, 0), big(1, 1), big(2, 2)], cap);
    let s = p.solve(&SolveOptions::default()).expect("valid");
    assert_eq!(s.method, SolveMethod::Knapsack2);
    assert_eq!(s.chosen.len(), 1, "{:?}", s.chosen);
    assert!(p.evaluate(&s.chosen).expect("valid").feasible);
    // Overlapping (one application, shared memory component): the general path.
    let q = AggregationProblem::new(vec![big(0, 0), big(0, 1), big(1, 2)], cap);
    let s = q.solve(&SolveOptions::default()).expect("valid");
    assert_eq!(s.method, SolveMethod::BranchAndBound);
    assert!(q.evaluate(&s.chosen).expect("valid").feasible);
    assert!(s.optimal);
}

struct Fake(Result<String, String>);

impl resc_ilp::bench::BaselineRunner for Fake {
    fn run(&mut self, request: &str) -> Result<String, String> {
        assert!(request.contains("\"instances\"") && request.contains("\"communication\""));
        self.0.clone()
    }
}

#[test]
fn bench_merges_baselines_and_reports_failures_as_skipped() {
    use resc_ilp::bench::{self, BenchOptions, BASELINES, RESC};
    let mut options = BenchOptions::quick();
    options.instances.truncate(1);
    options.repetitions = 1;
    let spec = options.instances[0];
    // A runner that fails: every baseline is skipped with the reason.
    let mut failing = Fake(Err("python3 not found".into()));
    let report = bench::run(&options, Some(&mut failing), &mut |_| {}).expect("valid");
    assert_eq!(report.results.len(), 1 + BASELINES.len());
    for r in report.results.iter().filter(|r| r.solver != RESC) {
        assert_eq!(r.skipped.as_deref(), Some("python3 not found"));
        assert!(r.median_ms.is_none());
    }
    // Malformed output: skipped too, not an error.
    let mut garbage = Fake(Ok("not json".into()));
    let report = bench::run(&options, Some(&mut garbage), &mut |_| {}).expect("valid");
    assert!(report.results.iter().filter(|r| r.solver != RESC).all(|r| r.skipped.is_some()));
    // A worse baseline: merged, and the checks compare against it.
    let answer = format!(
        r#"[{{"n":{},"k":{},"kind":"{}","seed":1,"solver":"highspy","median_ms":500.0,"objective":1e30,"gap":0.0}}]"#,
        spec.n, spec.k, spec.kind
    );
    let mut ok = Fake(Ok(answer));
    let report = bench::run(&options, Some(&mut ok), &mut |_| {}).expect("valid");
    let highs = report.results.iter().find(|r| r.solver == "highspy").expect("merged");
    assert_eq!(highs.median_ms, Some(500.0));
    let missing = report.results.iter().find(|r| r.solver == "python-mip-cbc").expect("listed");
    assert!(missing.skipped.is_some());
    let not_worse = report.checks.iter().find(|c| c.name.contains("never worse")).expect("check");
    assert!(not_worse.passed, "{}", not_worse.detail);
    let json = serde_json::to_value(&report).expect("serializable");
    for r in json["results"].as_array().expect("array") {
        for key in ["n", "k", "kind", "solver", "median_ms", "objective", "gap"] {
            assert!(r.get(key).is_some(), "missing {key}");
        }
    }
}
