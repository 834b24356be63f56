//! `resc_core`'s scheduler conformance suite against every scheduler here.

use resc_core::scheduler::Scheduler;
use resc_core::testkit::scheduler::scheduler_suite;
use resc_sched::{RackScheduler, SchedConfig, TwoLevelScheduler};

#[test]
fn two_level_size_classes() {
    scheduler_suite(|cluster| {
        Box::new(TwoLevelScheduler::new(cluster, SchedConfig::default().with_seed(7)).expect("valid cluster"))
            as Box<dyn Scheduler>
    });
}

#[test]
fn two_level_whole_first_fit() {
    scheduler_suite(|cluster| {
        Box::new(TwoLevelScheduler::new(cluster, SchedConfig::whole_first_fit()).expect("valid cluster"))
            as Box<dyn Scheduler>
    });
}

#[test]
fn flat_rack_scheduler() {
    scheduler_suite(|cluster| {
        Box::new(RackScheduler::from_cluster(cluster, &SchedConfig::default().with_seed(3)).expect("valid cluster"))
            as Box<dyn Scheduler>
    });
}
