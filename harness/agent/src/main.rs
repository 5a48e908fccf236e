//! socbench's on-device agent; see `socbench_agent`.
fn main() -> std::process::ExitCode {
    socbench_agent::main()
}
