//! crid: a Kubernetes CRI v1 runtime on containerd.

mod alloc;
mod cgroups;
mod container;
mod containerd;
mod cri;
mod debug;
mod error;
mod events;
mod helper_client;
mod image;
mod logging;
mod nri;
mod own_metrics;
mod rpc_layer;
mod runtime_handler;
mod sandbox;
mod server;
mod store;
mod streaming;
mod systemd_cgroups;
mod timing;
// CreateContainer (issue 5) wires the spec generator; until then only its tests use it.
#[allow(dead_code)]
mod spec;
mod stats;
mod userns;

use clap::Parser;
use crid_common::config::{Config, DEFAULT_CONFIG_PATH};
use std::path::PathBuf;
use std::process::ExitCode;

/// Command line; everything else lives in the config file.
#[derive(Debug, Parser)]
#[command(
    name = "crid",
    version,
    about = "Kubernetes CRI v1 runtime on containerd"
)]
struct Args {
    /// Configuration file (TOML).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// CRI socket path (overrides `socket`).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// containerd socket path (overrides `containerd.address`).
    #[arg(long, value_name = "PATH")]
    containerd_address: Option<PathBuf>,
    /// Log filter, e.g. `debug` or `crid=debug,info` (overrides `log.level`).
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Print the full default configuration file and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Instead of serving: show the node's pods or the config, then exit.
    #[command(subcommand)]
    command: Option<Command>,
}

/// Commands other than serving CRI.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Show what crid's state and /proc say about the node's pods (works
    /// whether crid runs or not).
    Debug {
        #[command(subcommand)]
        what: debug::DebugCommand,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.print_default_config {
        print!("{}", Config::default_toml());
        return ExitCode::SUCCESS;
    }
    let config = match load_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("crid: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Debug { what }) = &args.command {
        return match debug::run(what, &config) {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("crid debug: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Err(e) = logging::init(&config.log) {
        eprintln!("crid: {e}");
        return ExitCode::from(2);
    }
    alloc::tune();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads())
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("crid: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server::serve(config, server::shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "crid failed");
            ExitCode::FAILURE
        }
    }
}

/// Async worker threads: one per core, at most [`MAX_WORKERS`]. crid's
/// async work is short (gRPC calls, record updates); anything that blocks
/// runs on the blocking pool, so more workers only add idle threads, stacks
/// and malloc state.
fn worker_threads() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .clamp(1, MAX_WORKERS)
}

/// Upper bound of [`worker_threads`].
const MAX_WORKERS: usize = 4;

/// The config file, then the flags over it, validated once more.
fn load_config(args: &Args) -> Result<Config, crid_common::config::ConfigError> {
    let (path, explicit) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let mut config = Config::load(&path, explicit)?;
    if let Some(s) = &args.socket {
        config.socket = s.clone();
    }
    if let Some(a) = &args.containerd_address {
        config.containerd.address = a.clone();
    }
    if let Some(l) = &args.log_level {
        config.log.level = l.clone();
    }
    config.validate()?;
    Ok(config)
}
