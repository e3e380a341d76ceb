//! Simulated networks (`sim`): meshes, races, loss, crashes and restarts.

use super::*;

fn count_joins_and_leaves(events: &[Event]) -> (usize, usize) {
    (joined(events).len(), left(events).len())
}

#[test]
fn ten_devices_form_a_full_mesh_with_one_link_per_pair() {
    let mut sim = sim::Sim::new(1);
    let start = sim.now;
    for i in 0..10 {
        sim.add(&format!("dev{i}"), PeerTableConfig::default());
    }
    assert!(sim.run_for(Duration::from_secs(2), sim::Sim::full_mesh));
    let took = sim.now - start;
    assert!(took < ms(500), "mesh took {took:?} of simulated time");
    sim.settle();
    assert!(sim.full_mesh());
    assert_eq!(sim.open_links(), 45);
    for i in 0..10 {
        assert_eq!(count_joins_and_leaves(sim.events(i)), (9, 0), "node {i}");
        assert!(
            !sim.events(i)
                .iter()
                .any(|e| matches!(e, Event::DuplicateName { .. }))
        );
    }
    // Quiet afterwards: a minute of beacons changes nothing.
    sim.run_for(Duration::from_secs(60), |_| false);
    assert_eq!(sim.open_links(), 45);
    for i in 0..10 {
        assert_eq!(count_joins_and_leaves(sim.events(i)), (9, 0), "node {i}");
    }
}

#[test]
fn simultaneous_starts_with_random_latency_never_flap() {
    for seed in 0..40 {
        let mut sim = sim::Sim::new(seed);
        sim.max_latency = ms(10);
        for i in 0..4 {
            sim.add(&format!("dev{i}"), PeerTableConfig::default());
        }
        assert!(
            sim.run_for(Duration::from_secs(2), sim::Sim::full_mesh),
            "seed {seed}"
        );
        sim.settle();
        assert_eq!(sim.open_links(), 6, "seed {seed}");
        for i in 0..4 {
            assert_eq!(
                count_joins_and_leaves(sim.events(i)),
                (3, 0),
                "seed {seed} node {i}: {:?}",
                sim.events(i)
            );
        }
    }
}

#[test]
fn lossy_multicast_meshes_converge_within_five_seconds() {
    for seed in 0..20 {
        let mut sim = sim::Sim::new(100 + seed);
        sim.loss = 0.1;
        sim.max_latency = ms(5);
        for i in 0..5 {
            sim.add(&format!("dev{i}"), PeerTableConfig::default());
        }
        assert!(
            sim.run_for(Duration::from_secs(5), sim::Sim::full_mesh),
            "seed {seed}"
        );
        sim.settle();
        assert_eq!(sim.open_links(), 10, "seed {seed}");
    }
}

#[test]
fn static_peers_without_multicast_form_a_mesh_through_one_seed() {
    let mut sim = sim::Sim::new(7);
    sim.multicast = false;
    let seed = sim.add("seed", PeerTableConfig::default());
    let seed_addr = sim.addr_of(seed);
    for name in ["b", "c"] {
        let config = PeerTableConfig::builder()
            .static_peers([seed_addr])
            .build()
            .unwrap();
        sim.add(name, config);
    }
    assert!(sim.run_for(Duration::from_secs(2), sim::Sim::full_mesh));
    sim.settle();
    assert_eq!(sim.open_links(), 3);
    // A late fourth device, also knowing only the seed, joins everyone.
    let config = PeerTableConfig::builder()
        .static_peers([seed_addr])
        .build()
        .unwrap();
    sim.add("d", config);
    assert!(sim.run_for(Duration::from_secs(2), sim::Sim::full_mesh));
    sim.settle();
    assert_eq!(sim.open_links(), 6);
}

fn left_reasons(sim: &sim::Sim, node: usize, who: DeviceId) -> Vec<LeaveReason> {
    left(sim.events(node))
        .into_iter()
        .filter(|(id, _)| *id == who)
        .map(|(_, r)| r)
        .collect()
}

#[test]
fn a_graceful_shutdown_is_seen_as_goodbye_at_once() {
    let mut sim = sim::Sim::new(3);
    for i in 0..3 {
        sim.add(&format!("dev{i}"), PeerTableConfig::default());
    }
    assert!(sim.run_for(Duration::from_secs(2), sim::Sim::full_mesh));
    sim.settle();
    let gone = sim.id_of(2);
    sim.close(2);
    let seen = |s: &sim::Sim| (0..2).all(|i| !left_reasons(s, i, gone).is_empty());
    let before = sim.now;
    assert!(sim.run_for(ms(100), seen));
    assert!(sim.now - before <= ms(20));
    for i in 0..2 {
        assert_eq!(left_reasons(&sim, i, gone), [LeaveReason::Goodbye]);
    }
    sim.settle();
    assert_eq!(sim.open_links(), 1);
}

#[test]
fn a_crash_is_seen_as_a_departure_quickly() {
    let mut sim = sim::Sim::new(4);
    for i in 0..3 {
        sim.add(&format!("dev{i}"), PeerTableConfig::default());
    }
    assert!(sim.run_for(Duration::from_secs(2), sim::Sim::full_mesh));
    sim.settle();
    let gone = sim.id_of(2);
    sim.crash(2);
    let seen = |s: &sim::Sim| (0..2).all(|i| !left_reasons(s, i, gone).is_empty());
    let before = sim.now;
    assert!(sim.run_for(Duration::from_secs(3), seen));
    // The reset is seen at once; the redial is refused about 100 ms later.
    assert!(sim.now - before <= ms(600), "{:?}", sim.now - before);
    for i in 0..2 {
        assert_eq!(left_reasons(&sim, i, gone), [LeaveReason::ConnectionLost]);
    }
    // And forgotten once its lease runs out.
    sim.run_for(Duration::from_secs(4), |_| false);
    for i in 0..2 {
        assert!(sim.table(i).discovered().iter().all(|p| p.id != gone));
    }
}

#[test]
fn a_restarted_device_replaces_its_old_incarnation_everywhere() {
    let mut sim = sim::Sim::new(5);
    for i in 0..3 {
        sim.add(&format!("dev{i}"), PeerTableConfig::default());
    }
    assert!(sim.run_for(Duration::from_secs(2), sim::Sim::full_mesh));
    sim.settle();
    let old = sim.id_of(2);
    let addr = sim.addr_of(2);
    // Power loss: no reset reaches anyone, and the device is back at once under a new
    // id and a new port.
    sim.shutdown_silently(2);
    let new = sim.add_at(
        "dev2",
        PeerTableConfig::default(),
        addr.ip(),
        addr.port() + 100,
    );
    let new_id = sim.id_of(new);
    // The new id joins at once; the old one's links last until their heartbeat times
    // out (no reset came), and the name is shared meanwhile; then the old id leaves as
    // restarted, without a reconnect grace.
    assert!(sim.run_for(Duration::from_secs(2), |s| {
        (0..2).all(|i| joined(s.events(i)).contains(&new_id))
    }));
    assert!(
        left_reasons(&sim, 0, old).is_empty(),
        "its link still looks up"
    );
    sim.time_out_links_to(2);
    for i in 0..2 {
        assert_eq!(left_reasons(&sim, i, old), [LeaveReason::Restarted]);
        assert!(joined(sim.events(i)).contains(&new_id));
        assert_eq!(sim.table(i).resolve("dev2").map(|r| r.0), Ok(new_id));
    }
}
