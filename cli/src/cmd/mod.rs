//! One file per subcommand.

pub mod audit;
pub mod bench;
pub mod change;
pub mod contract;
pub mod controller;
pub mod demo;
pub mod failover;
pub mod keys;
pub mod replicator;
pub mod status;
pub mod switchover;
pub mod verify;

use std::time::Duration;

use clap::Args as ClapArgs;
use tandem_controller::client::ControlClient;
use tandem_net::Transport;

/// How to reach the cluster; shared by every client command.
#[derive(ClapArgs, Clone, Debug)]
pub struct Target {
    /// Controller addresses (host:port, comma-separated), tried in order.
    #[arg(long, env = "TANDEM_CONTROLLERS", default_value = crate::DEMO_CONTROLLERS, value_delimiter = ',')]
    pub controllers: Vec<String>,
    /// Upper bound on each call to a controller, in milliseconds. Keep it
    /// above the controllers' commit timeout (5000 ms by default).
    #[arg(long, default_value_t = 8000)]
    pub timeout_ms: u64,
}

impl Target {
    pub fn client(&self) -> ControlClient {
        ControlClient::new(self.controllers.clone(), Transport::Tokio, Duration::from_millis(self.timeout_ms))
    }
}
