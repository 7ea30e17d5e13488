// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The command line: one module per command; the doc comments are the help.
//!
//! Exit codes: 0 success, 1 the operation failed, 2 bad usage, 3 the agent
//! could not be reached.

mod agent;
mod attach;
mod completion;
mod conntrack;
mod detach;
mod down;
mod manpages;
mod monitor;
mod network;
mod observe;
mod output;
mod ports;
mod ps;
mod publish;
mod rename;
mod stats;
mod status;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

use crate::{
    client::{Client, ClientError},
    paths,
};

/// netd: an eBPF datapath for containers (bridge, published ports,
/// masquerade) with no iptables rule and no proxy process.
///
/// Start the agent (`netd agent`), then attach network namespaces to its
/// bridge (`netd attach NETNS`). Every other command talks to the agent over
/// its socket.
#[derive(Parser)]
#[command(name = "netd", version, about, long_about, max_term_width = 100)]
pub struct Cli {
    /// The agent's API socket.
    #[arg(long, global = true, env = "NETD_SOCKET", default_value = paths::SOCKET)]
    socket: PathBuf,
    /// Print results (and errors) as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Agent(agent::Agent),
    Attach(attach::Attach),
    Detach(detach::Detach),
    Rename(rename::Rename),
    Publish(publish::Publish),
    Unpublish(publish::Unpublish),
    Ps(ps::Ps),
    Ports(ports::Ports),
    Conntrack(conntrack::Conntrack),
    Stats(stats::Stats),
    Network(network::Network),
    Status(status::Status),
    Down(down::Down),
    Monitor(monitor::Monitor),
    Observe(observe::Observe),
    Completion(completion::Completion),
    #[command(hide = true)]
    Manpages(manpages::Manpages),
}

/// What every command gets: how to reach the agent and how to print.
pub struct Context {
    pub client: Client,
    pub json: bool,
}

const EXIT_FAILED: u8 = 1;
const EXIT_UNREACHABLE: u8 = 3;

impl Cli {
    pub fn execute(self) -> ExitCode {
        // Neither needs the agent nor a runtime.
        match self.command {
            Command::Completion(cmd) => return local(cmd.execute(), self.json),
            Command::Manpages(cmd) => return local(cmd.execute(), self.json),
            _ => {}
        }
        crate::logging::init();
        let ctx = Context {
            client: Client::new(&self.socket),
            json: self.json,
        };
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(err) => {
                eprintln!("netd: starting the async runtime: {err}");
                return ExitCode::from(EXIT_FAILED);
            }
        };
        let result = runtime.block_on(async {
            match self.command {
                Command::Agent(cmd) => cmd.execute().await,
                Command::Attach(cmd) => cmd.execute(&ctx).await,
                Command::Detach(cmd) => cmd.execute(&ctx).await,
                Command::Rename(cmd) => cmd.execute(&ctx).await,
                Command::Publish(cmd) => cmd.execute(&ctx).await,
                Command::Unpublish(cmd) => cmd.execute(&ctx).await,
                Command::Ps(cmd) => cmd.execute(&ctx).await,
                Command::Ports(cmd) => cmd.execute(&ctx).await,
                Command::Conntrack(cmd) => cmd.execute(&ctx).await,
                Command::Stats(cmd) => cmd.execute(&ctx).await,
                Command::Network(cmd) => cmd.execute(&ctx).await,
                Command::Status(cmd) => cmd.execute(&ctx).await,
                Command::Down(cmd) => cmd.execute(&ctx).await,
                Command::Monitor(cmd) => cmd.execute(&ctx).await,
                Command::Observe(cmd) => cmd.execute().await,
                Command::Completion(_) | Command::Manpages(_) => unreachable!("handled above"),
            }
        });
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => report(&err, ctx.json),
        }
    }
}

/// The exit of a command that runs here, without the agent.
fn local(result: anyhow::Result<()>, json: bool) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => report(&err, json),
    }
}

/// Prints `err` as one line (or JSON) and picks the exit code.
fn report(err: &anyhow::Error, json: bool) -> ExitCode {
    let client = err.downcast_ref::<ClientError>();
    let kind = match (
        client,
        err.downcast_ref::<crate::agent::error::AgentError>(),
    ) {
        (Some(client), _) => client.kind().to_owned(),
        (None, Some(agent)) => agent.kind().as_str().to_owned(),
        (None, None) => "error".to_owned(),
    };
    let message = format!("{err:#}");
    if json {
        let mut error = serde_json::json!({ "message": message, "kind": kind });
        // The hint is in the message too (one line for people); a field
        // of its own for programs.
        if let Some(hint) = client.and_then(ClientError::hint) {
            error["hint"] = hint.into();
        }
        println!("{}", serde_json::json!({ "error": error }));
    } else {
        eprintln!("netd: {message}");
    }
    match client {
        Some(ClientError::Unreachable { .. }) => ExitCode::from(EXIT_UNREACHABLE),
        _ => ExitCode::from(EXIT_FAILED),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// The package's /etc/default/netd names every flag of the agent by
    /// its environment variable, so that none is missing from it.
    #[test]
    fn the_default_file_names_every_agent_flag() {
        let file = include_str!("../../../packaging/netd.default");
        let cli = super::Cli::command();
        let agent = cli.find_subcommand("agent").expect("netd agent");
        for arg in agent.get_arguments() {
            let Some(env) = arg.get_env() else { continue };
            let env = env.to_string_lossy();
            assert!(
                file.lines().any(|l| l.starts_with(&format!("#{env}="))),
                "packaging/netd.default lacks {env}"
            );
        }
    }
}
