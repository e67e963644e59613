//! The `clawgate` binary: argument parsing lives in `clawgate::cli`.

fn main() -> std::process::ExitCode {
    clawgate::cli::main()
}
