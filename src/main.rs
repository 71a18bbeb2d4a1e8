//! The `custody` binary: the gateway and its command line.

use clap::Parser;

/// custody: a Kubernetes access gateway that keeps the chain of custody.
///
/// kubectl talks to custody instead of the API server. custody authenticates people with OIDC,
/// forwards their requests under their own identity (Kubernetes impersonation), and records every
/// API call and every exec, attach and port-forward session.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {}

fn main() {
    // The subcommands (serve, demo, login, play, ...) arrive with their issues; until then the
    // binary answers --help and --version.
    Cli::parse();
}
