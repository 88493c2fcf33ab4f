//! weir-agent: the node agent's command line.
//!
//! - `weir-agent [FLAGS]`: the standalone API server, a drop-in katran-server
//!   (its flags as `-port 8080` or `--port 8080`); stops on SIGTERM/SIGINT;
//! - `weir-agent --cluster --node-name NAME --interface IF --default-mac MAC`:
//!   cluster mode, the same server with the datapath programmed from the
//!   cluster's VirtualServices and RealServers (the DaemonSet's command);
//! - `weir-agent decap --iface IF [--remove]`: attach (or detach) the
//!   real-side decapsulation program; it stays attached after the command exits.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use weir_agent::dataplane::{decap, pin, AttachMode};
use weir_agent::server::{self, flags, ServeFlags};

#[derive(Parser)]
#[command(
    name = "weir-agent",
    version,
    about = "weir's node agent: owns the XDP datapath of a node",
    long_about = "weir's node agent: owns the XDP datapath of a node.\n\nWithout a subcommand it serves \
                  katran-server's REST API. Every long flag is also accepted with one dash (-port 8080, -cors=false).",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(flatten)]
    serve: ServeFlags,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Attach weir's decapsulation program to a real server's interface, so
    /// that packets the balancer encapsulated reach the local stack. It stays
    /// attached (pinned) after this command exits.
    Decap {
        /// The real's interface that receives encapsulated packets.
        #[arg(long)]
        iface: String,
        /// Detach the program instead.
        #[arg(long)]
        remove: bool,
        /// XDP attach mode.
        #[arg(long, value_enum, default_value_t = Mode::Driver)]
        mode: Mode,
        /// Where on bpffs to pin the program's link and counters.
        #[arg(long, default_value = pin::DEFAULT_PIN_ROOT)]
        pin_root: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Mode {
    /// Native XDP in the driver.
    Driver,
    /// Generic (skb) XDP: works on any interface.
    Generic,
}

fn main() -> anyhow::Result<()> {
    // Logs go to stderr, so that stdout carries only the command's result.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse_from(flags::normalize_args(std::env::args_os()));
    let Some(command) = cli.command else {
        let runtime = tokio::runtime::Runtime::new()?;
        runtime.block_on(server::serve(cli.serve, server::signal::shutdown()))?;
        return Ok(());
    };
    match command {
        Command::Decap { iface, remove: true, pin_root, .. } => {
            decap::detach(&iface, &pin_root)?;
            println!("detached the decap program from {iface}");
        }
        Command::Decap { iface, remove: false, mode, pin_root } => {
            let mode = match mode {
                Mode::Driver => AttachMode::Driver,
                Mode::Generic => AttachMode::Generic,
            };
            decap::attach(&iface, mode, &pin_root)?;
            println!("attached the decap program to {iface} ({mode:?} mode); remove with --remove");
        }
    }
    Ok(())
}
