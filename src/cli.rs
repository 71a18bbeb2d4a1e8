//! The command line: one subcommand per file under `cli/`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod audit;
mod config_check;
mod credential;
mod demo;
mod key;
mod reindex;
mod serve;
mod sessions;

/// custody: a Kubernetes access gateway that keeps the chain of custody.
///
/// kubectl talks to custody instead of the API server. custody authenticates people with OIDC,
/// forwards their requests under their own identity (Kubernetes impersonation), and records
/// every API call and every exec, attach and port-forward session.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    ///
    /// Reads one TOML configuration (see `custody config check`), serves HTTPS for kubectl and
    /// the admin endpoints, and prints `ready https://ADDR` once both listen.
    Serve {
        /// The configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Run kube-sim, a development OIDC issuer and the gateway on loopback, with a kubeconfig
    /// for two people (alice in group dev, bob in group sre who may impersonate).
    ///
    /// Prints `ready https://ADDR` and the commands to try, and runs until Ctrl-C. The
    /// simulated cluster's pods are real processes on this host.
    Demo(demo::Args),
    /// The kubeconfig exec plugin: prints an `ExecCredential` with a fresh token.
    Credential(credential::Args),
    /// Configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Query the audit trail: one event per request, with who asked and who the cluster saw.
    ///
    /// Examples:
    ///   custody audit --data-dir /var/lib/custody --initiator oidc:alice --since 1h
    ///   custody audit --data-dir /var/lib/custody --denied --json
    ///   custody audit --data-dir /var/lib/custody --follow
    Audit(audit::Args),
    /// The sessions a running gateway relays now: list them, follow one, end one.
    ///
    /// Exec, attach and port-forward sessions, through the gateway's control socket,
    /// `<data_dir>/control.sock`, which only the gateway's user (and root) may open: run these
    /// as that user on the gateway's host. See docs/operations.md.
    ///
    /// Examples:
    ///   custody sessions live --data-dir /var/lib/custody
    ///   custody sessions follow --data-dir /var/lib/custody 0b6f3c1e-5d2a-4c8e-9f1a-2b3c4d5e6f70
    ///   custody sessions kill --data-dir /var/lib/custody 0b6f3c1e-5d2a-4c8e-9f1a-2b3c4d5e6f70 \
    ///       --reason "INC-1234: unapproved shell on prod"
    #[command(verbatim_doc_comment)]
    Sessions(sessions::Args),
    /// Print the public key that verifies this gateway's recordings (PEM, or hex with --hex).
    Key {
        /// The data directory (as in the configuration's `data_dir`).
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Print the key as hex instead of PEM.
        #[arg(long)]
        hex: bool,
    },
    /// Rebuild the index from the recording files (the index is derived data).
    Reindex {
        /// The data directory (as in the configuration's `data_dir`).
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check a configuration file and explain what it does; exits non-zero if it is invalid.
    Check {
        /// The configuration file (TOML).
        file: PathBuf,
    },
}

/// Runs the command line; errors are printed with their causes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber_init();
    let result = match cli.command {
        Command::Serve { config } => serve::run(&config),
        Command::Demo(args) => demo::run(&args),
        Command::Credential(args) => credential::run(&args),
        Command::Config(ConfigCommand::Check { file }) => config_check::run(&file),
        Command::Audit(args) => audit::run(&args),
        Command::Sessions(args) => sessions::run(&args),
        Command::Reindex { data_dir } => reindex::run(&data_dir),
        Command::Key { data_dir, hex } => key::run(&data_dir, hex),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("custody: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn tracing_subscriber_init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CUSTODY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
