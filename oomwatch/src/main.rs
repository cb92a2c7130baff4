fn main() -> std::process::ExitCode {
    oomwatch::cli::main()
}
