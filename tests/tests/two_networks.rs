//! A cluster across two networks: two bridges joined by a router that forwards unicast only
//! (`dice_tests::netns`, [`Lan::add_network`]), so mDNS finds only the hosts of one's own
//! network. One `--peer` on one host of the second network is all it takes: Kademlia, through
//! that peer, finds the rest, and the four hosts form one cluster. A partition between the
//! networks (the router down), writes on both sides, and its heal.
//!
//! Needs root and iproute2, like the LAN tests (`DICE_LAN_TESTS`).
#![allow(clippy::unwrap_used)]

use dice_tests::netns::{Lan, lan_tests_enabled, set_pipelined};
use std::time::{Duration, Instant};

/// Bounded wait for the cluster to form through Kademlia (its periodic bootstrap is 30 s).
const FORM: Duration = Duration::from_secs(120);
/// Bounded wait for replicas to converge.
const CONVERGE: Duration = Duration::from_secs(90);

fn write(lan: &Lan, i: usize, prefix: &str, n: usize) {
    let pairs: Vec<(String, String)> = (0..n)
        .map(|k| (format!("{prefix}:{k:04}"), format!("from host {i}")))
        .collect();
    let mut conn = lan.connect(i);
    set_pipelined(&mut conn, &pairs, 200).unwrap_or_else(|(n, e)| panic!("{n} writes, then {e}"));
}

#[test]
fn one_peer_joins_two_networks_into_one_cluster_that_heals() {
    if !lan_tests_enabled("one_peer_joins_two_networks_into_one_cluster_that_heals") {
        return;
    }
    let mut lan = Lan::new(2); // hosts 0 and 1 on network 0
    lan.add_network();
    lan.add_host_on(1); // host 2
    lan.add_host_on(1); // host 3
    lan.start(0, &[]);
    lan.start(1, &[]);
    let peer0 = lan.status(0)["peer_id"].as_str().unwrap().to_string();
    let bootstrap = format!("/ip4/{}/tcp/7380/p2p/{peer0}", lan.host(0).addr());
    let t0 = Instant::now();
    lan.start(2, &["--peer", &bootstrap]);
    lan.start(3, &[]);

    // mDNS alone cannot cross the router: hosts 1 and 3 have no way to meet but Kademlia.
    let all = [0, 1, 2, 3];
    let Some(formed) = lan.wait_mesh(&all, FORM) else {
        let peers: Vec<_> = all.iter().map(|&i| lan.connected_peers(i)).collect();
        panic!("the two networks did not form one cluster within {FORM:?}: {peers:?}");
    };
    println!(
        "two networks, one --peer: all 4 hosts connected {:.2?} after the second network's \
         nodes started",
        t0.elapsed().max(formed)
    );
    write(&lan, 3, "before", 200);
    let (digest, took) = lan
        .wait_converged(&all, CONVERGE)
        .expect("a write on network 1 reaches network 0");
    println!("200 writes on host 3 on every host in {took:.2?} (digest {digest})");
    assert_eq!(lan.get(1, "before:0199").as_deref(), Some("from host 3"));

    // Partition: the router goes down; each network goes on by itself. Wait until the nodes
    // notice (missed pings) and drop their connections across, so that the heal needs
    // redials, not just TCP retransmits.
    let peer2 = lan.status(2)["peer_id"].as_str().unwrap().to_string();
    lan.cut_router();
    let t_cut = Instant::now();
    let dropped = dice_tests::wait_for(Duration::from_secs(30), || {
        (!lan.connected_peers(1).contains(&peer2)).then_some(())
    });
    assert!(dropped.is_some(), "host 1 still lists host 2 as connected");
    println!(
        "partition: host 1 dropped its connection to host 2 {:.2?} after the cut",
        t_cut.elapsed()
    );
    write(&lan, 1, "left", 300);
    write(&lan, 2, "right", 300);
    write(&lan, 0, "both", 100);
    write(&lan, 3, "both", 100);
    assert_eq!(
        lan.get(1, "right:0000"),
        None,
        "nothing crosses the cut router"
    );
    let t_heal = Instant::now();
    lan.heal_router();
    let (digest, took) = lan
        .wait_converged(&all, CONVERGE)
        .expect("the networks converge after the heal");
    println!(
        "healed: every host converged {took:.2?} after the router came back (digest {digest}; \
         {:.2?} since the heal)",
        t_heal.elapsed()
    );
    for i in all {
        assert_eq!(lan.get(i, "left:0299").as_deref(), Some("from host 1"));
        assert_eq!(lan.get(i, "right:0299").as_deref(), Some("from host 2"));
        let both = lan.get(i, "both:0050").unwrap();
        assert!(both == "from host 0" || both == "from host 3", "{both}");
        assert_eq!(lan.status(i)["keys"].as_u64(), Some(200 + 300 + 300 + 100));
    }
}
