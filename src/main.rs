fn main() -> std::process::ExitCode {
    foreman::cli::main()
}
