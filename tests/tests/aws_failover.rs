//! End to end, for each HA topology of terraform-examples/ (VIP, EIP and DNS name control): `terraform apply`
//! against moto → two tandemd in network namespaces that own the nodes' private IPs, running the configs
//! `tandem_cluster` rendered → the service address points at node1 → someone changes it by hand: the monitor
//! sees it and recovery puts it back → the AWS API throttles / fails / stalls: nothing moves under `warn`,
//! recovery runs under `recover` → SIGKILL of node1: the address points at node2 → node1 back, manual move back
//! → clean stop → `terraform destroy` leaves nothing. The nodes call AWS through a fault-injecting proxy in front
//! of moto ([`tandem_tests::aws_proxy`]). Needs root (namespaces).

use std::time::{Duration, Instant, SystemTime};

use tandem_tests::aws_proxy::{Fault, Service};
use tandem_tests::nodes::wait_until;
use tandem_tests::topology::{AwsState, Example, ExampleCluster, Tuning};

const LONG: Duration = Duration::from_secs(20);

fn ok<T>(r: Result<T, Box<dyn std::error::Error>>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Node i's recovery events for the example's resource.
fn recoveries(c: &ExampleCluster, i: usize) -> usize {
    ok(c.events_matching(i, "recovery", &format!("monitor {}", c.example.resource())), "events").len()
}

/// A hand edit of the service address on the active node 0: the monitor notices, recovery restarts the resource,
/// the address points at node 0 again; no failover.
fn hand_edit_is_repaired(c: &ExampleCluster, edit: impl FnOnce(&ExampleCluster)) {
    let before = recoveries(c, 0);
    edit(c);
    assert_ne!(ok(c.aws_state(), "AWS state"), AwsState::Node(0), "the hand edit took no effect");
    ok(c.wait_aws(0, LONG), "repaired");
    ok(
        wait_until(Duration::from_secs(5), "recovery event", || recoveries(c, 0) > before).map_err(|e| e.into()),
        "recovery recorded",
    );
    let restarts =
        ok(c.events_matching(0, "recovery", &format!("restarting resource {}", c.example.resource())), "events");
    assert!(!restarts.is_empty(), "recovery restarted the resource in place:\n{}", c.logs());
    assert_eq!(ok(c.starts(1), "journal"), 0, "no failover for a hand edit:\n{}", c.logs());
    assert_eq!(ok(c.role(0), "role"), "active");
}

/// AWS fails for `service` for `for_` under `on_aws_error = "warn"`: the monitor says unknown, nothing recovers,
/// nothing moves; afterwards the monitor is ok again.
fn api_fault_only_warns(c: &ExampleCluster, service: Service, fault: Fault, for_: Duration) {
    let monitor = c.example.resource();
    let before = recoveries(c, 0);
    let started = Instant::now();
    c.proxy.inject(Some(service), fault.clone(), Some(for_));
    let mut seen = None;
    while started.elapsed() < for_ {
        if let Ok((state, message)) = c.monitor(0, monitor)
            && state == "unknown"
        {
            seen = Some(message);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let message = seen.unwrap_or_else(|| panic!("monitor {monitor} never said unknown under {fault:?}:\n{}", c.logs()));
    assert!(message.contains("TDM-"), "the unknown carries a stable code: {message}");
    ok(
        wait_until(LONG, "monitor ok again", || c.monitor(0, monitor).is_ok_and(|(s, _)| s == "ok"))
            .map_err(|e| e.into()),
        "monitor recovers by itself",
    );
    assert_eq!(recoveries(c, 0), before, "no recovery under warn:\n{}", c.logs());
    assert_eq!(ok(c.starts(1), "journal"), 0, "no failover under warn:\n{}", c.logs());
    assert_eq!(ok(c.running(), "journal"), vec![c.names[0].clone()]);
    assert_eq!(ok(c.aws_state(), "AWS state"), AwsState::Node(0));
    let faulted = c.proxy.calls().iter().filter(|call| call.fault.is_some()).count();
    assert!(faulted > 0, "the proxy injected the fault into the nodes' calls");
}

/// SIGKILL of node 0 → the address at node 1 with one write per route table / one association / one UPSERT;
/// node 0 back as standby; `group move --to node1` → the address at node 0; clean stop; destroy.
fn crash_failover_move_back_and_destroy(mut c: ExampleCluster) {
    c.proxy.reset_calls();
    let killed = c.kill_node(0).unwrap_or_else(|| panic!("node1 is not running"));
    ok(c.wait_aws(1, LONG), "AWS state at node2 after the kill");
    ok(c.wait_active(1, LONG), "node2 active");
    let node2 = std::net::IpAddr::V4(c.bed.node_addr(1));
    let writes: Vec<String> = c
        .proxy
        .calls()
        .into_iter()
        .filter(|call| call.client == node2 && call.at >= killed)
        .map(|call| call.operation)
        .filter(|op| {
            ["ReplaceRoute", "CreateRoute", "AssociateAddress", "ChangeResourceRecordSets"].contains(&op.as_str())
        })
        .collect();
    let expected = match c.example {
        Example::Vip => {
            vec!["ReplaceRoute".to_string(); c.outputs["vip_route_tables"]["value"].as_array().map_or(0, Vec::len)]
        }
        Example::Eip => vec!["AssociateAddress".to_string()],
        Example::Dns => vec!["ChangeResourceRecordSets".to_string()],
    };
    assert_eq!(writes, expected, "AWS writes of the failover");
    c.assert_no_overlap();

    ok(c.start_node(0), "node1 back");
    ok(c.wait_role(0, "standby", LONG), "node1 standby");
    assert_eq!(ok(c.aws_state(), "AWS state"), AwsState::Node(1), "a returning node does not take the address");
    let out = ok(c.ctl(1, &["group", "move", &c.group, "--to", &c.names[0]]), "tandemctl");
    assert!(
        out.status.success(),
        "move back: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ok(c.wait_active(0, LONG), "node1 active after the move");
    ok(c.wait_aws(0, LONG), "AWS state at node1 after the move");
    c.assert_no_overlap();
    ok(c.destroy(), "clean stop and destroy");
}

#[test]
fn vip_topology_end_to_end() {
    let c = ok(ExampleCluster::apply(Example::Vip, Tuning::fast_with("warn")), "vip cluster");
    // Every VIP route at node1 (apply waited for it), and the VIP bound on node1 only.
    let vip = c.outputs["vip"]["value"].as_str().unwrap_or_default().to_string();
    let bound = |i: usize| {
        let out = std::process::Command::new("ip").args(["-n", c.bed.ns(i), "-4", "-o", "addr", "show"]).output();
        out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!(" {vip}/32")))
    };
    assert!(bound(0) && !bound(1), "the VIP is bound on node1 only");
    hand_edit_is_repaired(&c, |c| {
        ok(c.repoint_vip_route_by_hand(1), "replace route");
    });
    api_fault_only_warns(&c, Service::Ec2, Fault::Throttle, Duration::from_secs(3));
    crash_failover_move_back_and_destroy(c);
}

#[test]
fn eip_topology_end_to_end() {
    const FAULT: Duration = Duration::from_secs(6);
    let c = ok(ExampleCluster::apply(Example::Eip, Tuning::fast_with("recover")), "eip cluster");
    hand_edit_is_repaired(&c, |c| ok(c.disassociate_eip_by_hand(), "disassociate"));

    // Under `recover`, EC2 answering 500s is a failure like any other: recovery runs (restart, then failover if
    // the restart cannot finish). Once EC2 answers again, exactly one node runs the group and holds the EIP.
    let before: usize = (0..2).map(|i| recoveries(&c, i)).sum();
    let t0 = SystemTime::now();
    // 6 s: the SDK retries a 500 itself, so a check ends at the monitor's timeout (2 s); two in a row recover.
    c.proxy.inject(Some(Service::Ec2), Fault::ServerError, Some(FAULT));
    ok(
        wait_until(LONG, "a recovery under recover", || (0..2).map(|i| recoveries(&c, i)).sum::<usize>() > before)
            .map_err(|e| e.into()),
        "recovery",
    );
    std::thread::sleep(FAULT.saturating_sub(t0.elapsed().unwrap_or_default()));
    let mut active = None;
    ok(
        wait_until(LONG, "one node active with the EIP", || {
            let running = c.running().unwrap_or_default();
            let i = running.first().and_then(|n| c.names.iter().position(|x| x == n));
            active = i.filter(|_| running.len() == 1);
            active.is_some_and(|i| {
                c.aws_state().is_ok_and(|s| s == AwsState::Node(i)) && c.role(i).is_ok_and(|r| r == "active")
            })
        })
        .map_err(|e| format!("{e}\n{}", c.logs()).into()),
        "settled after the fault",
    );
    c.assert_no_overlap();
    if active == Some(1) {
        // Recovery failed the group over and marked node1 failed: a move there is refused at once, naming why;
        // the operator clears the mark on node1, then moves the group back (the crash below starts from node1).
        let refused = ok(c.ctl(1, &["group", "move", &c.group, "--to", &c.names[0]]), "tandemctl");
        let text = String::from_utf8_lossy(&refused.stderr).to_string();
        assert!(
            !refused.status.success() && text.contains("TDM-GRP-011") && text.contains("failed"),
            "{text}\n{}",
            c.logs()
        );
        let cleared = ok(c.ctl(0, &["group", "start", &c.group]), "tandemctl");
        assert!(cleared.status.success(), "{}", String::from_utf8_lossy(&cleared.stderr));
        ok(c.wait_role(0, "standby", LONG), "node1 standby once cleared");
        let out = ok(c.ctl(1, &["group", "move", &c.group, "--to", &c.names[0]]), "tandemctl");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        ok(c.wait_active(0, LONG), "node1 active");
        ok(c.wait_aws(0, LONG), "EIP at node1");
        ok(c.wait_role(1, "standby", LONG), "node2 standby");
    }
    c.proxy.clear();
    crash_failover_move_back_and_destroy(c);
}

#[test]
fn dns_topology_end_to_end() {
    let c = ok(ExampleCluster::apply(Example::Dns, Tuning::fast_with("warn")), "dns cluster");
    hand_edit_is_repaired(&c, |c| ok(c.delete_record_by_hand(), "delete record"));
    // Route 53 stalls longer than the monitor's timeout (2 s): unknown, never a failover.
    api_fault_only_warns(&c, Service::Route53, Fault::Stall(Duration::from_secs(5)), Duration::from_secs(5));
    crash_failover_move_back_and_destroy(c);
}
