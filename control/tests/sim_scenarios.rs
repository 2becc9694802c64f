//! The simulator's scenarios, with bounds on simulated time: the routing
//! core's failover and stability under the default settings. Simulated
//! time is deterministic for a seed, so these are not timing tests.

use std::time::Duration;

use detour_control::sim::{Report, Scenario, SimConfig, run};

fn simulate(scenario: Scenario, nodes: usize, seed: u64) -> Report {
    let report = run(&SimConfig::new(scenario, nodes, seed));
    eprintln!("{report}");
    report
}

/// Every affected route works again within a second of the failure.
fn assert_failover_under_a_second(report: &Report) {
    assert!(report.affected_routes > 0, "the failure touched no route");
    assert_eq!(
        report.recovered_routes, report.affected_routes,
        "routes left broken"
    );
    let worst = report.failover_max_ms.expect("all recovered");
    assert!(worst < 1000.0, "failover took {worst} ms");
    let detection = report.detection_ms.expect("the failure was detected");
    assert!(detection < 1000.0, "detection took {detection} ms");
}

#[test]
fn a_cut_link_is_routed_around_within_a_second() {
    for seed in [1, 2, 3] {
        assert_failover_under_a_second(&simulate(Scenario::LinkCut, 40, seed));
    }
}

#[test]
fn a_failed_relay_is_routed_around_within_a_second() {
    for seed in [1, 2] {
        let report = simulate(Scenario::RelayFailure, 40, seed);
        assert_failover_under_a_second(&report);
        // Routes to the dead node itself are marked unreachable everywhere.
        let marked = report.unreachable_marked_ms.expect("all marked");
        assert!(marked < 1000.0, "took {marked} ms to give up on it");
    }
}

#[test]
fn a_partition_is_routed_around_within_each_side_and_given_up_across() {
    for seed in [1, 2, 3] {
        let report = simulate(Scenario::Partition, 20, seed);
        assert!(report.affected_routes > 0);
        assert_eq!(report.recovered_routes, report.affected_routes);
        // Every route to the far side is marked unreachable.
        let marked = report.unreachable_marked_ms.expect("all marked");
        assert!(marked < 1000.0, "took {marked} ms to give up across");
    }
}

#[test]
fn a_steady_lossless_overlay_never_changes_a_route() {
    let mut config = SimConfig::new(Scenario::Steady, 30, 1);
    config.lossy_share = 0.0;
    config.after = Duration::from_secs(10);
    let report = run(&config);
    eprintln!("{report}");
    assert_eq!(report.route_changes_before + report.route_changes_after, 0);
    assert_eq!(report.late_replies, 0, "spurious probe timeouts");
}

#[test]
fn a_steady_lossy_overlay_does_not_flap() {
    // Some pairs lose up to 2 %: estimates wander, but no route goes back
    // and forth. The loss window fills in 20 s.
    let mut config = SimConfig::new(Scenario::Steady, 30, 1);
    config.warmup = Duration::from_secs(25);
    config.after = Duration::from_secs(10);
    let report = run(&config);
    eprintln!("{report}");
    assert_eq!(report.flaps, 0);
}

#[test]
fn a_flapping_link_keeps_most_affected_routes_working() {
    let report = simulate(Scenario::Flapping, 20, 1);
    let availability = report.affected_availability.expect("sampled");
    assert!(availability > 0.8, "available {availability}");
}
