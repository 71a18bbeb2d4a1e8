//! The command line: one subcommand per file under `cli/`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod audit;
mod config_check;
mod credential;
mod demo;
mod download;
mod key;
mod kubeconfig;
mod login;
mod play;
mod policy;
mod reindex;
mod request;
mod serve;
mod sessions;
mod source;
mod verify;

/// custody: a Kubernetes access gateway that keeps the chain of custody.
///
/// kubectl talks to custody instead of the API server. custody authenticates people with OIDC,
/// forwards their requests under their own identity (Kubernetes impersonation), and records
/// every API call and every exec, attach and port-forward session.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// How log lines are written to standard error: `text` for people, `json` for log
    /// collectors (one JSON object per line; lines logged while a request is handled carry its
    /// `request_id`, the id of its audit event). The level is set with `CUSTODY_LOG`
    /// (e.g. `info`, `custody=debug`).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = LogFormat::Text,
        env = "CUSTODY_LOG_FORMAT",
        value_name = "FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Readable lines.
    Text,
    /// One JSON object per line.
    Json,
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
    /// Log in to a gateway's identity provider in a browser and keep the tokens.
    ///
    /// Reads what to log in with from the gateway (`/.well-known/custody`), runs the
    /// authorization code flow with PKCE on a loopback redirect, checks the ID token and keeps
    /// it and the refresh token (mode 0600) in ~/.config/custody/logins. Tokens are never
    /// printed.
    ///
    /// Examples:
    ///   custody login --server https://custody.example.com:8443
    ///   custody login --server https://custody.example.com:8443 --ca-file custody-ca.pem
    ///   custody login --server https://10.0.0.5:8443 --trust-ca-fingerprint 5f:3a:...
    #[allow(
        clippy::doc_markdown,
        reason = "the help shows example command lines verbatim; URLs in them stay bare"
    )]
    #[command(verbatim_doc_comment)]
    Login(login::LoginArgs),
    /// Forget the tokens of a gateway (all gateways without --server), revoking the refresh
    /// token where the provider allows it.
    Logout(login::LogoutArgs),
    /// Who the stored tokens name, until when, and the clusters of each gateway.
    Status(login::StatusArgs),
    /// Write a kubeconfig for a gateway's clusters that logs in with `custody credential`.
    ///
    /// Examples:
    ///   custody kubeconfig --server https://custody.example.com:8443 --merge
    ///   custody kubeconfig --server https://custody.example.com:8443 --cluster prod -o prod.kubeconfig
    #[allow(
        clippy::doc_markdown,
        reason = "the help shows example command lines verbatim; URLs in them stay bare"
    )]
    #[command(verbatim_doc_comment)]
    Kubeconfig(kubeconfig::Args),
    /// The kubeconfig exec plugin: prints an `ExecCredential` with a valid token.
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
    /// Exec, attach and port-forward sessions: the recorded ones, and those running now
    ///
    /// list, show and browse find recorded sessions in a data directory (--data-dir) or ask a
    /// running gateway (--server, with a token). live, follow and kill act on the sessions a
    /// gateway relays now, through its control socket, `<data_dir>/control.sock`, which only
    /// the gateway's user (and root) may open: run these as that user on the gateway's host.
    /// See docs/operations.md.
    ///
    /// Examples:
    ///   custody sessions list --data-dir /var/lib/custody --since 1d --grep "rm -rf"
    ///   custody sessions show --data-dir /var/lib/custody 0b6f3c1e-5d2a-4c8e-9f1a-2b3c4d5e6f70
    ///   custody sessions live --data-dir /var/lib/custody
    ///   custody sessions follow --data-dir /var/lib/custody 0b6f3c1e-5d2a-4c8e-9f1a-2b3c4d5e6f70
    ///   custody sessions kill --data-dir /var/lib/custody 0b6f3c1e-5d2a-4c8e-9f1a-2b3c4d5e6f70 \
    ///       --reason "INC-1234: unapproved shell on prod"
    #[command(verbatim_doc_comment)]
    Sessions(sessions::Args),
    /// Download a recorded session: the signed recording, or asciicast or text made from it
    ///
    /// From a data directory (--data-dir) or a running gateway (--server, as the token's
    /// owner). The file appears whole or not at all (written beside FILE, then renamed); an
    /// existing FILE is kept unless --force. Prints the size and the SHA-256.
    ///
    /// Examples:
    ///   custody download --data-dir /var/lib/custody ID -o evidence.cast.zst
    ///   custody download --server https://custody.example:8443 ID --format cast -o s.cast
    ///   custody download --data-dir /var/lib/custody ID --format txt -o session.txt
    #[allow(
        clippy::doc_markdown,
        reason = "the help shows example command lines verbatim; URLs in them stay bare"
    )]
    #[command(verbatim_doc_comment)]
    Download(download::Args),
    /// Print the public key that verifies this gateway's recordings (PEM, or hex with --hex),
    /// or make a new signing key for the replicas of a cluster (--generate).
    ///
    /// Examples:
    ///   custody key --data-dir /var/lib/custody > gateway.pub.pem
    ///   custody key --generate signing.key   # then give it to every replica (`[cluster] signing_key_file`)
    #[command(verbatim_doc_comment)]
    Key {
        /// The data directory (as in the configuration's `data_dir`).
        #[arg(long, value_name = "DIR", required_unless_present = "generate")]
        data_dir: Option<PathBuf>,
        /// Write a new signing key to FILE (owner-only; an existing file is never replaced)
        /// and print its public key.
        #[arg(long, value_name = "FILE", conflicts_with = "data_dir")]
        generate: Option<PathBuf>,
        /// Print the key as hex instead of PEM.
        #[arg(long)]
        hex: bool,
    },
    /// Play a recorded session in the terminal: its screen as it was, with seeking, search and
    /// the typed commands (keys: `?` in the player, or docs/replay.md).
    ///
    /// Examples:
    ///   custody play /var/lib/custody/recordings/ID.cast.zst
    ///   custody play --data-dir /var/lib/custody ID --at 12:34 --speed 4
    ///   custody play --data-dir /var/lib/custody ID --follow
    ///   custody play --server URL --token-file FILE ID
    #[command(verbatim_doc_comment)]
    Play(play::Args),
    /// Check a recording offline: its hash chain and signatures, with the verdict as the exit
    /// code (0 intact, 2 intact but interrupted, 1 altered or signed by another key, 3 not a
    /// readable recording).
    ///
    /// Without --key the file is checked against the key it names (integrity, not authorship);
    /// with --key (PEM or hex, as `custody key` prints it) it must be signed by that key.
    ///
    /// Examples:
    ///   custody verify 0b6f3c1e-5d2a-4c8e-9f1a-2b3c4d5e6f70.cast.zst
    ///   custody verify evidence.cast.zst --key gateway.pub.pem
    #[command(verbatim_doc_comment)]
    Verify(verify::Args),
    /// Explain what the gateway's policy decides for a person and a request, without sending
    /// anything anywhere.
    #[command(subcommand)]
    Policy(policy::Command),
    /// Ask for, list, approve, deny and revoke just-in-time access.
    Request(request::Args),
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
    tracing_subscriber_init(cli.log_format);
    let result = match cli.command {
        Command::Serve { config } => serve::run(&config),
        Command::Demo(args) => demo::run(&args),
        Command::Credential(args) => credential::run(&args),
        Command::Login(args) => login::login(&args),
        Command::Logout(args) => login::logout(&args),
        Command::Status(args) => login::status(&args),
        Command::Kubeconfig(args) => kubeconfig::run(&args),
        Command::Config(ConfigCommand::Check { file }) => config_check::run(&file),
        Command::Audit(args) => audit::run(&args),
        Command::Sessions(args) => sessions::run(&args),
        Command::Download(args) => download::run(&args),
        Command::Play(args) => play::run(&args),
        Command::Verify(args) => verify::run(&args),
        Command::Policy(command) => policy::run(&command),
        Command::Request(args) => request::run(&args),
        Command::Reindex { data_dir } => reindex::run(&data_dir),
        Command::Key {
            data_dir,
            generate,
            hex,
        } => match (data_dir, generate) {
            (_, Some(file)) => key::generate(&file, hex),
            (Some(data_dir), None) => key::run(&data_dir, hex),
            (None, None) => Err(anyhow::anyhow!("--data-dir DIR or --generate FILE")),
        },
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("custody: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn tracing_subscriber_init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CUSTODY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        // The event's own fields at the top level, the enclosing spans' fields (the request
        // id among them) in `spans`: a collector joins a line to its audit event by
        // `spans[].request_id`.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .try_init(),
    };
}
