//! `tern`: Envoy's command line in, a running proxy out.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match tern::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            let first = e.to_string().lines().next().unwrap_or_default().to_string();
            eprintln!("tern: {}", first.trim_start_matches("error: "));
            return ExitCode::from(1);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    match tern::app::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tern: {e:#}");
            ExitCode::from(1)
        }
    }
}
