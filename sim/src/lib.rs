//! Deterministic drills: the real controller and replicator code on
//! turmoil hosts.
//!
//! One turmoil host per site runs an unchanged [`tandem_controller::node::Node`]
//! and [`tandem_replicator::server::Replicator`] with the turmoil transport,
//! a simulated clock and in-memory disks that lose unsynced writes when the
//! host crashes. A client host runs the workload; SRE commands run on their
//! own hosts through the CLI's library code. [`drill::run`] runs a
//! [`scenario::Scenario`] and checks the invariants ([`checks`]);
//! [`report`] writes what an auditor reads. One seed drives turmoil's
//! network, tokio's scheduler choices and openraft's election timeouts, so a
//! seed reproduces a run exactly; every run records an event trace whose
//! hash proves it.
//!
//! Code here runs under the simulation: no `std::time` clocks, no OS
//! randomness, no `HashMap` iteration.

pub mod campaign;
pub mod checks;
pub mod clock;
pub mod cluster;
pub mod disk;
pub mod drill;
pub mod findings;
pub mod fuzz;
pub mod grading;
pub mod keys;
pub mod parallel;
pub mod recovery;
pub mod report;
pub mod scenario;
pub mod sre;
pub mod targets;
pub mod trace;
pub mod workload;

pub use cluster::{NodeView, SimCluster, SimError};
pub use trace::Trace;
