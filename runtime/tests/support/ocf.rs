//! The ocf-tester sequence every group resource must pass, starting from stopped. Included by the test crates of
//! the resource kinds.
#![allow(dead_code)]

use tandem_runtime::resources::{GroupResource, Invocation, Probe};

/// A call made without the lease (a probe on a standby node, a stop after the lease is gone).
pub const UNLEASED: Invocation = Invocation { lease_token: None };

/// probe (stopped) → start → start again → probe (running) → stop → probe (stopped) → stop again; the calls that
/// a node makes under the lease get `leased`.
pub async fn conformance(r: &dyn GroupResource, leased: &Invocation) {
    let who = format!("{} {}", r.kind(), r.name());
    assert_eq!(r.probe(&UNLEASED).await, Ok(Probe::Stopped), "{who}: probe before start");
    assert_eq!(r.start(leased).await, Ok(()), "{who}: start");
    assert_eq!(r.start(leased).await, Ok(()), "{who}: start when running");
    assert_eq!(r.probe(leased).await, Ok(Probe::Running), "{who}: probe after start");
    assert_eq!(r.stop(leased).await, Ok(()), "{who}: stop");
    assert_eq!(r.probe(&UNLEASED).await, Ok(Probe::Stopped), "{who}: probe after stop");
    assert_eq!(r.stop(&UNLEASED).await, Ok(()), "{who}: stop when stopped");
}
