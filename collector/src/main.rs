//! The `rkdump` binary: a thin shell around [`rkdump::cli`].

fn main() -> std::process::ExitCode {
    rkdump::cli::main()
}
