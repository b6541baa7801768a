//! tandem's control plane.
//!
//! A Raft group with one voter per site keeps one agreed view of the
//! cluster: sites and roles, the shard map (owner, epoch), in-city
//! replication modes, policy, generation and the audit log.
//!
//! Module map:
//! - [`state`]: the replicated state; [`ops`]: the commands that change it
//!   (one file per operation), applied only from committed Raft entries;
//! - [`raft`]: openraft wiring (stores over the storage seam, peer network,
//!   runtime with a seedable RNG);
//! - [`service`]: the control API for the CLI; [`client`]: its client;
//! - [`node`]: starts a node from a [`config::NodeConfig`] and [`node::NodeDeps`];
//! - [`health`]: replicator heartbeats (lag per link), kept in memory;
//! - [`members`]: the Raft membership as the leader sees it;
//! - [`clock`]: the wall-clock seam;
//! - [`plan`]: the pure planner (which target, what it would lose, every
//!   refusal it can decide from the controllers' view);
//! - [`operations`]: the SRE operations (switchover, failover, failback,
//!   DR activate and rejoin, pause and resume, verify and repair), once,
//!   for the CLI, the detector ([`detect`]) and the drill alike.
//!
//! This crate never changes state except through Raft, and never reads
//! wall time or randomness while applying the log.

pub mod audit;
pub mod client;
pub mod clock;
pub mod config;
pub mod convert;
pub mod detect;
pub mod health;
pub mod lease;
pub mod members;
pub mod metrics;
pub mod node;
pub mod operations;
pub mod ops;
pub mod orphans;
pub mod plan;
pub mod raft;
pub mod service;
pub mod state;
pub mod status;
