//! The `spate-node` binary: parses flags, starts the node, prints every shard's address once
//! it serves, and shuts down gracefully on SIGTERM or Ctrl-C (`spate_node::process::run`).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    spate_node::process::run(spate_node::Flags::parse())
}
