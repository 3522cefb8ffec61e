//! `rkdump-lab`: run the crash lab by hand.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use rkdump_lab::{crash, variants};

/// The rkdump crash lab: real Debian kernels crashed in QEMU and captured with rkdump.
#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Crash one variant (or reuse its cached run) and print where its files are.
    Crash {
        /// Variant name (see `variants`).
        variant: String,
    },
    /// List the variants.
    Variants,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Crash { variant } => {
            let variant = variants::by_name(&variant)
                .with_context(|| format!("no variant named {variant:?}"))?;
            let run = crash::crash(variant)?;
            println!("run directory: {}", run.dir.display());
            for (stage, at, detail) in &run.stages {
                println!("  {stage:<15} {at:>7.1} s  {detail}");
            }
        }
        Command::Variants => {
            for v in variants::ALL {
                let mode = if v.long { "long" } else { "default" };
                println!(
                    "{:<20} {:<8} {:?} {} MiB",
                    v.name, mode, v.flavor, v.memory_mib
                );
            }
        }
    }
    Ok(())
}
