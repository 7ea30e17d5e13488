// SPDX-License-Identifier: MIT OR GPL-2.0-only
use clap::Args;

use crate::agent::config::Flags;

/// Run the agent: create or adopt the bridge, serve the API, keep state.
///
/// It manages the network namespace it is started in. Stop it with SIGTERM
/// or SIGINT: containers' networking stays in place and a restarted agent
/// adopts it. `netd down` removes everything.
///
/// Example: `netd agent --uplink eth0 --subnet 172.30.0.0/16`
#[derive(Args)]
pub struct Agent {
    #[command(flatten)]
    flags: Flags,
}

impl Agent {
    pub async fn execute(self) -> anyhow::Result<()> {
        crate::agent::run(self.flags).await
    }
}
