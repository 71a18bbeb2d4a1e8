//! `custody config check FILE`: validate a configuration and explain it.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use custody::config::Config;

/// Prints what the configuration does, or every problem with it.
pub fn run(file: &Path) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    match Config::parse(&text, &|k| std::env::var(k).ok()) {
        Ok(config) => {
            println!("{}: valid", file.display());
            print!("{}", config.explain());
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            eprintln!("{}: invalid configuration:", file.display());
            for problem in &err.problems {
                eprintln!("  - {problem}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}
