//! The `voicechat` binary: parse the command line, set up logging, run, and turn any
//! error into one line on stderr and a non-zero exit.

use std::process::ExitCode;

use clap::Parser;
use voicechat_node::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let args = Cli::parse();
    cli::init_logging();
    match cli::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
