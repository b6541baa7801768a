//! Deterministic drills: the real controller code on turmoil hosts.
//!
//! One turmoil host per site runs an unchanged [`tandem_controller::node::Node`]
//! with the turmoil transport, a simulated clock and an in-memory disk that
//! loses unsynced writes when the host crashes. One seed drives turmoil's
//! network, tokio's scheduler choices and openraft's election timeouts, so a
//! seed reproduces a run exactly; every run records an event trace whose
//! hash proves it.
//!
//! Code here runs under the simulation: no `std::time` clocks, no OS
//! randomness, no `HashMap` iteration.

pub mod clock;
pub mod cluster;
pub mod trace;

pub use cluster::{NodeView, SimCluster, SimError};
pub use trace::Trace;
